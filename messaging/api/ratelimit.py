"""API rate limits with django-ratelimit: per token, or per IP for anonymous callers."""

import hashlib

from django.conf import settings
from django_ratelimit.core import get_usage
from rest_framework.exceptions import Throttled


def client_key(group, request) -> str:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if header.lower().startswith("token "):
        # The token itself never reaches the cache key, only its hash.
        return "token:" + hashlib.sha256(header[6:].strip().encode()).hexdigest()[:32]
    session_user = getattr(getattr(request, "_request", request), "user", None)
    if session_user is not None and session_user.is_authenticated:  # admin session, no token
        return f"user:{session_user.pk}"
    return "ip:" + request.META.get("REMOTE_ADDR", "")


def enforce(request, group: str, rate: str):
    """Raise Throttled (429 with Retry-After) when the caller is over `rate`."""
    if not settings.RATELIMIT_ENABLE:
        return
    usage = get_usage(request, group=group, key=client_key, rate=rate, increment=True)
    if usage and usage["should_limit"]:
        raise Throttled(wait=max(1, int(usage["time_left"])))
