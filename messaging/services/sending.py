"""One send attempt and its outcome: claim, send, then sent / retry / failed / unknown.

Nothing here resends blindly: a request that may have reached the provider becomes `unknown`
and is left to receipts and reconciliation.
"""

import logging
import random
import traceback
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef
from django.utils import timezone

from messaging import providers
from messaging.bulk import bulk_set
from messaging.models import Message, MessagePart, OptOut, Source, StatusEvent
from messaging.providers.base import OutboundSms, SendError, SendResult
from messaging.services import callbacks, messages, optouts, pacing, provider_health, routing
from messaging.services.receipts import match_unmatched, match_unmatched_many
from messaging.status import Status, decide, roll_up, sender_may

log = logging.getLogger("herald.sender")


def claim_due(batch_size: int, owner: str, now=None) -> list:
    """Mark up to `batch_size` due messages `sending` with a lease owned by `owner`.

    PostgreSQL: FOR UPDATE SKIP LOCKED, so concurrent senders never wait for or share a row.
    SQLite: the transaction takes the database write lock at BEGIN (IMMEDIATE), so claims are
    serialised; the conditional UPDATE is the guard either way.
    """
    now = now or timezone.now()
    lease = now + timedelta(seconds=settings.SENDER_LEASE_SECONDS)
    with transaction.atomic():
        due = Message.objects.filter(
            status=Status.QUEUED, direction="outbound", next_attempt_at__lte=now
        ).order_by("next_attempt_at")
        if connection.vendor == "postgresql":
            due = due.select_for_update(skip_locked=True)
        ids = list(due.values_list("id", flat=True)[:batch_size])
        if not ids:
            return []
        Message.objects.filter(id__in=ids, status=Status.QUEUED).update(
            status=Status.SENDING,
            lease_owner=owner,
            lease_until=lease,
            attempts=F("attempts") + 1,
            updated_at=now,
        )
        claimed = list(
            Message.objects.filter(id__in=ids, status=Status.SENDING, lease_owner=owner)
            .annotate(
                recipient_opted_out=Exists(
                    OptOut.objects.filter(phone_number=OuterRef("to_number"))
                )
            )
            .order_by("next_attempt_at")
        )
        routing.route_claimed(claimed)  # off an open circuit; half-open probes
        StatusEvent.objects.bulk_create(
            StatusEvent(
                message=m,
                status=Status.SENDING,
                source=Source.SENDER,
                note=f"attempt {m.attempts} via {m.provider}",
            )
            for m in claimed
        )
        callbacks.emit_status_changes(claimed)
    return claimed


def recover_expired_leases(now=None) -> int:
    """A sender that died mid-send leaves `sending` rows whose lease ran out. The request may or
    may not have reached the provider, so they become `unknown`, never queued again."""
    now = now or timezone.now()
    stale = list(
        Message.objects.filter(status=Status.SENDING, lease_until__lt=now).values_list(
            "id", flat=True
        )[:500]
    )
    recovered = 0
    for message_id in stale:
        with transaction.atomic():
            message = Message.objects.select_for_update().get(pk=message_id)
            if message.status != Status.SENDING or message.lease_until >= now:
                continue
            _finish(
                message,
                Status.UNKNOWN,
                code="lease-expired",
                text="The sender stopped during the send; it may or may not have reached "
                "the provider.",
            )
            recovered += 1
        match_unmatched(message)
    return recovered


@dataclass
class Accepted:
    """A send the provider accepted, not recorded yet: `record_accepted` writes it (the sender
    records those of many threads in one transaction)."""

    message: Message
    result: SendResult
    # When the provider accepted it, measured by the thread that sent it (Message.sent_at):
    # recording can happen later, and a receipt can be applied before it is recorded.
    accepted_at: datetime = field(default_factory=timezone.now)


def attempt(message: Message, session, owner: str) -> "str | Accepted":
    """Make one attempt for a claimed message. A refusal, an error or an ambiguous send is
    recorded here and its new status returned; an accepted send comes back as `Accepted`."""
    try:
        provider = providers.get_provider(message.provider)
    except providers.UnknownProvider:
        return _finish_locked(
            message, owner, Status.REJECTED, code="provider-not-enabled",
            text=f"Provider '{message.provider}' is not enabled.",
        )  # fmt: skip
    if _opted_out(message):
        return _finish_locked(
            message, owner, Status.REJECTED, code="opted-out",
            text="The recipient has opted out.",
        )  # fmt: skip
    sms = OutboundSms(
        message_id=str(message.pk),
        to=message.to_number,
        sender=message.from_number or provider.option("FROM"),
        body=message.body,
        encoding=message.encoding,
        segments=message.segments,
        callback_url=provider.webhook_url("status"),
        attempt=message.attempts,
    )
    try:
        result = provider.send(sms, session)
    except SendError as exc:
        provider_health.note_error(message.provider, exc)
        return _record_error(message, owner, exc)
    except Exception as exc:  # a bug in a provider module: we cannot know whether it sent
        log.exception("provider raised", extra={"message_id": str(message.pk)})
        return _finish_locked(
            message, owner, Status.UNKNOWN, code="internal-error",
            text=f"{type(exc).__name__} during send; not retried.\n"
            + traceback.format_exc()[-2000:],
        )  # fmt: skip
    provider_health.note(message.provider, "ok")
    return Accepted(message, result, timezone.now())


def _opted_out(message: Message) -> bool:
    # claim_due asks once for its whole batch (one query instead of one per message); the answer
    # is then at most one batch's sending time old, as a check just before the request would be
    # a request's time old.
    known = getattr(message, "recipient_opted_out", None)
    if known is not None:
        return known
    return OptOut.objects.filter(phone_number=message.to_number).exists()


# What recording a send changes on the message row.
_SENT_FIELDS = ["provider_message_id", "segments", "price", "currency", "sent_at", "status",
                "error_code", "error_text", "completed_at", "lease_owner", "lease_until",
                "updated_at"]  # fmt: skip


def record_accepted(accepted: list) -> dict:
    """Record accepted sends in one transaction; returns {message id: status}.

    Each message is decided as one send would be on its own: `sent` unless a receipt got there
    first (then the event is kept, not applied). The rows are locked in primary-key order, as
    the applier locks them, so the two cannot deadlock; the parts, events and row updates are
    written in bulk: a handful of queries for the batch instead of nine per message.
    """
    if not accepted:
        return {}
    with transaction.atomic():
        locked = {
            m.pk: m
            for m in Message.objects.select_for_update()
            .filter(pk__in=[a.message.pk for a in accepted])
            .order_by("pk")
        }
        owner_of = _part_owners(locked, accepted)
        now = timezone.now()
        parts, events, partial, changes = [], [], [], []
        for a in accepted:
            message, result = locked[a.message.pk], a.result
            ids = []
            for pid in dict.fromkeys(str(i) for i in result.provider_message_ids if i):
                owner = owner_of.setdefault((message.provider, pid), message.pk)
                if owner == message.pk:
                    ids.append(pid)
                else:  # a provider reusing an id must not break the send's record, nor another's
                    log.warning("provider id reused", extra={"message_id": str(message.pk)})
            if ids:
                message.provider_message_id = ids[0]
                parts += [
                    MessagePart(
                        message=message, index=i, provider=message.provider, provider_message_id=pid
                    )  # fmt: skip
                    for i, pid in enumerate(ids)
                ]
            if result.segments:
                message.segments = result.segments
            if result.price is not None:
                message.price, message.currency = result.price, result.currency
            message.updated_at = now
            message.sent_at = a.accepted_at
            if sender_may(message.status, Status.SENT) or message.status == Status.UNKNOWN:
                applied, note = True, "accepted by the provider"
                message.status = Status.SENT
                message.error_code = message.error_text = ""
                message.completed_at = None
                changes.append(callbacks.StatusChange.of(message))
            else:
                decision = decide(message.status, Status.SENT)
                applied, note = False, decision.reason + " (a receipt arrived first)"
                if message.completed_at and message.completed_at < message.sent_at:
                    message.sent_at = message.completed_at  # never after the receipt
            message.lease_owner, message.lease_until = "", None
            events.append(
                StatusEvent(
                    message=message,
                    status=Status.SENT,
                    provider_status=result.provider_status,
                    source=Source.SENDER,
                    applied=applied,
                    note=f"{note}; provider id(s): {', '.join(ids) or 'none'}",
                    raw_payload=result.raw
                    if isinstance(result.raw, dict)
                    else {"response": result.raw},
                )
            )
            if result.refused_parts:
                partial.append((message, len(ids), result.refused_parts))
        MessagePart.objects.bulk_create(parts, ignore_conflicts=True)
        bulk_set(Message, list(locked.values()), _SENT_FIELDS)
        StatusEvent.objects.bulk_create(events)
        callbacks.emit_status_changes(changes)
        for message, accepted_parts, refused in partial:
            _record_refused_parts(message, accepted_parts, refused)
    match_unmatched_many(list(locked.values()))
    return {pk: m.status for pk, m in locked.items()}


def _part_owners(locked: dict, accepted: list) -> dict:
    """{(provider, provider id): message id} of the ids these sends name that parts already hold."""
    wanted = defaultdict(set)
    for a in accepted:
        provider = locked[a.message.pk].provider
        wanted[provider] |= {str(i) for i in a.result.provider_message_ids if i}
    owners = {}
    for provider, pids in wanted.items():
        rows = MessagePart.objects.filter(provider=provider, provider_message_id__in=sorted(pids))
        for pid, message_id in rows.values_list("provider_message_id", "message_id"):
            owners[(provider, pid)] = message_id
    return owners


def _record_refused_parts(locked: Message, accepted: int, refused: list):
    """Parts refused while others were accepted: kept as rejected parts, so the message rolls
    up to `rejected` (the recipient gets an incomplete text) and is never resent whole."""
    MessagePart.objects.bulk_create(
        MessagePart(
            message=locked,
            index=accepted + n,
            provider=locked.provider,
            provider_message_id=f"refused:{locked.pk}:{n}",
            status=Status.REJECTED,
            error_code=str(code)[:64],
        )
        for n, (code, _text) in enumerate(refused)
    )
    total = accepted + len(refused)
    detail = "; ".join(f"{code}: {text}" for code, text in refused)
    locked.status = roll_up(locked.parts.values_list("status", flat=True))
    locked.error_code = str(refused[0][0])[:64]
    locked.error_text = f"{len(refused)} of {total} parts refused ({detail})"
    locked.completed_at = timezone.now()
    locked.save()
    StatusEvent.objects.create(
        message=locked,
        status=locked.status,
        error_code=locked.error_code,
        error_text=locked.error_text,
        source=Source.SENDER,
        note="partial send: the accepted parts are not resent",
    )
    callbacks.emit_status_changes([locked])


def backoff_seconds(attempt: int, retry_after=None) -> float:
    """Exponential backoff with equal jitter, capped; never sooner than the provider asked."""
    delay = min(settings.SENDER_BACKOFF_CAP, settings.SENDER_BACKOFF_BASE * 2 ** (attempt - 1))
    delay = delay / 2 + random.uniform(0, delay / 2)
    return max(delay, float(retry_after or 0))


def _record_error(message: Message, owner: str, exc: SendError) -> str:
    text = str(exc)[:2000]
    if exc.throttled:
        pacing.leave_gap(message.provider)
    if exc.ambiguous:
        return _finish_locked(message, owner, Status.UNKNOWN, code=exc.code, text=text)
    if not exc.retryable:
        if exc.opted_out:
            optouts.opt_out(
                message.to_number, reason=f"provider error {exc.code}", source_message=message
            )
        status = getattr(exc, "status", Status.REJECTED)
        return _finish_locked(message, owner, status, code=exc.code, text=text)
    more = message.attempts < settings.SENDER_MAX_ATTEMPTS
    route = routing.failover(message, exc) if more else None
    if route:  # proof the provider did not take it: the route's next provider, at once
        return _requeue(
            message, owner, exc, delay=0, provider=route.chosen, keep_attempts=True,
            note=f"failover: {message.provider} did not accept it ({exc.code}); {route.note}",
            raw={"route": route.as_json()},
        )  # fmt: skip
    if message.attempts < settings.SENDER_MAX_ATTEMPTS:
        return _retry_later(message, owner, exc)
    fallback = next_fallback(message.provider, message)
    if fallback:
        return _fail_over(message, owner, fallback, exc)
    return _finish_locked(
        message, owner, Status.FAILED, code=exc.code,
        text=f"gave up after {message.attempts} attempts: {text}",
    )  # fmt: skip


def next_fallback(current: str, message: Message | None = None) -> str:
    """The next enabled provider of the failover chain after `current`; for a message, only one
    it may use (messages.may_use: a test key's never leaves the sandbox, a client's stays within
    its allowed providers)."""
    chain = [providers.default_name()] + [
        p for p in settings.SMS_FALLBACK_PROVIDERS if p != providers.default_name()
    ]
    if current not in chain:
        return ""
    rest = [p for p in chain[chain.index(current) + 1 :] if providers.is_enabled(p)]
    if message is not None:
        rest = [p for p in rest if messages.may_use(message.client, message.api_key, p)]
    return rest[0] if rest else ""


def _owned(message_id, owner):
    """The locked row, if this sender still holds its lease (else None)."""
    locked = Message.objects.select_for_update().get(pk=message_id)
    if locked.status != Status.SENDING or locked.lease_owner != owner:
        return None
    return locked


def _retry_later(message, owner, exc) -> str:
    delay = backoff_seconds(message.attempts, exc.retry_after)
    return _requeue(
        message, owner, exc, delay=delay,
        note=f"attempt {message.attempts} failed, retrying in {delay:.1f}s",
    )  # fmt: skip


def _fail_over(message, owner, fallback, exc) -> str:
    return _requeue(
        message, owner, exc, delay=0, provider=fallback,
        note=f"failover: {message.provider} exhausted its attempts, switching to {fallback}",
    )  # fmt: skip


def _requeue(message, owner, exc, *, delay: float, note: str, provider: str = "",
             keep_attempts=False, raw=None) -> str:  # fmt: skip
    """Put a claimed message back in the queue (optionally with another provider)."""
    with transaction.atomic():
        locked = _owned(message.pk, owner)
        if locked is None:
            return Message.objects.get(pk=message.pk).status
        if provider:
            locked.provider = provider
            locked.attempts = locked.attempts if keep_attempts else 0
        locked.status = Status.QUEUED
        locked.next_attempt_at = timezone.now() + timedelta(seconds=delay)
        locked.error_code, locked.error_text = exc.code, str(exc)[:2000]
        locked.lease_owner, locked.lease_until = "", None
        locked.save()
        StatusEvent.objects.create(
            message=locked,
            status=Status.QUEUED,
            error_code=exc.code,
            error_text=str(exc)[:2000],
            source=Source.SENDER,
            note=note,
            raw_payload=raw,
        )
        callbacks.emit_status_changes([locked])
    return Status.QUEUED


def _finish_locked(message, owner, status, *, code="", text="") -> str:
    with transaction.atomic():
        locked = _owned(message.pk, owner)
        if locked is None:
            return Message.objects.get(pk=message.pk).status
        _finish(locked, status, code=code, text=text)
    if status == Status.UNKNOWN:
        match_unmatched(locked)
    return status


def _finish(locked: Message, status, *, code="", text=""):
    locked.status = status
    locked.error_code, locked.error_text = str(code)[:64], text
    locked.lease_owner, locked.lease_until = "", None
    locked.completed_at = timezone.now()
    locked.save()
    StatusEvent.objects.create(
        message=locked,
        status=status,
        error_code=str(code)[:64],
        error_text=text,
        source=Source.SENDER,
        note={
            Status.UNKNOWN: "ambiguous send: not retried, left to receipts and reconciliation",
            Status.FAILED: "failed",
            Status.REJECTED: "refused",
        }.get(status, ""),
    )
    callbacks.emit_status_changes([locked])
