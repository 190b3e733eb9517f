"""Applying delivery reports: match, deduplicate, append to the audit trail, move the status
by the state machine under a row lock. Reports for messages not known yet are kept and applied
when the message (or its provider id) appears."""

import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from messaging.models import Message, MessagePart, Source, StatusEvent, UnmatchedReport
from messaging.providers.base import DeliveryReport
from messaging.services import callbacks
from messaging.status import Decision, Status, decide, is_terminal, roll_up

APPLIED, IGNORED, DUPLICATE, UNMATCHED = "applied", "ignored", "duplicate", "unmatched"

log = logging.getLogger("herald.receipts")


@dataclass
class Outcome:
    result: str
    message_id: object = None


def _our_id(reference: str):
    try:
        return uuid.UUID(str(reference))
    except (TypeError, ValueError):
        return None


def find_target(provider: str, report: DeliveryReport):
    """(message id, part, how) a report is about, or (None, None, None). A part id wins, then
    the message's provider id, then our own id echoed as the client reference."""
    pid = report.provider_message_id
    if pid:
        part = (
            MessagePart.objects.filter(provider=provider, provider_message_id=pid)
            .only("id", "message_id")
            .first()
        )
        if part:
            return part.message_id, part, "part"
        message_id = (
            Message.objects.filter(provider=provider, direction="outbound", provider_message_id=pid)
            .values_list("id", flat=True)
            .first()
        )
        if message_id:
            return message_id, None, "id"
    ours = _our_id(report.client_reference)
    if ours and Message.objects.filter(pk=ours, direction="outbound").exists():
        return ours, None, "ref"
    return None, None, None


def apply_report(provider: str, report: DeliveryReport, **kwargs) -> Outcome:
    outcome = _apply_report(provider, report, **kwargs)
    log.info(
        "receipt",
        extra={"provider": provider, "message_id": str(outcome.message_id or ""),
               "provider_message_id": report.provider_message_id,
               "status": str(report.status), "result": outcome.result},
    )  # fmt: skip
    return outcome


def _apply_report(
    provider: str,
    report: DeliveryReport,
    *,
    webhook_request=None,
    source: str = Source.WEBHOOK,
    actor=None,
    keep_unmatched: bool = True,
) -> Outcome:
    key = report.dedupe_key(provider)
    with transaction.atomic():
        message_id, part, how = find_target(provider, report)
        if how == "ref" and report.provider_message_id:
            # Matched only by our reference while the send response is not stored yet: its
            # provider ids (and, for multipart, its parts) are unknown, so a part's receipt
            # could be mistaken for the whole message. Keep it; record_sent applies it. The row
            # lock orders this against record_sent, so the kept report cannot be missed.
            current = (
                Message.objects.select_for_update().filter(pk=message_id).values_list("status")
            )[0][0]
            if current in (Status.QUEUED, Status.SENDING):
                message_id = None
        if message_id is None:
            if keep_unmatched:
                UnmatchedReport.objects.create(
                    provider=provider,
                    provider_message_id=report.provider_message_id,
                    client_reference=report.client_reference[:100],
                    report=report.to_json(),
                    webhook_request=webhook_request,
                )
            return Outcome(UNMATCHED)
        message = Message.objects.select_for_update().get(pk=message_id)
        if StatusEvent.objects.filter(dedupe_key=key).exists():
            return Outcome(DUPLICATE, message.pk)
        decision = decide(message.status, report.status)
        part_note = ""
        if part is not None:
            part = MessagePart.objects.get(pk=part.pk)  # fresh, now that the message is locked
            part_decision = decide(part.status, report.status)
            if part_decision.applied:
                part.status = part_decision.status
                part.error_code = report.error_code
                part.save(update_fields=["status", "error_code"])
                statuses = list(message.parts.values_list("status", flat=True))
                decision = decide(message.status, roll_up(statuses))
                if len(statuses) > 1:
                    part_note = f"part {part.index + 1}/{len(statuses)} {part.status}; "
            else:
                decision = Decision(False, Status(message.status), part_decision.reason)
        event = StatusEvent(
            message=message,
            status=report.status,
            provider_status=report.provider_status,
            error_code=report.error_code,
            error_text=report.error_text,
            part_id=report.provider_message_id if part is not None else "",
            provider_timestamp=report.provider_timestamp,
            source=source,
            actor=actor,
            applied=decision.applied,
            note=part_note + decision.reason,
            raw_payload=report.raw,
            dedupe_key=key,
            webhook_request=webhook_request,
        )
        try:
            with transaction.atomic():
                event.save()
        except IntegrityError:
            return Outcome(DUPLICATE, message.pk)
        if decision.applied:
            _move(message, decision.status, report)
            callbacks.emit_status_changes([message])
        elif report.price is not None and message.price is None:
            message.price, message.currency = report.price, report.currency
            message.save(update_fields=["price", "currency", "updated_at"])
    return Outcome(APPLIED if decision.applied else IGNORED, message.pk)


def _move(message: Message, status: Status, report: DeliveryReport):
    message.status = status
    fields = ["status", "updated_at"]
    if report.error_code or report.error_text:
        message.error_code, message.error_text = report.error_code, report.error_text
        fields += ["error_code", "error_text"]
    if report.price is not None and message.price is None:
        message.price, message.currency = report.price, report.currency
        fields += ["price", "currency"]
    if is_terminal(status) or status == Status.UNKNOWN:
        message.completed_at = report.provider_timestamp or timezone.now()
        fields.append("completed_at")
    message.lease_until, message.lease_owner = None, ""
    fields += ["lease_until", "lease_owner"]
    message.save(update_fields=fields)


def apply_reports(provider: str, reports, *, webhook_request=None, source=Source.WEBHOOK):
    return [
        apply_report(provider, r, webhook_request=webhook_request, source=source) for r in reports
    ]


def match_unmatched(message: Message) -> int:
    """Apply kept reports that this message (now with its provider ids) answers."""
    return match_unmatched_many([message])


def match_unmatched_many(messages: list) -> int:
    """Apply kept reports that any of these messages (now with their provider ids) answers:
    one query for the whole batch the send recorder just wrote, however many messages."""
    if not messages:
        return 0
    provider_ids = defaultdict(set)  # provider -> its ids of these messages and their parts
    for m in messages:
        if m.provider_message_id:
            provider_ids[m.provider].add(m.provider_message_id)
    for provider, pid in MessagePart.objects.filter(
        message_id__in=[m.pk for m in messages]
    ).values_list("provider", "provider_message_id"):
        provider_ids[provider].add(pid)
    query = Q(client_reference__in=[str(m.pk) for m in messages])
    for provider, pids in provider_ids.items():
        query |= Q(provider=provider, provider_message_id__in=sorted(pids))
    applied = 0
    for kept in UnmatchedReport.objects.filter(query, matched_at__isnull=True).order_by("id"):
        report = DeliveryReport.from_json(kept.report)
        outcome = apply_report(
            kept.provider, report, webhook_request=kept.webhook_request, keep_unmatched=False
        )
        if outcome.result != UNMATCHED:
            UnmatchedReport.objects.filter(pk=kept.pk).update(
                matched_at=timezone.now(), message_id=outcome.message_id
            )
            applied += 1
    return applied
