"""Provider health shared by every sender through the database: send outcomes in time-sliced
counters, each provider's circuit (closed -> open -> half-open -> closed) and its demotion by
receipt figures. Every transition is a `ProviderHealthEvent` (the audit).

Writes stay cheap: a sender counts outcomes in memory and upserts one `ProviderSendBucket` row
per provider and time slice at most every ROUTING_HEALTH_FLUSH_SECONDS (and once per sender
tick), so a thousand sends a second cost a few upserts, not a row each. The circuit is judged
at each flush on the window's counters (ROUTING_HEALTH_WINDOW_SECONDS), so a provider that
starts failing is skipped by every worker within about a flush interval plus the states cache
(ROUTING_HEALTH_CACHE_SECONDS).

Receipt figures (delivery rate, sent -> delivered latency p95) are read from the messages
themselves (`sent_at`, `completed_at`, `status`) every ROUTING_RECEIPT_EVALUATE_SECONDS by
whichever sender gets there first: nothing is written per receipt.

For metrics: `snapshot()` returns one dict per provider (state, demoted, last hour's figures);
see its docstring for the keys.
"""

import logging
import math
import threading
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import F, Sum
from django.utils import timezone

from messaging import providers
from messaging.models import (
    Direction,
    Message,
    ProviderHealth,
    ProviderHealthEvent,
    ProviderSendBucket,
)
from messaging.services.routing import PROOF_CODES
from messaging.status import Status

log = logging.getLogger("herald.routing")

OUTCOMES = ("ok", "http_5xx", "timeouts", "refused", "throttled", "rejected")
ERRORS = ("http_5xx", "timeouts", "refused")  # what counts towards opening a circuit

_lock = threading.Lock()
_pending: dict = defaultdict(Counter)
_clock = {"flushed": 0.0, "receipts": 0.0}
_states = {"at": 0.0, "rows": None}


# --- Counting ----------------------------------------------------------------------------------


def outcome_of(exc) -> str:
    """The bucket column for a SendError."""
    if exc.throttled:
        return "throttled"
    if exc.ambiguous:
        return "timeouts"
    if exc.retryable:
        return "refused" if exc.code in PROOF_CODES else "http_5xx"
    return "rejected"


def note(provider: str, outcome: str) -> None:
    """Count one send outcome (thread-safe, in memory); flush when the interval has passed."""
    with _lock:
        _pending[provider][outcome] += 1
        due = time.monotonic() - _clock["flushed"] >= settings.ROUTING_HEALTH_FLUSH_SECONDS
    if due:
        flush()


def note_error(provider: str, exc) -> None:
    note(provider, outcome_of(exc))


def flush(now=None) -> None:
    """Write the counted outcomes (one upsert per provider) and judge the circuits. A database
    error loses only these counts, never a message: health is advice to routing."""
    with _lock:
        pending = {p: c for p, c in _pending.items() if c}
        _pending.clear()
        _clock["flushed"] = time.monotonic()
    now = now or timezone.now()
    try:
        # One transaction per provider, in name order, so that two senders flushing together
        # take the same rows in the same order; a caller's own transaction is left usable.
        for provider in sorted(pending):
            with transaction.atomic():
                _upsert(provider, _slice(now), pending[provider])
                _judge_circuit(provider, pending[provider], now)
        if time.monotonic() - _clock["receipts"] >= settings.ROUTING_RECEIPT_EVALUATE_SECONDS:
            _clock["receipts"] = time.monotonic()
            evaluate_receipts(now)
    except DatabaseError:
        log.exception("provider health not recorded")


def _slice(now):
    size = settings.ROUTING_BUCKET_SECONDS
    return datetime.fromtimestamp(math.floor(now.timestamp() / size) * size, tz=UTC)


def _upsert(provider, slice_start, counts):
    increments = {k: F(k) + counts[k] for k in OUTCOMES if counts.get(k)}
    rows = ProviderSendBucket.objects.filter(provider=provider, slice_start=slice_start)
    if rows.update(**increments):
        return
    try:
        with transaction.atomic():
            ProviderSendBucket.objects.create(
                provider=provider, slice_start=slice_start, **{k: counts[k] for k in increments}
            )
    except IntegrityError:  # another sender created it first
        rows.update(**increments)


def window_counts(provider: str, since) -> dict:
    totals = ProviderSendBucket.objects.filter(provider=provider, slice_start__gte=since).aggregate(
        **{k: Sum(k) for k in OUTCOMES}
    )
    return {k: totals[k] or 0 for k in OUTCOMES}


# --- The circuit -------------------------------------------------------------------------------


def _locked_row(provider, now) -> ProviderHealth:
    ProviderHealth.objects.get_or_create(provider=provider, defaults={"state_since": now})
    return ProviderHealth.objects.select_for_update().get(pk=provider)


def _event(row, kind, reason, figures=None):
    ProviderHealthEvent.objects.create(
        provider=row.provider, kind=kind, reason=reason, figures=figures or {}
    )
    log.warning("provider %s: %s (%s)", row.provider, kind, reason)
    _states["rows"] = None  # this process sees its own change at once


def _judge_circuit(provider, fresh: Counter, now):
    State = ProviderHealth.State
    with transaction.atomic():
        row = _locked_row(provider, now)
        state = row.effective_state(now)
        fresh_errors = sum(fresh.get(k, 0) for k in ERRORS)
        if state == State.CLOSED:
            since = max(now - timedelta(seconds=settings.ROUTING_HEALTH_WINDOW_SECONDS),
                        row.state_since)  # fmt: skip
            counts = window_counts(provider, _slice(since))  # the slice it falls in counts
            errors = sum(counts[k] for k in ERRORS)
            total = errors + counts["ok"] + counts["rejected"]
            rate = errors / total if total else 0.0
            if total >= settings.ROUTING_CIRCUIT_MIN_REQUESTS and (
                rate >= settings.ROUTING_CIRCUIT_ERROR_RATE
            ):
                _open(row, now, f"{errors} of {total} sends failed ({rate:.0%}) since "
                      f"{since:%H:%M:%S}", {**counts, "error_rate": round(rate, 3)})  # fmt: skip
        elif state == State.HALF_OPEN and row.state == State.HALF_OPEN:
            if fresh_errors:
                _open(row, now, f"a probe failed ({fresh_errors} errors)", dict(fresh))
            elif fresh.get("ok"):
                row.probe_successes += fresh["ok"]
                if row.probe_successes >= settings.ROUTING_PROBES_TO_CLOSE:
                    row.state, row.state_since, row.next_probe_at = State.CLOSED, now, None
                    _event(row, ProviderHealthEvent.Kind.CLOSE,
                           f"{row.probe_successes} probes succeeded", dict(fresh))  # fmt: skip
                    row.probe_successes = 0
                row.save()


def _open(row, now, reason, figures):
    row.state, row.state_since = ProviderHealth.State.OPEN, now
    row.next_probe_at, row.probe_successes = None, 0
    row.save()
    _event(row, ProviderHealthEvent.Kind.OPEN, reason, figures)


def claim_probe(provider: str, now=None) -> bool:
    """Take the next probe slot of a half-open provider (at most one per
    ROUTING_PROBE_INTERVAL_SECONDS across all senders). An open circuit whose open time has
    passed becomes half-open here, with its audit event."""
    now = now or timezone.now()
    State = ProviderHealth.State
    with transaction.atomic():
        row = ProviderHealth.objects.select_for_update().filter(pk=provider).first()
        if row is None or row.state == State.CLOSED:
            return False
        if row.effective_state(now) != State.HALF_OPEN:
            return False
        if row.state == State.OPEN:
            row.state, row.state_since, row.probe_successes = State.HALF_OPEN, now, 0
            _event(row, ProviderHealthEvent.Kind.HALF_OPEN,
                   f"open for {settings.ROUTING_CIRCUIT_OPEN_SECONDS}s: probing")  # fmt: skip
        elif row.next_probe_at and row.next_probe_at > now:
            return False
        row.next_probe_at = now + timedelta(seconds=settings.ROUTING_PROBE_INTERVAL_SECONDS)
        row.save()
    return True


def states() -> dict:
    """{provider: ProviderHealth}, cached ROUTING_HEALTH_CACHE_SECONDS per process."""
    now = time.monotonic()
    if _states["rows"] is None or now - _states["at"] > settings.ROUTING_HEALTH_CACHE_SECONDS:
        _states["rows"] = {row.provider: row for row in ProviderHealth.objects.all()}
        _states["at"] = now
    return _states["rows"]


def reset_caches():
    """Forget this process's cached states and pending counts (tests, after a restore)."""
    with _lock:
        _pending.clear()
        _clock.update(flushed=0.0, receipts=0.0)
    _states["rows"] = None


# --- Receipts: demotion ------------------------------------------------------------------------


def receipt_figures(provider: str, now) -> dict:
    """Delivery rate and sent -> delivered latency p95 of the provider's messages sent in the
    last ROUTING_RECEIPT_WINDOW_MINUTES. A message still `sent` counts in the latency with its
    age so far (a lower bound), so a provider whose receipts stop coming shows it."""
    window = timedelta(minutes=settings.ROUTING_RECEIPT_WINDOW_MINUTES)
    since = now - window
    rows = (
        Message.objects.filter(
            direction=Direction.OUTBOUND,
            provider=provider,
            sent_at__gte=since,
            sent_at__lte=now,
            # bounds the scan to the (provider, created_at) index; a message scheduled further
            # ahead than one window is left out of the sample
            created_at__gte=since - window,
        )  # fmt: skip
        .order_by("-sent_at")
        .values_list("status", "sent_at", "completed_at")[: settings.ROUTING_RECEIPT_SAMPLE_MAX]
    )
    delivered = final = 0
    latencies = []
    for status, sent_at, completed_at in rows:
        if status == Status.DELIVERED:
            delivered += 1
            final += 1
            if completed_at:
                latencies.append(max(0.0, (completed_at - sent_at).total_seconds()))
        elif status in (Status.FAILED, Status.EXPIRED):
            final += 1
        elif status == Status.SENT:
            latencies.append((now - sent_at).total_seconds())
    latencies.sort()
    p95 = latencies[math.ceil(0.95 * len(latencies)) - 1] if latencies else None
    return {
        "sample": len(latencies) + final - delivered,
        "final": final,
        "delivered": delivered,
        "delivery_rate": delivered / final if final else None,
        "latency_p95": p95,
    }


def evaluate_receipts(now=None) -> None:
    """Demote (weight x ROUTING_DEMOTE_FACTOR) a provider whose delivery rate fell below
    ROUTING_DEMOTE_DELIVERY_RATE or whose latency p95 rose above ROUTING_DEMOTE_LATENCY_P95
    seconds, over at least ROUTING_RECEIPT_MIN_SAMPLE messages; restore it when both recover.
    One sender per interval does the work (the row's receipts_checked_at)."""
    now = now or timezone.now()
    interval = timedelta(seconds=settings.ROUTING_RECEIPT_EVALUATE_SECONDS)
    # The counters are needed for the circuit window and the admin's last hour, no longer.
    keep = max(3600, settings.ROUTING_HEALTH_WINDOW_SECONDS) + 3600
    ProviderSendBucket.objects.filter(slice_start__lt=now - timedelta(seconds=keep)).delete()
    for provider in providers.enabled_names():
        with transaction.atomic():
            row = _locked_row(provider, now)
            if row.receipts_checked_at and now - row.receipts_checked_at < interval * 0.9:
                continue
            figures = receipt_figures(provider, now)
            row.receipts_checked_at = now
            row.receipt_sample = figures["sample"]
            row.delivery_rate, row.latency_p95 = figures["delivery_rate"], figures["latency_p95"]
            enough = figures["sample"] >= settings.ROUTING_RECEIPT_MIN_SAMPLE
            slow = figures["latency_p95"] is not None and (
                figures["latency_p95"] > settings.ROUTING_DEMOTE_LATENCY_P95
            )
            failing = figures["delivery_rate"] is not None and (
                figures["delivery_rate"] < settings.ROUTING_DEMOTE_DELIVERY_RATE
            )
            reasons = []
            if slow:
                reasons.append(f"latency p95 {figures['latency_p95']:.0f}s > "
                               f"{settings.ROUTING_DEMOTE_LATENCY_P95:.0f}s")  # fmt: skip
            if failing:
                reasons.append(f"delivery rate {figures['delivery_rate']:.0%} < "
                               f"{settings.ROUTING_DEMOTE_DELIVERY_RATE:.0%}")  # fmt: skip
            if enough and reasons and not row.demoted:
                row.demoted = True
                _event(row, ProviderHealthEvent.Kind.DEMOTE, "; ".join(reasons), figures)
            elif enough and not reasons and row.demoted:
                row.demoted = False
                _event(row, ProviderHealthEvent.Kind.RESTORE, "receipts recovered", figures)
            row.save()


# --- Reads (the admin's routing page and metrics) ----------------------------------------------


def snapshot(now=None) -> list:
    """One dict per provider (enabled or with a health row), for the admin and for metrics:
    provider, state ("closed" | "open" | "half_open", as routing sees it now), state_since,
    demoted (bool), weight_factor (1.0, or ROUTING_DEMOTE_FACTOR when demoted), last_hour
    ({ok, http_5xx, timeouts, refused, throttled, rejected} send counts), delivery_rate (0..1 or
    None), latency_p95 (seconds or None), receipt_sample, receipts_checked_at."""
    now = now or timezone.now()
    rows = {row.provider: row for row in ProviderHealth.objects.all()}
    names = list(dict.fromkeys([*providers.enabled_names(), *sorted(rows)]))
    hour = now - timedelta(hours=1)
    sums = defaultdict(lambda: dict.fromkeys(OUTCOMES, 0))
    for item in (
        ProviderSendBucket.objects.filter(slice_start__gte=hour)
        .values("provider")
        .annotate(**{f"s_{k}": Sum(k) for k in OUTCOMES})
    ):
        sums[item["provider"]] = {k: item[f"s_{k}"] or 0 for k in OUTCOMES}
    result = []
    for name in names:
        row = rows.get(name)
        result.append(
            {
                "provider": name,
                "state": row.effective_state(now) if row else "closed",
                "state_since": row.state_since if row else None,
                "demoted": bool(row and row.demoted),
                "weight_factor": settings.ROUTING_DEMOTE_FACTOR if row and row.demoted else 1.0,
                "last_hour": sums[name],
                "delivery_rate": row.delivery_rate if row else None,
                "latency_p95": row.latency_p95 if row else None,
                "receipt_sample": row.receipt_sample if row else 0,
                "receipts_checked_at": row.receipts_checked_at if row else None,
            }
        )
    return result
