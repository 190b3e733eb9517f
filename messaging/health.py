"""Operational endpoints: /healthz (liveness), /readyz (readiness), /metrics (Prometheus).

/healthz answers as long as the process serves requests, and checks nothing else: a liveness
probe that looked at the database would restart every web process during a database outage.
/readyz names each dependency that is not working: the database, the cache (rate-limit
counters live there), and a sender that heartbeated within READINESS_HEARTBEAT_SECONDS.
"""

import hmac
import ipaddress
import uuid
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import Http404, HttpResponse, JsonResponse
from django.utils import timezone
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)

from messaging.metrics import DatabaseCollector


def healthz(request):
    """The process is up."""
    return JsonResponse({"status": "ok"})


def readyz(request):
    """200 when every check passes; else 503 with `failing` naming the checks that did not."""
    results = {}
    for name, check in CHECKS.items():
        try:
            problem = check()
        except Exception as exc:  # the check itself could not run: that is its answer
            problem = type(exc).__name__
        if problem is not None:
            results[name] = problem
        else:
            results[name] = "ok"
    failing = [name for name, result in results.items() if result != "ok"]
    if failing:
        return JsonResponse({"status": "unavailable", "failing": failing, **results}, status=503)
    return JsonResponse({"status": "ok", **results})


def _database():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def _cache():
    """A round trip through the cache the rate limits use (Redis in production)."""
    key, value = f"herald:readyz:{uuid.uuid4().hex}", "1"
    cache.set(key, value, timeout=10)
    found = cache.get(key)
    cache.delete(key)
    return None if found == value else "the cache did not return what was written"


def _worker():
    limit = settings.READINESS_HEARTBEAT_SECONDS
    if limit <= 0:  # switched off (a web-only deployment that monitors workers elsewhere)
        return None
    from messaging.services.heartbeat import latest

    last = latest("sender")
    if last is None:
        return "no sender has recorded a heartbeat"
    age = timezone.now() - last
    if age > timedelta(seconds=limit):
        return f"no sender heartbeat for {int(age.total_seconds())} s (limit {limit} s)"
    return None


CHECKS = {"database": _database, "cache": _cache, "worker": _worker}


# --- /metrics ----------------------------------------------------------------------------------


def metrics_view(request):
    """Prometheus text format. 404 without METRICS_TOKEN (the endpoint does not exist), 403
    from an address outside METRICS_ALLOWED_IPS, 401 without the right bearer token."""
    token = settings.METRICS_TOKEN
    if not token:
        raise Http404("metrics are off: set METRICS_TOKEN")
    if not _address_allowed(request.META.get("REMOTE_ADDR", "")):
        return HttpResponse("forbidden\n", status=403, content_type="text/plain")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    valid = hmac.compare_digest(given.strip().encode(), token.encode())
    if scheme.lower() != "bearer" or not valid:
        response = HttpResponse("unauthorized\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST)


def _registry():
    """This scrape's registry: the counters and histograms of every process (multiprocess mode)
    or of this one, plus the database gauges computed now."""
    registry = CollectorRegistry()
    if settings.PROMETHEUS_MULTIPROC_DIR:
        multiprocess.MultiProcessCollector(registry, path=settings.PROMETHEUS_MULTIPROC_DIR)
    else:
        registry.register(_Default())
    registry.register(DatabaseCollector())
    return registry


class _Default:
    """The process-local default registry (counters, histograms, process and GC metrics)."""

    def collect(self):
        return REGISTRY.collect()


def _address_allowed(address: str) -> bool:
    allowed = settings.METRICS_ALLOWED_IPS
    if not allowed:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(net, strict=False) for net in allowed)
