"""Presentation helpers for the admin: status badges, times, what an error code means, what a
timeline event did, and stored payloads and webhook bodies shown readably."""

import json
import re
from datetime import UTC
from urllib.parse import parse_qsl

from django.utils import timezone
from django.utils.html import format_html

from messaging import providers

# --- statuses ------------------------------------------------------------------------------------


def status_badge(status: str):
    """The coloured status pill; its colour comes from admin.css (no inline style, for CSP)."""
    return format_html('<span class="herald-status herald-status-{}">{}</span>', status, status)


# --- times ---------------------------------------------------------------------------------------
# Every time in the admin reads the same way: date, time to the second, and the zone's name. The
# zone is the staff user's (their browser's, see messaging/admin/timezone.py) or UTC.

TIME_FORMAT = "%Y-%m-%d %H:%M:%S %Z"


def when_text(value) -> str:
    if value is None:
        return "-"
    return timezone.localtime(value).strftime(TIME_FORMAT)


def when(value, *, two_lines=False):
    """A <time> element: the readable local time, with the exact instant (UTC, to the
    microsecond) as its machine-readable value and tooltip. `two_lines` puts the date above the
    time, for narrow list columns."""
    if value is None:
        return "-"
    exact = value.astimezone(UTC).isoformat()
    text = when_text(value)
    if two_lines:
        day, _, rest = text.partition(" ")
        return format_html(
            '<time datetime="{}" title="{}">{}<br>{}</time>', exact, exact, day, rest
        )
    return format_html('<time datetime="{}" title="{}">{}</time>', exact, exact, text)


def zone_name() -> str:
    return timezone.get_current_timezone_name()


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


# --- what a timeline event did -----------------------------------------------------------------

# The receipt path writes "part 2/3 delivered; <decision>" when a part's receipt moved that part.
_PART_NOTE = re.compile(r"^part (\d+)/(\d+) (\w+); ")

# kind -> the legend's words for it
EVENT_KINDS = {
    "applied": "Applied: moved the message to this status.",
    "part": "Applied to one part of a multipart message; the message's status follows its parts.",
    "action": "A staff action (send, resend, cancel, replay): what a person did, not a report.",
    "duplicate": "Duplicate: a report of the status the message already had.",
    "ignored": "Ignored: a late or out-of-order report the state machine did not apply.",
}


def describe_event(event) -> tuple[str, str]:
    """(kind, label) for one StatusEvent, from what is stored on it."""
    note = event.note or ""
    if event.source == "admin":
        return "action", "staff action"
    part = _PART_NOTE.match(note)
    if part and not event.applied:
        return "part", f"applied to part {part.group(1)}/{part.group(2)}"
    if event.applied:
        if part:
            return "applied", f"applied (part {part.group(1)}/{part.group(2)})"
        return "applied", "applied"
    if "no change: already" in note:
        return "duplicate", "duplicate"
    return "ignored", "ignored"
