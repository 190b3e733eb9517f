"""Applying delivery reports: the one implementation, for 1..N parsed reports at a time.

Every path that moves a message by a provider's report calls `apply()`: the applier loop
(stored webhook requests, many per batch), the inline webhook view (one request), replay from
the admin, reconciliation (reports pulled from a report API) and the send recorder (reports
kept until their message's provider ids were known). One call, inside one transaction:

  match    every report to its message with set queries: a part id wins, then the message's
           provider id, then our own id echoed as the client reference;
  lock     the matched messages in primary-key order (two appliers cannot deadlock), then read
           their parts and the dedupe keys already recorded: after the locks, so a concurrent
           applier's commit is seen;
  decide   each report in arrival order with messaging.status.decide on the rows in memory
           (multipart messages roll up from their parts);
  write    the events with one bulk insert, the parts and messages with one UPDATE each, the
           reports no message answers yet as UnmatchedReport rows (applied when it appears).

The status changes of a batch are gathered in one list (`Applied.changes`) and handed to
`_on_status_changes()` inside the same transaction: the one place where anything that must be
written atomically with a status change (a status-callback outbox row) belongs.
"""

import logging
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from messaging import metrics
from messaging.bulk import bulk_set
from messaging.models import Message, MessagePart, Source, StatusEvent, UnmatchedReport
from messaging.providers.base import DeliveryReport
from messaging.services import callbacks, optouts
from messaging.status import FAILURES, Decision, Status, decide, is_terminal, roll_up

APPLIED, IGNORED, DUPLICATE, UNMATCHED = "applied", "ignored", "duplicate", "unmatched"
RESULTS = (APPLIED, DUPLICATE, IGNORED, UNMATCHED)

log = logging.getLogger("herald.receipts")

# Statuses that carry an error on the message. A report's error code or text with any other
# status (Vonage Messages: `delivered` with error 1000 "Throttled") stays on the timeline only.
ERROR_STATUSES = frozenset({*FAILURES, Status.UNKNOWN})

DUPLICATE_NOTE = "ignored: duplicate (this receipt was already recorded for this message)"

# What deciding and writing a message needs (bodies and metadata stay in the database).
MESSAGE_FIELDS = ("id", "provider", "to_number", "status", "error_code", "error_text",
                  "price", "currency", "sent_at", "completed_at", "lease_until", "lease_owner",
                  "updated_at")  # fmt: skip


@dataclass
class Incoming:
    """One parsed report and where it came from."""

    provider: str
    report: DeliveryReport
    webhook_request: object = None  # the WebhookRequest it arrived in, if any


@dataclass
class Outcome:
    result: str  # APPLIED, DUPLICATE, IGNORED or UNMATCHED
    message_id: object = None


@dataclass
class StatusChange:
    """One status a report moved a message to (old -> new), with the event that records it."""

    message_id: object
    old: Status
    new: Status
    event: StatusEvent


@dataclass
class Applied:
    """What one apply() did: an outcome per report (in order), the status changes, the counts
    per result (applied, duplicate, ignored, unmatched) for metrics."""

    outcomes: list = field(default_factory=list)
    changes: list = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)


def _on_status_changes(changes: list):
    """Called once per apply(), inside its transaction, with every StatusChange it made (the
    events are saved). Whatever must commit or roll back with the status changes goes here:
    the status callbacks' outbox rows, one bulk write for the batch. Each change carries its
    own status and error (a message moved twice in a batch reports both steps)."""
    callbacks.emit_status_changes(
        [
            callbacks.StatusChange(
                change.message_id,
                str(change.new),
                change.event.error_code if change.new in ERROR_STATUSES else "",
                change.event.error_text if change.new in ERROR_STATUSES else "",
            )
            for change in changes
        ]
    )


def apply(
    reports,
    *,
    source: str = Source.WEBHOOK,
    actor=None,
    keep_unmatched: bool = True,
    show_duplicates: bool = True,
) -> Applied:
    """Apply reports (a sequence of Incoming) in arrival order, in one transaction.

    keep_unmatched: keep reports no message answers yet (UnmatchedReport). show_duplicates: put
    a repeat of a recorded receipt on the timeline as an ignored duplicate (a replay from the
    admin says so in its own event instead)."""
    entries = [_Entry(i.provider, i.report, i.webhook_request) for i in reports]
    done = Applied(counts=Counter(dict.fromkeys(RESULTS, 0)))
    if not entries:
        return done
    # No savepoint of its own inside a caller's transaction (two round trips per call): a caller
    # that must survive a failure here (the applier's batch, apply_parsed) has one already.
    with transaction.atomic(savepoint=False):
        _match(entries)
        _apply_matched(entries, done, source, actor, keep_unmatched, show_duplicates)
        _on_status_changes(done.changes)
    per_provider = Counter()
    for e in entries:
        done.outcomes.append(Outcome(e.result, e.message_id if e.result != UNMATCHED else None))
        done.counts[e.result] += 1
        per_provider[(e.provider, e.result)] += 1
    for (provider, result), n in per_provider.items():
        metrics.receipt(provider, result, n)
    for change in done.changes:
        metrics.receipt_final(change.event.message.provider, change.event.message)
    _log(entries, done)
    return done


def apply_one(provider: str, report: DeliveryReport, *, webhook_request=None, **kwargs) -> Outcome:
    """apply() for a single report; returns its outcome."""
    return apply([Incoming(provider, report, webhook_request)], **kwargs).outcomes[0]


# --- match -------------------------------------------------------------------------------------


@dataclass
class _Entry:
    provider: str
    report: DeliveryReport
    webhook_request: object
    message_id: object = None
    part_id: int | None = None
    how: str = ""  # "part", "id", "ref" or "" (no message)
    result: str = ""

    @property
    def key(self):
        return self.report.dedupe_key(self.provider)


def _our_id(reference):
    try:
        return uuid.UUID(str(reference))
    except (TypeError, ValueError):
        return None


def _match(entries):
    """Fill message_id/part_id/how: a part id wins, then the message's provider id, then our own
    id echoed as the client reference. Three set queries however many reports."""
    by_provider = defaultdict(set)
    for e in entries:
        if e.report.provider_message_id:
            by_provider[e.provider].add(e.report.provider_message_id)
    parts, messages = {}, {}
    for provider, pids in by_provider.items():
        for pid, part_id, message_id in (
            MessagePart.objects.filter(provider=provider, provider_message_id__in=pids)
            .order_by()
            .values_list("provider_message_id", "id", "message_id")
        ):
            parts[(provider, pid)] = (part_id, message_id)
        rest = [p for p in pids if (provider, p) not in parts]
        if rest:
            for pid, message_id in (
                Message.objects.filter(
                    provider=provider, direction="outbound", provider_message_id__in=rest
                )
                .order_by()
                .values_list("provider_message_id", "id")
            ):
                messages[(provider, pid)] = message_id
    refs = defaultdict(list)
    for e in entries:
        key = (e.provider, e.report.provider_message_id)
        if key in parts:
            e.part_id, e.message_id = parts[key]
            e.how = "part"
        elif key in messages:
            e.message_id, e.how = messages[key], "id"
        elif ours := _our_id(e.report.client_reference):
            refs[ours].append(e)
    if refs:
        known = Message.objects.filter(pk__in=list(refs), direction="outbound").order_by()
        for ours in known.values_list("id", flat=True):
            for e in refs[ours]:
                e.message_id, e.how = ours, "ref"


# --- decide and write --------------------------------------------------------------------------


def _apply_matched(entries, done: Applied, source, actor, keep_unmatched, show_duplicates):
    ids = sorted({e.message_id for e in entries if e.message_id is not None})
    # Lock in a fixed order so two appliers with overlapping batches cannot deadlock.
    locked = Message.objects.select_for_update().filter(pk__in=ids).order_by("pk")
    messages = {m.pk: m for m in locked.only(*MESSAGE_FIELDS)}
    parts_of, part_by_id = defaultdict(list), {}
    if ids:
        for part in MessagePart.objects.filter(message_id__in=ids).order_by("message_id", "index"):
            parts_of[part.message_id].append(part)
            part_by_id[part.pk] = part
    keys = [e.key for e in entries if e.message_id is not None]
    seen = set()
    if keys:
        seen.update(
            StatusEvent.objects.filter(dedupe_key__in=keys)
            .order_by()
            .values_list("dedupe_key", flat=True)
        )
    now = timezone.now()
    events, unmatched, opted_out = [], [], {}
    dirty_messages, dirty_parts, fields = {}, {}, {"updated_at"}
    for e in entries:
        message = messages.get(e.message_id)
        report = e.report
        # Matched only by our reference while the send response is not recorded yet: its
        # provider ids (and, for multipart, its parts) are unknown, so a part's receipt could be
        # mistaken for the whole message. Keep it; recording the send applies it. The row lock
        # orders this against the recorder, so the kept report is not missed.
        if (
            message is not None
            and e.how == "ref"
            and report.provider_message_id
            and message.status in (Status.QUEUED, Status.SENDING)
        ):
            message = None
        if message is None:
            e.result, e.message_id = UNMATCHED, None
            if keep_unmatched:
                unmatched.append(_unmatched(e))
            continue
        if e.key in seen:
            # Recorded once already: the timeline says so (not applied), without a dedupe key.
            e.result = DUPLICATE
            if not show_duplicates:
                continue
            part = part_by_id.get(e.part_id) if e.how == "part" else None
            events.append(_event(e, message, source, actor, applied=False, key=None,
                                 note=DUPLICATE_NOTE, part=part))  # fmt: skip
            continue
        decision, part, part_note = _decide(e, message, part_by_id, parts_of, dirty_parts)
        event = _event(e, message, source, actor, applied=decision.applied, key=e.key,
                       note=part_note + decision.reason, part=part)  # fmt: skip
        events.append(event)
        seen.add(e.key)
        if report.opted_out:
            opted_out.setdefault(message.to_number, message)
        e.result = APPLIED if decision.applied else IGNORED
        if decision.applied:
            done.changes.append(StatusChange(message.pk, Status(message.status),
                                             decision.status, event))  # fmt: skip
            fields |= _move(message, decision.status, report)
        elif report.price is not None and message.price is None and report.documented:
            message.price, message.currency = report.price, report.currency
            fields |= {"price", "currency"}
        else:
            continue
        message.updated_at = now
        dirty_messages[message.pk] = message
    StatusEvent.objects.bulk_create(events)
    UnmatchedReport.objects.bulk_create(unmatched)
    bulk_set(MessagePart, list(dirty_parts.values()), ["status", "error_code"])
    bulk_set(Message, list(dirty_messages.values()), sorted(fields))
    for number, message in opted_out.items():
        # Twilio 21610 in a status callback (a Messaging Service send fails there, not in the
        # send response): the same opt-out the send path records.
        optouts.opt_out(number, reason="provider error 21610 in a status callback",
                        source_message=message)  # fmt: skip


def _decide(e, message, part_by_id, parts_of, dirty_parts):
    """(decision for the message, the part the report is about or None, note prefix)."""
    report = e.report
    if not report.documented:
        # A status the provider does not document says nothing we can act on: recorded, not
        # applied, and a live message stays where it is (it is not closed as `unknown`).
        why = f"not applied: '{report.provider_status}' is not a status {e.provider} documents"
        return Decision(False, Status(message.status), why), None, ""
    decision = decide(message.status, report.status)
    part = part_by_id.get(e.part_id) if e.how == "part" else None
    if part is None:
        return decision, None, ""
    part_decision = decide(part.status, report.status)
    if not part_decision.applied:
        return Decision(False, Status(message.status), part_decision.reason), part, ""
    part.status = part_decision.status
    part.error_code = report.error_code if part.status in ERROR_STATUSES else ""
    dirty_parts[part.pk] = part
    statuses = [p.status for p in parts_of[message.pk]]
    note = f"part {part.index + 1}/{len(statuses)} {part.status}; " if len(statuses) > 1 else ""
    return decide(message.status, roll_up(statuses)), part, note


def _event(e, message, source, actor, *, applied, key, note, part=None):
    report = e.report
    return StatusEvent(
        message=message,
        status=report.status,
        provider_status=report.provider_status,
        error_code=report.error_code,
        error_text=report.error_text,
        part_id=report.provider_message_id if part is not None else "",
        provider_timestamp=report.provider_timestamp,
        source=source,
        actor=actor,
        applied=applied,
        note=note,
        raw_payload=report.raw,
        dedupe_key=key,
        webhook_request=e.webhook_request,
    )


def _unmatched(e) -> UnmatchedReport:
    return UnmatchedReport(
        provider=e.provider,
        provider_message_id=e.report.provider_message_id,
        client_reference=e.report.client_reference[:100],
        report=e.report.to_json(),
        webhook_request=e.webhook_request,
    )


def _move(message: Message, status: Status, report: DeliveryReport) -> set:
    """Move the message in memory; returns the fields it changed."""
    message.status = status
    fields = {"status", "lease_until", "lease_owner"}
    if status in ERROR_STATUSES:
        if report.error_code or report.error_text:
            message.error_code, message.error_text = report.error_code, report.error_text
            fields |= {"error_code", "error_text"}
    elif status == Status.DELIVERED and (message.error_code or message.error_text):
        # Delivered after all: an error seen on the way (a receipt time-out while `unknown`)
        # no longer describes the message; the timeline keeps it.
        message.error_code = message.error_text = ""
        fields |= {"error_code", "error_text"}
    if report.price is not None and message.price is None:
        message.price, message.currency = report.price, report.currency
        fields |= {"price", "currency"}
    if is_terminal(status) or status == Status.UNKNOWN:
        message.completed_at = report.provider_timestamp or timezone.now()
        fields.add("completed_at")
    message.lease_until, message.lease_owner = None, ""
    return fields


def _log(entries, done: Applied):
    """One line per apply() call: a receipt's own record is its StatusEvent, and a JSON line per
    receipt cost the applier a fifth of its CPU (bench/RESULTS.md). Per receipt at DEBUG."""
    log.info(
        "receipts",
        extra={"reports": len(entries), "providers": sorted({e.provider for e in entries}),
               **{result: done.counts[result] for result in RESULTS}},
    )  # fmt: skip
    if not log.isEnabledFor(logging.DEBUG):
        return
    for e in entries:
        log.debug(
            "receipt",
            extra={"provider": e.provider, "message_id": str(e.message_id or ""),
                   "provider_message_id": e.report.provider_message_id,
                   "status": str(e.report.status), "result": e.result,
                   "webhook_request": getattr(e.webhook_request, "pk", None)},
        )  # fmt: skip


# --- reports kept for messages not known yet ---------------------------------------------------


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
    kept = list(
        UnmatchedReport.objects.filter(query, matched_at__isnull=True)
        .select_related("webhook_request")
        .order_by("id")
    )
    if not kept:
        return 0
    with transaction.atomic():
        done = apply(
            [Incoming(k.provider, DeliveryReport.from_json(k.report), k.webhook_request)
             for k in kept],
            keep_unmatched=False,
        )  # fmt: skip
        now = timezone.now()
        matched = [
            (k, o) for k, o in zip(kept, done.outcomes, strict=True) if o.result != UNMATCHED
        ]
        for k, outcome in matched:
            k.matched_at, k.message_id = now, outcome.message_id
        UnmatchedReport.objects.bulk_update([k for k, _ in matched], ["matched_at", "message"])
    return len(matched)
