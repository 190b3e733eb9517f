"""Every Prometheus metric Herald exports, in one place (served at /metrics, messaging/ops.py).

Two kinds:

* Counters and histograms, incremented where the thing happens with a one-line call
  (`metrics.sends.labels(...).inc()`). Under several gunicorn workers and a separate sender
  process they must be summed across processes: with PROMETHEUS_MULTIPROC_DIR set (scripts/dev
  and the Procfile's gunicorn config set it) every process writes its values to files there and
  /metrics merges them (prometheus_client's multiprocess mode). The variable has to be in the
  environment before prometheus_client is imported, which is why it is an environment variable
  and not only a Django setting.
* Gauges derived from the database (queue depth and age, stored receipts waiting, worker
  heartbeats, provider circuits and demotion), computed when Prometheus scrapes, by
  `DatabaseCollector`, from small queries on partial indexes. They need no instrumentation
  and are right whichever process answers.

Labels are bounded: `provider` is one of the provider names Herald knows (anything else is
"other"), outcomes and statuses are our own enumerations; never an id, a number or a string a
client chose.
"""

import os
import time
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, Max, Min
from django.utils import timezone
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from config.providers import PROVIDER_SPECS

if settings.PROMETHEUS_MULTIPROC_DIR:  # each process writes its values there, from the first
    os.makedirs(settings.PROMETHEUS_MULTIPROC_DIR, exist_ok=True)

# --- counters and histograms (one-line calls at the sites) -------------------------------------

sends = Counter(
    "herald_sends_total",
    "Send attempts by provider and the status they left the message in "
    "(sent, queued = retry later, rejected, failed, unknown = ambiguous).",
    ["provider", "outcome"],
)
provider_request_seconds = Histogram(
    "herald_provider_request_duration_seconds",
    "Time of one HTTP send request to a provider, until its response (or error).",
    ["provider"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
receipts = Counter(
    "herald_receipts_total",
    "Delivery receipts processed, by provider and outcome "
    "(applied, duplicate, ignored = out of order or after a final status, unmatched = kept "
    "until its message is known).",
    ["provider", "outcome"],
)
receipt_latency_seconds = Histogram(
    "herald_receipt_latency_seconds",
    "From the provider accepting a message (sent) to the receipt that made it final.",
    ["provider"],
    buckets=(1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600),
)
webhook_auth_failures = Counter(
    "herald_webhook_auth_failures_total",
    "Webhook requests refused because they failed authentication (answered 401).",
    ["provider", "kind"],
)
pacing_wait_seconds = Histogram(
    "herald_pacing_wait_seconds",
    "Time a sender waited for its provider's next send slot (RATE_LIMIT pacing).",
    ["provider"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
)

OUTCOMES = ("sent", "queued", "delivered", "rejected", "failed", "unknown", "expired", "other")
RECEIPT_OUTCOMES = ("applied", "duplicate", "ignored", "unmatched")
WEBHOOK_KINDS = ("status", "inbound")


def provider_label(name) -> str:
    """A provider name as a label value: only names Herald knows (a bounded set)."""
    return name if name in PROVIDER_SPECS else "other"


def send_outcome(provider, status) -> None:
    sends.labels(provider_label(provider), _one_of(str(status), OUTCOMES)).inc()


def receipt(provider, outcome, count=1) -> None:
    receipts.labels(provider_label(provider), _one_of(str(outcome), RECEIPT_OUTCOMES)).inc(count)


def receipt_final(provider, message) -> None:
    """Observe sent -> final for a message a receipt has just moved (skips non-final ones)."""
    from messaging.status import is_terminal

    sent_at, done_at = message.sent_at, message.completed_at
    if sent_at and done_at and is_terminal(message.status):
        seconds = max(0.0, (done_at - sent_at).total_seconds())
        receipt_latency_seconds.labels(provider_label(provider)).observe(seconds)


def webhook_auth_failed(provider, kind) -> None:
    webhook_auth_failures.labels(provider_label(provider), _one_of(kind, WEBHOOK_KINDS)).inc()


def _one_of(value, allowed) -> str:
    return value if value in allowed else "other"


# --- gauges from the database, computed at scrape time -----------------------------------------


def queue_families(now):
    """Queued outbound messages per provider, and how late the oldest due one is (seconds since
    its next_attempt_at: scheduled messages not yet due do not count as waiting)."""
    from messaging.models import Message
    from messaging.status import Status

    depth = GaugeMetricFamily(
        "herald_queue_messages", "Outbound messages queued (due or scheduled).", labels=["provider"]
    )
    age = GaugeMetricFamily(
        "herald_queue_oldest_age_seconds",
        "Seconds the oldest due queued message has waited past its due time (0: none waiting).",
        labels=["provider"],
    )
    queued = Message.objects.filter(status=Status.QUEUED)  # the partial index msg_due_idx
    by_provider = queued.values("provider").annotate(n=Count("id"))
    counts = {row["provider"]: row["n"] for row in by_provider}
    oldest = dict(
        queued.filter(next_attempt_at__lte=now)
        .values("provider")
        .annotate(first=Min("next_attempt_at"))
        .values_list("provider", "first")
    )
    for name in sorted(set(PROVIDER_SPECS) & _enabled() | set(map(provider_label, counts))):
        n = sum(v for k, v in counts.items() if provider_label(k) == name)
        firsts = [v for k, v in oldest.items() if provider_label(k) == name and v]
        depth.add_metric([name], n)
        age.add_metric([name], max(0.0, (now - min(firsts)).total_seconds()) if firsts else 0.0)
    return [depth, age]


def receipt_families(now):
    """Stored webhook requests waiting to be applied (store-then-apply), and receipts kept
    because their message is not known yet."""
    from messaging.models import UnmatchedReport, WebhookRequest

    waiting = GaugeMetricFamily(
        "herald_receipts_pending",
        "Stored webhook requests not applied yet (state received).",
        labels=["provider"],
    )
    age = GaugeMetricFamily(
        "herald_receipts_pending_oldest_age_seconds",
        "Seconds since the oldest stored webhook request not yet applied arrived (0: none).",
        labels=["provider"],
    )
    rows = (
        WebhookRequest.objects.filter(state=WebhookRequest.State.RECEIVED)  # webhook_pending_idx
        .values("provider")
        .annotate(n=Count("id"), first=Min("received_at"))
    )
    found = {}
    for row in rows:
        n, first = found.get(provider_label(row["provider"]), (0, None))
        first = min(filter(None, [first, row["first"]]), default=None)
        found[provider_label(row["provider"])] = (n + row["n"], first)
    for name in sorted(set(found) | (set(PROVIDER_SPECS) & _enabled())):
        n, first = found.get(name, (0, None))
        waiting.add_metric([name], n)
        age.add_metric([name], max(0.0, (now - first).total_seconds()) if first else 0.0)
    unmatched = GaugeMetricFamily(
        "herald_receipts_unmatched",
        "Receipts kept because their message is not known yet (applied when it appears).",
    )
    unmatched.add_metric([], UnmatchedReport.objects.filter(matched_at__isnull=True).count())
    return [waiting, age, unmatched]


def heartbeat_families(now):
    """Seconds since each kind of worker last recorded a heartbeat (messaging/heartbeat.py)."""
    from messaging.models import WorkerHeartbeat

    age = GaugeMetricFamily(
        "herald_worker_heartbeat_age_seconds",
        "Seconds since the most recent heartbeat of any worker of this kind.",
        labels=["kind"],
    )
    alive = GaugeMetricFamily(
        "herald_workers",
        "Workers of this kind that heartbeated within READINESS_HEARTBEAT_SECONDS.",
        labels=["kind"],
    )
    recent = now - timedelta(seconds=settings.READINESS_HEARTBEAT_SECONDS)
    for kind in WorkerHeartbeat.Kind.values:
        rows = WorkerHeartbeat.objects.filter(kind=kind)
        last = rows.aggregate(last=Max("last_seen"))["last"]
        # No worker of this kind ever: +Inf, so `> N` alerts fire.
        age.add_metric([kind], (now - last).total_seconds() if last else float("inf"))
        alive.add_metric([kind], rows.filter(last_seen__gte=recent).count())
    return [age, alive]


def callback_families(now):
    """Status callbacks waiting (pending) and given up (failed) per client, and how long the
    oldest pending one has waited since its event. Labelled by client slug: clients are created
    by operators, so the set is bounded."""
    from messaging.models import Callback

    waiting = GaugeMetricFamily(
        "herald_callbacks_pending", "Status callbacks not delivered yet.", labels=["client"]
    )
    failed = GaugeMetricFamily(
        "herald_callbacks_failed",
        "Status callbacks given up on after CALLBACK_MAX_AGE_HOURS (replayable in the admin).",
        labels=["client"],
    )
    age = GaugeMetricFamily(
        "herald_callbacks_pending_oldest_age_seconds",
        "Seconds since the event of the oldest pending callback (0: none).",
        labels=["client"],
    )
    rows = (
        Callback.objects.filter(state__in=[Callback.State.PENDING, Callback.State.FAILED])
        .order_by()
        .values("client__slug", "state")
        .annotate(n=Count("id"), first=Min("occurred_at"))
    )
    for row in rows:
        slug = row["client__slug"]
        if row["state"] == Callback.State.PENDING:
            waiting.add_metric([slug], row["n"])
            age.add_metric([slug], max(0.0, (now - row["first"]).total_seconds()))
        else:
            failed.add_metric([slug], row["n"])
    return [waiting, failed, age]


CIRCUIT_STATES = ("closed", "open", "half_open")


def routing_families(now):
    """Each provider's circuit and demotion as routing sees them now (provider_health.snapshot,
    the same figures as the admin's routing page). The circuit is one series per state, 1 for
    the current one, so `herald_provider_circuit_state{state="open"} == 1` alerts directly."""
    from messaging.services import provider_health

    circuit = GaugeMetricFamily(
        "herald_provider_circuit_state",
        "1 for the provider's current circuit state (closed, open, half_open), 0 for the others.",
        labels=["provider", "state"],
    )
    demoted = GaugeMetricFamily(
        "herald_provider_demoted",
        "1 when the provider is demoted (receipt latency or delivery rate), its route weight "
        "multiplied by ROUTING_DEMOTE_FACTOR.",
        labels=["provider"],
    )
    for row in provider_health.snapshot(now):
        name = row["provider"]
        if name not in PROVIDER_SPECS:  # a health row of a provider Herald no longer knows
            continue
        for state in CIRCUIT_STATES:
            circuit.add_metric([name, state], 1 if row["state"] == state else 0)
        demoted.add_metric([name], 1 if row["demoted"] else 0)
    return [circuit, demoted]


#: The scrape-time gauge sources, each `fn(now) -> [metric families]`. To add one, write a
#: function like queue_families and append it here; label by client slug only where clients are
#: bounded.
DATABASE_GAUGES = [
    queue_families,
    receipt_families,
    heartbeat_families,
    callback_families,
    routing_families,
]


class DatabaseCollector:
    """Computes the database gauges when /metrics is scraped. A source that fails (the
    database is down) is reported by herald_scrape_error instead of failing the scrape."""

    def collect(self):
        now = timezone.now()
        started = time.perf_counter()
        errors = GaugeMetricFamily(
            "herald_scrape_error",
            "1 when the source of database gauges failed on this scrape.",
            labels=["source"],
        )
        for source in DATABASE_GAUGES:
            name = source.__name__.removesuffix("_families")
            try:
                families = source(now)
            except Exception:  # the database is down: say so, keep the process metrics
                errors.add_metric([name], 1)
                continue
            errors.add_metric([name], 0)
            yield from families
        yield errors
        duration = GaugeMetricFamily(
            "herald_scrape_duration_seconds", "Time the database gauges took on this scrape."
        )
        duration.add_metric([], time.perf_counter() - started)
        yield duration


def _enabled() -> set:
    return set(settings.SMS_PROVIDERS_ENABLED)
