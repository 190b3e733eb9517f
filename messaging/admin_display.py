"""Presentation helpers for the admin: what an error code means, and stored payloads and
webhook bodies shown readably."""

import json
from urllib.parse import parse_qsl

from messaging import providers

# Codes Herald itself writes (services, sender, sandbox). Provider codes are explained by the
# provider module's ERROR_MEANINGS (code -> text) where it has one, else by the error text the
# provider sent with the report.
HERALD_ERROR_MEANINGS = {
    "cancelled": "Cancelled by staff before it was sent.",
    "opted-out": "The recipient had opted out when the message was due.",
    "provider-not-enabled": "The message's provider is not enabled in this deployment.",
    "lease-expired": "The sender stopped mid-send; it may or may not have reached the provider.",
    "internal-error": "The provider module raised an unexpected error; not retried.",
    "timeout": "No answer from the provider after the request was sent (ambiguous).",
    "connection": "The connection dropped after the request was sent (ambiguous).",
    "connect": "The provider could not be reached; nothing was sent.",
    "connect-timeout": "Connecting to the provider timed out; nothing was sent.",
    "throttled": "The provider asked us to slow down; retried later.",
    "absent-subscriber": "The handset was off or out of coverage until the message expired.",
    "ttl-expired": "The message expired before it could be delivered.",
    "invalid-destination": "The provider refused the destination number.",
}


def error_meaning(provider: str, code: str, text: str = "") -> str:
    """A human explanation of an error code: the provider's own text when it sent one, else the
    provider module's table, else Herald's table."""
    if not code and not text:
        return ""
    if text:
        return text
    try:
        table = getattr(providers.get_provider(provider), "ERROR_MEANINGS", None) or {}
    except Exception:  # a provider no longer enabled, or misconfigured: fall back quietly
        table = {}
    return table.get(str(code)) or HERALD_ERROR_MEANINGS.get(str(code), "")


def pretty_json(value) -> str:
    if value is None or value == "":
        return ""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def pretty_body(body: bytes, content_type: str = "") -> str:
    """A stored webhook body for reading: JSON indented, a form body one field per line, other
    text as it is, binary as an escaped string. The stored bytes themselves are never changed
    (signatures are computed over them)."""
    raw = bytes(body or b"")
    if not raw:
        return ""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return repr(raw)
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind.endswith("json") or text.lstrip().startswith(("{", "[")):
        try:
            return pretty_json(json.loads(text))
        except ValueError:
            return text
    if kind == "application/x-www-form-urlencoded":
        pairs = parse_qsl(text, keep_blank_values=True)
        return "\n".join(f"{name} = {value}" for name, value in pairs)
    return text
