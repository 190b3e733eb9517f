"""API rate limits with django-ratelimit, counted in the shared cache (Redis in production, so
every web process counts together):

  a client's reads (GET, HEAD, OPTIONS)  "api"       Client.read_rate_limit or API_RATE_LIMIT
  a client's sends (POST)                "api-send"  Client.send_rate_limit or API_SEND_RATE_LIMIT
  requests without a valid key           "api-anon"  API_RATE_LIMIT, per IP

Counted per client, whichever of its keys is used. Over the limit: 429 with Retry-After.
Every answer carries RateLimit-Limit, -Remaining and -Reset (add_headers).
"""

from django.conf import settings
from django_ratelimit.core import get_usage
from rest_framework.exceptions import AuthenticationFailed, Throttled

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def _client_key(group, request) -> str:
    return f"client:{request.auth.client_id}"


def _ip_key(group, request) -> str:
    return "ip:" + request.META.get("REMOTE_ADDR", "")


def limits_for(client, method: str) -> tuple[str, str]:
    """(group, rate) that a request of `client` with `method` counts against."""
    if method in SAFE_METHODS:
        return "api", client.read_rate_limit or settings.API_RATE_LIMIT
    return "api-send", client.send_rate_limit or settings.API_SEND_RATE_LIMIT


def enforce(request) -> None:
    """Authenticate, then count the request against its client's limit, or its IP's when it has
    no valid key (so a flood of missing or guessed keys is limited too). Raises Throttled (429
    with Retry-After), or the AuthenticationFailed of a bad key once it has been counted."""
    try:
        api_key = request.auth  # runs the authentication classes once; DRF caches the result
    except AuthenticationFailed:
        _count(request, "api-anon", _ip_key, settings.API_RATE_LIMIT)
        raise
    if api_key is None:
        _count(request, "api-anon", _ip_key, settings.API_RATE_LIMIT)
        return
    group, rate = limits_for(api_key.client, request.method)
    _count(request, group, _client_key, rate)


def _count(request, group, key, rate) -> None:
    if not settings.RATELIMIT_ENABLE:
        return
    usage = get_usage(request, group=group, key=key, rate=rate, increment=True)
    request.rate_limit_usage = usage  # for the headers, on this answer whatever it is
    if usage and usage["should_limit"]:
        raise Throttled(wait=max(1, int(usage["time_left"])))


def add_headers(response, usage) -> None:
    """RateLimit-Limit, -Remaining and -Reset (draft-ietf-httpapi-ratelimit-headers) of the
    limit this request counted against."""
    if not usage:
        return
    response["RateLimit-Limit"] = str(usage["limit"])
    response["RateLimit-Remaining"] = str(max(0, usage["limit"] - usage["count"]))
    response["RateLimit-Reset"] = str(max(0, int(usage["time_left"])))
