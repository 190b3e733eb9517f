"""Structured logs: one JSON line per request, send and receipt. Message bodies, query strings
and secrets never reach a log line."""

import logging
import re
import time

from django.conf import settings

log = logging.getLogger("herald.request")

_SECRET_PATTERN = re.compile(
    r"(?i)(api[_-]?secret|api[_-]?key|auth[_-]?token|password|secret|signature|sig|token)"
    r"(['\"]?\s*[:=]\s*['\"]?)([^\s&'\",]+)"
)
_BEARER = re.compile(r"(?i)(bearer|basic|token|app)\s+[A-Za-z0-9._~+/=-]{8,}")


def redact(text: str) -> str:
    text = _SECRET_PATTERN.sub(lambda m: m.group(1) + m.group(2) + "[redacted]", text)
    return _BEARER.sub(lambda m: m.group(1) + " [redacted]", text)


class RedactSecretsFilter(logging.Filter):
    """Last line of defence: mask anything shaped like a credential in the rendered message,
    and any configured secret value that slipped into one."""

    def filter(self, record):
        message = record.getMessage()
        cleaned = redact(message)
        for value in _configured_secrets():
            cleaned = cleaned.replace(value, "[redacted]")
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


def _configured_secrets():
    try:
        values = [settings.SECRET_KEY]
        for config in settings.SMS_PROVIDERS.values():
            for option, value in config.get("OPTIONS", {}).items():
                if any(w in option for w in ("SECRET", "TOKEN", "KEY", "PASSWORD")) and value:
                    values.extend(v for v in str(value).split(",") if len(v) >= 6)
        return values
    except Exception:
        return []


class RequestLogMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        log.info(
            "request",
            extra={
                "method": request.method,
                "path": request.path,  # never the query string: tokens and numbers live there
                "status": response.status_code,
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                "remote_addr": request.META.get("REMOTE_ADDR"),
                # Set by the API's key authentication: the client and the key's prefix only.
                "client": getattr(request, "herald_client", None),
                "api_key": getattr(request, "herald_api_key", None),
            },
        )
        return response
