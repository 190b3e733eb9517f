"""The staff admin, one package (issue 13):

- messages.py   the message changelist, message page, Send SMS, resend / cancel pages, CSV
                export, the live status endpoint and the dashboard: MessageAdmin and its methods
- evidence.py   status events and stored webhook requests (read-only evidence, replay)
- optouts.py    the opt-out list, its history, add / remove by staff
- actions.py    the confirmation flow resend and cancel share, and webhook replay
- dashboard.py  the dashboard's figures turned into what its page and charts draw
- filters.py    changelist filters that stay cheap at a million rows
- pagination.py a paginator that never runs an unbounded COUNT(*)
- forms.py      the admin's forms
- display.py    presentation: status badges, times, error meanings, payloads, timeline wording
- export.py     the streamed, formula-escaped CSV
- timezone.py   the staff user's time zone (middleware; the `herald_tz` cookie admin.js sets)
- messaging/admin_routing.py (issue 16) routes, the routing page and provider health events

Messages, events and webhook requests are never edited here: every change goes through a service
(messaging.services) with the acting user, so it is recorded in the message's timeline.
Importing the modules registers their ModelAdmins (Django imports `messaging.admin`).
"""

from messaging import admin_callbacks, admin_clients, admin_routing  # noqa: E402, F401
from messaging.admin import evidence, messages, optouts  # noqa: F401 - registers the admins
