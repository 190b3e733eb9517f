"""The opt-out list: STOP-style keywords add a number, START-style keywords remove it."""

import re

from django.db import transaction

from messaging.models import OptOut, OptOutChange
from messaging.services import callbacks

STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
START_WORDS = frozenset({"START", "UNSTOP"})


def keyword_of(text: str) -> str:
    """The whole message as one upper-case word with spaces removed ("  Stop " -> "STOP")."""
    return re.sub(r"\s+", "", text or "").upper()


def opt_out(number: str, *, keyword="", reason="", source_message=None, actor=None) -> bool:
    with transaction.atomic():
        _, created = OptOut.objects.get_or_create(
            phone_number=number,
            defaults={"keyword": keyword, "source_message": source_message},
        )
        if created:
            change = OptOutChange.objects.create(
                phone_number=number,
                action=OptOutChange.Action.OPT_OUT,
                keyword=keyword,
                reason=reason,
                source_message=source_message,
                actor=actor,
            )
            callbacks.emit_optout_change(change)
    return created


def opt_in(number: str, *, keyword="", reason="", source_message=None, actor=None) -> bool:
    with transaction.atomic():
        deleted, _ = OptOut.objects.filter(phone_number=number).delete()
        if deleted:
            change = OptOutChange.objects.create(
                phone_number=number,
                action=OptOutChange.Action.OPT_IN,
                keyword=keyword,
                reason=reason,
                source_message=source_message,
                actor=actor,
            )
            callbacks.emit_optout_change(change)
    return bool(deleted)


def apply_keyword(number: str, text: str, source_message=None) -> str:
    """Act on an inbound message's keyword. Returns "opt_out", "opt_in" or ""."""
    word = keyword_of(text)
    if word in STOP_WORDS:
        opt_out(number, keyword=word, reason="inbound keyword", source_message=source_message)
        return "opt_out"
    if word in START_WORDS:
        opt_in(number, keyword=word, reason="inbound keyword", source_message=source_message)
        return "opt_in"
    return ""


STAFF_REASON = "staff"  # the prefix of the reason recorded for a staff change


def _staff_reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise ValueError("a staff opt-out change needs a reason")
    return f"{STAFF_REASON}: {reason}"[:255]


def staff_opt_out(number: str, *, actor, reason: str) -> bool:
    """Staff put a number on the list (the person asked another way). The reason is required and
    kept in the number's history with the user. False when it was on the list already."""
    return opt_out(number, reason=_staff_reason(reason), actor=actor)


def staff_opt_in(number: str, *, actor, reason: str) -> bool:
    """Staff take a number off the list (e.g. written consent). Reason required, kept with the
    user. False when it was not on the list."""
    return opt_in(number, reason=_staff_reason(reason), actor=actor)
