"""Structured logs: one JSON line per request, send and receipt. Message bodies, query strings
and secrets never reach a log line."""

import base64
import json
import logging
import re
import time
from urllib.parse import quote, quote_plus

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from pythonjsonlogger.json import JsonFormatter

log = logging.getLogger("herald.request")

REDACTED = "[redacted]"

# key=value and "key": "value" shapes whose value is a credential.
_SECRET_PATTERN = re.compile(
    r"(?i)(api[_-]?secret|api[_-]?key|auth[_-]?token|access[_-]?token|password|passwd|secret|"
    r"signature|sig|token|private[_-]?key)"
    r"(['\"]?\s*[:=]\s*['\"]?)([^\s&'\",;]+)"
)
# Authorization header values.
_BEARER = re.compile(r"(?i)(bearer|basic|token|app)\s+[A-Za-z0-9._~+/=-]{8,}")
# Herald API keys (messaging/services/clients.py): everything after the visible prefix (the kind
# and 8 characters, what ApiKey.prefix stores and logs show); a bare prefix is left alone.
_API_KEY = re.compile(r"\b(hk_(?:live|test)_[A-Za-z0-9_\-]{0,8}+)[A-Za-z0-9_\-]+")
_KEY_PREFIX = re.compile(r"hk_(?:live|test)_[A-Za-z0-9_\-]{0,8}")
# Credentials in a URL: https://user:password@host
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]+:)[^@\s/]+@")
# Field names whose whole value is a secret, whatever it looks like.
_SECRET_FIELD = re.compile(
    r"(?i)(secret|password|passwd|token|api[_-]?key|authorization|signature|private[_-]?key)"
)
# Shorter configured values are not masked: they would mask ordinary words.
MIN_SECRET_LENGTH = 6
_PEM_ARMOR = re.compile(r"-----(BEGIN|END) [A-Z ]+-----")  # a PEM key's public framing lines


def redact(text: str, secrets: tuple | None = None) -> str:
    """Mask whatever is shaped like a credential, and every configured secret, in `text`."""
    text = _SECRET_PATTERN.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
    text = _BEARER.sub(lambda m: m.group(1) + " " + REDACTED, text)
    text = _API_KEY.sub(lambda m: m.group(1) + REDACTED, text)
    text = _URL_USERINFO.sub(lambda m: m.group(1) + REDACTED + "@", text)
    for value in configured_secrets() if secrets is None else secrets:
        if value in text:
            text = text.replace(value, REDACTED)
    return text


def redact_value(value, secrets: tuple | None = None, depth=0):
    """`value` with every string in it redacted: dicts (a secret-named key's whole value too),
    lists, tuples, and any other object by its str() when that holds a secret."""
    if secrets is None:
        secrets = configured_secrets()
    if depth > 20:
        return REDACTED  # nothing legitimate is nested this deep in a log line
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, dict):
        return {
            redact(str(k), secrets): REDACTED
            if _SECRET_FIELD.search(str(k)) and v not in (None, "") and not _is_prefix(v)
            else redact_value(v, secrets, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(v, secrets, depth + 1) for v in value]
    if isinstance(value, bytes):
        return redact(value.decode("utf-8", "replace"), secrets)
    text = str(value)
    cleaned = redact(text, secrets)
    return cleaned if cleaned != text else value


_secrets_cache: list = []  # [tuple of values]; emptied when a setting changes (tests)


def _is_prefix(value) -> bool:
    """An API key's visible prefix (ApiKey.prefix) may be logged, even in a field named api_key."""
    return isinstance(value, str) and _KEY_PREFIX.fullmatch(value) is not None


def configured_secrets() -> tuple:
    """Every secret value in the settings, with the encodings it may be logged in. Computed
    once (settings do not change in a running process) and again after a setting_changed."""
    if _secrets_cache:
        return _secrets_cache[0]
    try:
        values = _derived(tuple(_raw_secrets()))
    except Exception:  # never let redaction break logging (settings not ready yet)
        return ()
    _secrets_cache[:] = [values]
    return values


@receiver(setting_changed)
def _forget_secrets(**kwargs):
    _secrets_cache.clear()


def _raw_secrets():
    yield settings.SECRET_KEY
    yield getattr(settings, "METRICS_TOKEN", "")
    for config in settings.SMS_PROVIDERS.values():
        options = config.get("OPTIONS", {})
        plain = [str(v) for k, v in options.items() if v and not _is_secret_option(k)]
        for option, value in options.items():
            if not value or not _is_secret_option(option):
                continue
            for secret in str(value).split(","):  # rotation lists
                secret = secret.strip()
                yield secret
                yield from (line.strip() for line in secret.splitlines())  # PEM keys
                # HTTP Basic credentials (Infobip's webhook, Twilio/Vonage API auth).
                for user in plain:
                    yield base64.b64encode(f"{user}:{secret}".encode()).decode()


def _is_secret_option(name: str) -> bool:
    return any(word in name for word in ("SECRET", "TOKEN", "KEY", "PASSWORD"))


def _derived(raw: tuple) -> tuple:
    values = set()
    for value in raw:
        if not value or len(value) < MIN_SECRET_LENGTH or _PEM_ARMOR.fullmatch(value):
            continue
        values.add(value)
        values.add(quote(value, safe=""))
        values.add(quote_plus(value))
        values.add(json.dumps(value)[1:-1])
    # Longest first, so a secret containing another is masked whole.
    return tuple(sorted(values, key=len, reverse=True))


class RedactSecretsFilter(logging.Filter):
    """Masks the rendered message for any handler; the JSON formatter (below) also covers
    extra fields, exceptions and stacks."""

    def filter(self, record):
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


class RedactingJsonFormatter(JsonFormatter):
    """The JSON log formatter: every field of every line is redacted after it is assembled
    (message, `extra` fields however nested, exc_info tracebacks with the exception's text,
    stack_info), and the serialised line once more for configured secret values."""

    def process_log_record(self, log_data):
        return redact_value(super().process_log_record(log_data))

    def serialize_log_record(self, log_data) -> str:
        line = super().serialize_log_record(log_data)
        for value in configured_secrets():
            line = line.replace(value, REDACTED)
        return line


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
