"""Store-then-apply: apply stored webhook requests in batches.

The webhook view authenticates, parses (only to answer 400 to what can never be applied),
stores the raw request in state `received`, and answers 2xx. This module turns stored requests
into StatusEvents and status changes, many per transaction:

  claim    up to `batch_size` pending rows, oldest first, FOR UPDATE SKIP LOCKED (PostgreSQL), so
           several appliers (run_applier processes, sender ticks, inline views) never share a row;
  match    every report of the batch to its message with three set queries (part ids, message
           ids, our references) instead of three queries per report;
  lock     the matched messages in primary-key order (no deadlock between appliers), then read
           their parts and the dedupe keys already recorded, after the locks, so a concurrent
           applier's commit is seen;
  decide   each report in arrival order with messaging.status.decide, exactly as
           services.receipts.apply_report does one at a time, on the rows in memory;
  write    the events with one bulk insert, the parts and messages with bulk updates, the rows
           as processed, and commit once.

Reports that apply_report treats specially (unknown message: kept as UnmatchedReport; matched
only by our reference while the send response is not stored yet) and inbound messages go through
the one-at-a-time services in the same transaction. If anything in the fast path fails, the batch
falls back to processing each row on its own, which records the failure and traceback on that
row (state `failed`, replayable from the admin) without holding back the others.

A row that fails to apply after it was stored is never lost: it stays in the database either
`received` (picked up again) or `failed` (visible, replayable).
"""

import logging
import time
import traceback
import uuid
from collections import defaultdict
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from messaging.bulk import bulk_set
from messaging.models import Message, MessagePart, Source, StatusEvent, WebhookRequest
from messaging.providers.base import DeliveryReport, WebhookParseError
from messaging.services import callbacks, webhooks
from messaging.services.inbound import record_inbound
from messaging.services.receipts import APPLIED, DUPLICATE, IGNORED, apply_report
from messaging.status import Decision, Status, decide, is_terminal, roll_up

log = logging.getLogger("herald.applier")

PENDING = WebhookRequest.State.RECEIVED


@dataclass
class Drained:
    rows: int = 0
    reports: int = 0
    failed_rows: int = 0

    def __iadd__(self, other):
        self.rows += other.rows
        self.reports += other.reports
        self.failed_rows += other.failed_rows
        return self


def inline_enabled() -> bool:
    """Whether the webhook view applies what it stored before answering (WEBHOOK_APPLY_INLINE).
    Off, the view only stores and an applier (run_applier, or the sender's tick) applies."""
    return settings.WEBHOOK_APPLY_INLINE


def pending():
    return WebhookRequest.objects.filter(state=PENDING, authenticated=True)


def apply_pending(batch_size: int = 200, max_reports: int = 2000) -> Drained:
    """Claim and apply one batch of stored requests. Returns what was done (rows == 0: idle)."""
    with transaction.atomic():
        claim = pending().order_by("received_at", "id")
        if connection.vendor == "postgresql":
            claim = claim.select_for_update(skip_locked=True)
        rows = list(claim[:batch_size])
        if not rows:
            return Drained()
        # Keep a batch's transaction (and the message locks it holds) bounded: Infobip puts many
        # reports in one request. Rows left out stay `received` for the next batch.
        kept, total = [], 0
        for row in rows:
            if kept and total + max(1, row.report_count) > max_reports:
                break
            kept.append(row)
            total += max(1, row.report_count)
        return _apply_rows(kept)


def apply_stored(stored: WebhookRequest, items: list) -> bool:
    """Apply one request the view has just stored (inline mode), unless an applier already took
    it. `items` are the reports the view parsed. True when it ended processed."""
    with transaction.atomic():
        claim = WebhookRequest.objects.filter(pk=stored.pk, state=PENDING)
        if connection.vendor == "postgresql":
            claim = claim.select_for_update(skip_locked=True)
        rows = list(claim)  # list(): SQLite must not keep a cursor (and its table lock) open
        if not rows:  # an applier holds it or has done it
            return True
        row = rows[0]
        done = _apply_rows([row], parsed={row.pk: items})
    return done.failed_rows == 0


def drain(max_batches=None, batch_size: int = 200, max_seconds=None) -> Drained:
    """Apply batches until nothing is pending (or a bound is reached)."""
    total, batches = Drained(), 0
    started = time.monotonic()
    while max_batches is None or batches < max_batches:
        done = apply_pending(batch_size)
        total += done
        batches += 1
        if done.rows == 0:
            break
        if max_seconds and time.monotonic() - started > max_seconds:
            break
    return total


# --- one batch ---------------------------------------------------------------------------------


def _apply_rows(rows: list, parsed=None) -> Drained:
    """Apply claimed rows inside the caller's transaction; mark each processed/failed/invalid."""
    parsed = parsed or {}
    done = Drained(rows=len(rows))
    status_entries, inbound = [], []
    for row in rows:
        try:
            items = parsed.get(row.pk)
            if items is None:
                items = webhooks.parse(row.provider, row.kind, _input(row))
        except WebhookParseError as exc:
            webhooks.mark(row, WebhookRequest.State.INVALID, error=str(exc)[:2000])
            done.failed_rows += 1
            continue
        except Exception as exc:  # a parser bug: keep the row, say why, replay after a fix
            _failed(row, exc)
            done.failed_rows += 1
            continue
        row.report_count = len(items)
        if row.kind == "inbound":
            inbound.append((row, items))
        else:
            status_entries.extend((row, item) for item in items)
    ok_rows = [r for r in rows if r.state == PENDING]
    try:
        with transaction.atomic():
            _apply_reports(status_entries)
            for row, items in inbound:
                for item in items:
                    record_inbound(row.provider, item, webhook_request=row)
            _mark_processed(ok_rows)
    except Exception:
        log.exception("batch apply failed; applying its rows one by one")
        for row in ok_rows:
            if not webhooks.apply_parsed(row, _items(row, status_entries, inbound)):
                done.failed_rows += 1
        return done
    done.reports = len(status_entries) + sum(len(items) for _, items in inbound)
    return done


def _items(row, status_entries, inbound):
    if row.kind == "inbound":
        return next(items for r, items in inbound if r is row)
    return [item for r, item in status_entries if r is row]


def _input(row: WebhookRequest):
    url = f"{settings.PUBLIC_BASE_URL}{row.path}"
    if row.query_string:
        url += "?" + row.query_string
    return webhooks.input_from_stored(row, url)


def _failed(row, exc):
    log.exception("could not parse a stored webhook", extra={"webhook_request": row.pk})
    webhooks.mark(row, WebhookRequest.State.FAILED, error=f"{type(exc).__name__}: {exc}",
                  traceback=traceback.format_exc())  # fmt: skip


def _mark_processed(rows):
    now = timezone.now()
    by_count = defaultdict(list)
    for row in rows:
        by_count[row.report_count].append(row.pk)
        row.state, row.processed_at = WebhookRequest.State.PROCESSED, now
    for count, ids in by_count.items():
        WebhookRequest.objects.filter(pk__in=ids).update(
            state=WebhookRequest.State.PROCESSED, processed_at=now, error="", traceback="",
            report_count=count,
        )  # fmt: skip


# --- reports, in bulk --------------------------------------------------------------------------


@dataclass
class _Entry:
    row: WebhookRequest
    report: DeliveryReport
    provider: str
    key: str
    message_id: object = None
    part_id: int | None = None
    how: str = ""


def _apply_reports(pairs):
    if not pairs:
        return
    entries = [
        _Entry(row, report, row.provider, report.dedupe_key(row.provider)) for row, report in pairs
    ]
    _match(entries)
    # apply_report's special cases stay with apply_report: unknown messages (kept as unmatched)
    # and matches by our reference alone (the send response may not be stored yet). A message
    # with any such report takes all its reports down that path, so their order is kept.
    slow_messages = {e.message_id for e in entries if e.how in ("", "ref")}
    fast = [e for e in entries if e.message_id not in slow_messages]
    slow = [e for e in entries if e.message_id in slow_messages]
    if fast:
        _apply_fast(fast)
    for e in slow:
        apply_report(e.provider, e.report, webhook_request=e.row, source=Source.WEBHOOK)


def _match(entries):
    """Fill message_id/part_id/how like receipts.find_target: a part id wins, then the
    message's provider id, then our own id echoed as the client reference."""
    by_provider = defaultdict(set)
    for e in entries:
        if e.report.provider_message_id:
            by_provider[e.provider].add(e.report.provider_message_id)
    parts, messages = {}, {}
    for provider, pids in by_provider.items():
        for pid, part_id, message_id in MessagePart.objects.filter(
            provider=provider, provider_message_id__in=pids
        ).values_list("provider_message_id", "id", "message_id"):
            parts[(provider, pid)] = (part_id, message_id)
        rest = [p for p in pids if (provider, p) not in parts]
        if rest:
            for pid, message_id in Message.objects.filter(
                provider=provider, direction="outbound", provider_message_id__in=rest
            ).values_list("provider_message_id", "id"):
                messages[(provider, pid)] = message_id
    refs = {}
    for e in entries:
        key = (e.provider, e.report.provider_message_id)
        if key in parts:
            e.part_id, e.message_id = parts[key]
            e.how = "part"
        elif key in messages:
            e.message_id, e.how = messages[key], "id"
        else:
            ours = _our_id(e.report.client_reference)
            if ours:
                refs.setdefault(ours, []).append(e)
    if refs:
        known = set(
            Message.objects.filter(pk__in=list(refs), direction="outbound").values_list(
                "id", flat=True
            )
        )
        for ours, waiting in refs.items():
            if ours in known:
                for e in waiting:
                    e.message_id, e.how = ours, "ref"


def _our_id(reference):
    try:
        return uuid.UUID(str(reference))
    except (TypeError, ValueError):
        return None


# What deciding and writing a message needs (bodies and metadata stay in the database).
MESSAGE_FIELDS = ("id", "status", "error_code", "error_text", "price", "currency",
                  "completed_at", "lease_until", "lease_owner", "updated_at")  # fmt: skip


def _apply_fast(entries):
    ids = list({e.message_id for e in entries})
    # Lock in a fixed order so two appliers with overlapping batches cannot deadlock.
    locked = Message.objects.select_for_update().filter(pk__in=ids).order_by("pk")
    messages = {m.pk: m for m in locked.only(*MESSAGE_FIELDS)}
    parts_of, part_by_id = defaultdict(list), {}
    for part in MessagePart.objects.filter(message_id__in=ids).order_by("message_id", "index"):
        parts_of[part.message_id].append(part)
        part_by_id[part.pk] = part
    seen = set(
        StatusEvent.objects.filter(dedupe_key__in=[e.key for e in entries]).values_list(
            "dedupe_key", flat=True
        )
    )
    now = timezone.now()
    events, dirty_messages, dirty_parts, fields = [], {}, {}, {"updated_at"}
    changes = []  # applied status changes, in order, for the status callbacks
    for e in entries:
        if e.key in seen:
            _log(e, DUPLICATE)  # recorded once already
            continue
        seen.add(e.key)
        message, report = messages[e.message_id], e.report
        decision = decide(message.status, report.status)
        part_note = ""
        part = part_by_id.get(e.part_id) if e.how == "part" else None
        if part is not None:
            part_decision = decide(part.status, report.status)
            if part_decision.applied:
                part.status, part.error_code = part_decision.status, report.error_code
                dirty_parts[part.pk] = part
                statuses = [p.status for p in parts_of[message.pk]]
                decision = decide(message.status, roll_up(statuses))
                if len(statuses) > 1:
                    part_note = f"part {part.index + 1}/{len(statuses)} {part.status}; "
            else:
                decision = Decision(False, Status(message.status), part_decision.reason)
        events.append(
            StatusEvent(
                message=message,
                status=report.status,
                provider_status=report.provider_status,
                error_code=report.error_code,
                error_text=report.error_text,
                part_id=report.provider_message_id if part is not None else "",
                provider_timestamp=report.provider_timestamp,
                source=Source.WEBHOOK,
                applied=decision.applied,
                note=part_note + decision.reason,
                raw_payload=report.raw,
                dedupe_key=e.key,
                webhook_request=e.row,
            )
        )
        _log(e, APPLIED if decision.applied else IGNORED)
        if decision.applied:
            fields |= _move(message, decision.status, report)
            changes.append(callbacks.StatusChange.of(message))
        elif report.price is not None and message.price is None:
            message.price, message.currency = report.price, report.currency
            fields |= {"price", "currency"}
        else:
            continue
        message.updated_at = now
        dirty_messages[message.pk] = message
    StatusEvent.objects.bulk_create(events)
    bulk_set(MessagePart, list(dirty_parts.values()), ["status", "error_code"])
    bulk_set(Message, list(dirty_messages.values()), sorted(fields))
    callbacks.emit_status_changes(changes)


def _log(e: _Entry, result: str):
    """One line per receipt, as services.receipts.apply_report writes it."""
    log.info(
        "receipt",
        extra={"provider": e.provider, "message_id": str(e.message_id),
               "provider_message_id": e.report.provider_message_id,
               "status": str(e.report.status), "result": result, "webhook_request": e.row.pk},
    )  # fmt: skip


def _move(message: Message, status: Status, report: DeliveryReport) -> set:
    """receipts._move on the row in memory; returns the fields it changed."""
    message.status = status
    fields = {"status", "lease_until", "lease_owner"}
    if report.error_code or report.error_text:
        message.error_code, message.error_text = report.error_code, report.error_text
        fields |= {"error_code", "error_text"}
    if report.price is not None and message.price is None:
        message.price, message.currency = report.price, report.currency
        fields |= {"price", "currency"}
    if is_terminal(status) or status == Status.UNKNOWN:
        message.completed_at = report.provider_timestamp or timezone.now()
        fields.add("completed_at")
    message.lease_until, message.lease_owner = None, ""
    return fields
