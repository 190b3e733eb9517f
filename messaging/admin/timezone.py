"""The staff user's time zone for the admin: their browser's, which static/herald/admin.js keeps
in the `herald_tz` cookie, or UTC (settings.TIME_ZONE) until it has. Every admin page says which
zone its times are in (display.zone_name)."""

import zoneinfo

from django.utils import timezone

COOKIE = "herald_tz"


def zone_from(request):
    name = request.COOKIES.get(COOKIE, "")
    if not name or len(name) > 64:
        return None
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None  # a made-up or malformed name: keep the default


class StaffTimeZoneMiddleware:
    """Activates the zone for admin requests only: the API and webhooks always speak UTC."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        zone = zone_from(request) if request.path.startswith("/admin/") else None
        if zone is None:
            return self.get_response(request)
        timezone.activate(zone)
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()
