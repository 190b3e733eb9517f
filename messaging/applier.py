"""Store-then-apply: apply stored webhook requests in batches.

The webhook view authenticates, parses (only to answer 400 to what can never be applied),
stores the raw request in state `received`, and answers 2xx. This module claims stored requests
and hands their reports to the one apply service (messaging.services.receipts.apply), many
requests per transaction:

  claim    up to `batch_size` pending rows, oldest first, FOR UPDATE SKIP LOCKED (PostgreSQL), so
           several appliers (run_applier processes, sender ticks, inline views) never share a row;
  parse    each row's body again (the view kept none of its parse);
  apply    every status report of the batch with one receipts.apply() call, inbound messages
           with services.inbound, mark the rows processed, and commit once.

If anything in the batch fails, the batch falls back to processing each row on its own, which
records the failure and traceback on that row (state `failed`, replayable from the admin)
without holding back the others.

A row that fails to apply after it was stored is never lost: it stays in the database either
`received` (picked up again) or `failed` (visible, replayable).
"""

import logging
import time
import traceback
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from messaging.models import WebhookRequest
from messaging.providers.base import WebhookParseError
from messaging.services import receipts, webhooks
from messaging.services.inbound import record_inbound

log = logging.getLogger("herald.applier")

PENDING = WebhookRequest.State.RECEIVED


@dataclass
class Drained:
    rows: int = 0
    reports: int = 0
    failed_rows: int = 0
    # The last claim found a full batch (or cut one short): more may be waiting right now.
    full: bool = False
    # receipts per result (applied, duplicate, ignored, unmatched), for metrics
    outcomes: Counter = field(default_factory=Counter)

    def __iadd__(self, other):
        self.rows += other.rows
        self.reports += other.reports
        self.failed_rows += other.failed_rows
        self.full = other.full
        self.outcomes.update(other.outcomes)
        return self


def inline_enabled() -> bool:
    """Whether the webhook view applies what it stored before answering (WEBHOOK_APPLY_INLINE).
    Off, the view only stores and an applier (run_applier, or the sender's tick) applies."""
    return settings.WEBHOOK_APPLY_INLINE


def pending():
    return WebhookRequest.objects.filter(state=PENDING, authenticated=True)


def backlog() -> tuple:
    """(stored requests waiting to be applied, age in seconds of the oldest): what readiness
    and the system check report when no applier keeps up. One index scan (webhook_pending_idx)."""
    from django.db.models import Count, Min

    found = pending().order_by().aggregate(n=Count("id"), oldest=Min("received_at"))
    if not found["n"]:
        return 0, 0.0
    return found["n"], (timezone.now() - found["oldest"]).total_seconds()


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
        done = _apply_rows(kept)
        done.full = len(rows) == batch_size or len(kept) < len(rows)
        return done


def apply_stored(stored: WebhookRequest, items: list) -> bool:
    """Apply one request the view has just stored in the caller's transaction (inline mode):
    no applier can see the row before that commits, so there is nothing to claim. `items` are
    the reports the view parsed. True when it ended processed."""
    done = _apply_rows([stored], parsed={stored.pk: items})  # its batch has a savepoint
    return done.failed_rows == 0


def drain(max_batches=None, batch_size: int = 200, max_seconds=None) -> Drained:
    """Apply batches until a claim finds less than a full batch (or a bound is reached): what
    it left is what arrived meanwhile, for the next call, so an idle applier makes no empty
    claim after each batch."""
    total, batches = Drained(), 0
    started = time.monotonic()
    while max_batches is None or batches < max_batches:
        done = apply_pending(batch_size)
        total += done
        batches += 1
        if not done.full:
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
            applied = receipts.apply(
                [receipts.Incoming(row.provider, item, row) for row, item in status_entries]
            )
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
    done.outcomes.update(applied.counts)
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
