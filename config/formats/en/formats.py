"""Date and time formats for every Django-rendered time (the admin's own pages included, e.g.
its history page and any readonly date field): ISO-like, to the second, with the zone, the same
as Herald's pages (messaging/admin/display.py) instead of the locale's "Dec. 3, 2026, 8:17 p.m.".
"""

DATE_FORMAT = "Y-m-d"
TIME_FORMAT = "H:i:s"
DATETIME_FORMAT = "Y-m-d H:i:s T"
SHORT_DATE_FORMAT = "Y-m-d"
SHORT_DATETIME_FORMAT = "Y-m-d H:i:s T"
