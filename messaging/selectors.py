"""The read side: queries for the staff admin and the delivery dashboard.

Everything here has to stay fast with millions of messages on PostgreSQL: lookups are exact
matches on indexed columns, counts are estimated or capped, and the dashboard is two GROUP BY
passes over one period that parallel workers share, with latency percentiles estimated from a
histogram (never a Python loop over rows, except the SQLite fallback, which computes exact
percentiles and only exists for development databases).
"""

import bisect
import contextlib
import math
import uuid
from datetime import timedelta
from decimal import Decimal

from django.db import connection, transaction
from django.db.models import (
    Count,
    Q,
    Sum,
)
from django.db.models.functions import Trunc
from django.utils import timezone

from messaging.models import (
    Client,
    Direction,
    Message,
    MessagePart,
    OptOut,
    OptOutChange,
    StatusEvent,
    WebhookRequest,
)
from messaging.phone import normalise_loose
from messaging.status import Status

# --- The message changelist ---------------------------------------------------------------------

# A search matches at most this many parts by provider id (one message has a handful).
PART_MATCH_LIMIT = 100


def search_messages(queryset, term: str):
    """Exact search on indexed columns: a number (normalised to E.164, so '+44 7700 900123' and
    '447700900123' both match), our id, the provider's id (message or part), our client
    reference, or a client's slug. Never LIKE or icontains: those cannot use the indexes at a
    million rows."""
    term = (term or "").strip()
    if not term:
        return queryset
    number = normalise_loose(term)
    query = (
        Q(to_number=number)
        | Q(from_number=number)
        | Q(provider_message_id=term)
        | Q(client_reference=term[:100])
    )
    with contextlib.suppress(ValueError):
        query |= Q(pk=uuid.UUID(term))
    # Resolved first, as a short list: `OR id IN (subquery)` would defeat the bitmap OR of the
    # other indexes and make PostgreSQL scan the table.
    part_owners = list(
        MessagePart.objects.filter(provider_message_id=term).values_list("message_id", flat=True)[
            :PART_MATCH_LIMIT
        ]
    )
    if part_owners:
        query |= Q(pk__in=part_owners)
    # A client's slug: that client's messages (resolved to its id first, like the parts).
    client_id = Client.objects.filter(slug=term[:50]).values_list("pk", flat=True).first()
    if client_id is not None:
        query |= Q(client_id=client_id)
    return queryset.filter(query)


def estimated_row_count(model) -> int | None:
    """PostgreSQL's own estimate of a table's rows (kept fresh by autovacuum's ANALYZE), or
    None where there is no cheap estimate (SQLite, or a table never analysed)."""
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
            [model._meta.db_table],
        )
        row = cursor.fetchone()
    if not row or row[0] is None or row[0] < 0:
        return None
    return int(row[0])


def distinct_error_codes(limit: int = 40) -> list:
    """The error codes present on messages, for the changelist filter. On PostgreSQL a
    recursive "loose index scan" over msg_error_code_idx visits one index entry per distinct
    code instead of every row (a few index probes, well under a millisecond), so the answer
    needs no cache and is never stale."""
    if connection.vendor == "postgresql":
        table = connection.ops.quote_name(Message._meta.db_table)
        sql = f"""
            WITH RECURSIVE codes(code) AS (
                (SELECT error_code FROM {table} WHERE error_code > '' ORDER BY error_code LIMIT 1)
                UNION ALL
                SELECT (SELECT error_code FROM {table} WHERE error_code > codes.code
                        ORDER BY error_code LIMIT 1)
                FROM codes WHERE codes.code IS NOT NULL
            )
            SELECT code FROM codes WHERE code IS NOT NULL LIMIT %s
        """  # noqa: S608 - the table name comes from the model, not from input
        with connection.cursor() as cursor:
            cursor.execute(sql, [limit])
            return [row[0] for row in cursor.fetchall()]
    return list(
        Message.objects.exclude(error_code="")
        .order_by("error_code")
        .values_list("error_code", flat=True)
        .distinct()[:limit]
    )


# --- One message ---------------------------------------------------------------------------------


def message_timeline(message) -> list:
    """Every StatusEvent of a message, oldest first, with its actor (one query)."""
    return list(
        StatusEvent.objects.filter(message=message)
        .select_related("actor")
        .order_by("received_at", "id")
    )


def message_lineage(message) -> dict:
    """The message this one resends, and the resends of this one (newest last)."""
    return {
        "resend_of": (
            Message.objects.only("id", "status", "provider", "created_at").get(
                pk=message.resend_of_id
            )
            if message.resend_of_id
            else None
        ),
        "resends": list(
            message.resends.only("id", "status", "provider", "created_at", "resend_reason")
            .select_related(None)
            .order_by("created_at")
        ),
    }


def existing_resends(messages) -> dict:
    """The resends of each of these messages, {original id: [copies, oldest first]}, in one
    query: what a resend confirmation shows so that nobody sends the same text twice unaware."""
    found = {}
    copies = (
        Message.objects.filter(resend_of__in=[m.pk for m in messages])
        .only("id", "status", "provider", "created_at", "resend_of_id", "resend_reason")
        .order_by("created_at", "id")
    )
    for copy in copies:
        found.setdefault(copy.resend_of_id, []).append(copy)
    return found


# --- CSV export ----------------------------------------------------------------------------------

# The body is only exported for staff with its own permission (export_message_body): exports
# leave the system, and message text is personal data that the logs never carry either.
EXPORT_COLUMNS = (
    ("id", "id"),
    ("created_at", "created_at"),
    ("client", "client__slug"),
    ("direction", "direction"),
    ("to", "to_number"),
    ("from", "from_number"),
    ("provider", "provider"),
    ("provider_message_id", "provider_message_id"),
    ("client_reference", "client_reference"),
    ("status", "status"),
    ("error_code", "error_code"),
    ("error_text", "error_text"),
    ("segments", "segments"),
    ("encoding", "encoding"),
    ("price", "price"),
    ("currency", "currency"),
    ("attempts", "attempts"),
    ("sent_at", "sent_at"),
    ("completed_at", "completed_at"),
    ("resend_of", "resend_of_id"),
    ("created_by", "created_by__username"),
)
BODY_COLUMN = ("body", "body")
EXPORT_CHUNK_SIZE = 2000


def export_columns(*, with_body: bool = False) -> tuple:
    return EXPORT_COLUMNS + ((BODY_COLUMN,) if with_body else ())


def export_rows(queryset, columns=EXPORT_COLUMNS, chunk_size: int = EXPORT_CHUNK_SIZE):
    """Tuples for the CSV export, streamed from a server-side cursor on PostgreSQL: plain
    values, never model instances, so memory stays flat at any size. The client's slug and the
    creating user's username come by two LEFT JOINs on primary keys, not a query per row."""
    return queryset.values_list(*(column for _, column in columns)).iterator(chunk_size=chunk_size)


# --- Webhook evidence ---------------------------------------------------------------------------


def failed_auth_counts(since=None) -> dict:
    """Failed webhook authentications per provider (all time, or since a moment)."""
    rows = WebhookRequest.objects.filter(
        authenticated=False, state=WebhookRequest.State.UNAUTHENTICATED
    )
    if since is not None:
        rows = rows.filter(received_at__gte=since)
    counts = rows.values("provider").annotate(n=Count("id")).order_by("provider")
    return {row["provider"]: row["n"] for row in counts}


# --- The dashboard -------------------------------------------------------------------------------

PERIODS = {
    "24h": (timedelta(hours=24), "hour"),
    "7d": (timedelta(days=7), "day"),
    "30d": (timedelta(days=30), "day"),
}
DEFAULT_PERIOD = "7d"
# Outcomes a delivery rate is computed over: messages still in flight are not counted yet.
OUTCOMES = (Status.DELIVERED, Status.FAILED, Status.EXPIRED, Status.REJECTED, Status.UNKNOWN)
TOP_ERRORS = 10


# Raised for the dashboard's transaction only: pass 1's hash table holds ~10^4 groups per worker.
DASHBOARD_WORK_MEM = "64MB"
FRACTIONS = (0.5, 0.95)

# --- Receipt latency percentiles from a histogram -------------------------------------------------
#
# An exact percentile needs every latency sorted (percentile_cont over ~800k rows), which cannot
# run in parallel workers and dominated the 30-day page. Instead one GROUP BY pass puts each
# latency into a log-scale bucket whose edges grow by LATENCY_BUCKET_RATIO and keeps, per
# (provider, bucket), the count, the smallest and the largest value. The percentile's rank is
# then located in Python (percentiles_from_histogram) and interpolated linearly between the
# bucket's min and max.
#
# Error bound: a bucket's values all lie within [r^k, r^(k+1)), so max < min * r. The estimate
# for a rank and the true value at that rank both lie in [min, max] of its bucket, so each is
# within (r - 1) = 2 % of the true value; percentile_cont's interpolation between two ranks is
# a convex combination, so the median and p95 are within 2 % too (relative to |value|; a value
# of exactly 0 has its own bucket and is exact). The first and last rank of a bucket are its min
# and max exactly, so ranks that straddle two buckets, and any bucket holding one or two values,
# are exact: small samples come out exactly as percentile_cont would give them.
LATENCY_BUCKET_RATIO = 1.02
LATENCY_ERROR_BOUND = LATENCY_BUCKET_RATIO - 1
_LOG_RATIO = math.log(LATENCY_BUCKET_RATIO)
# Bucket ids must sort like the values they hold. Timestamps have microsecond resolution, so a
# positive latency is >= 1e-6 s and its bucket >= floor(ln(1e-6) / ln 1.02) = -698; zero and
# negative latencies (a provider clock behind ours) get ids far below that, mirrored by |value|.
_ZERO_BUCKET = -10_000
_NEGATIVE_BASE = -20_000


def latency_bucket(seconds: float) -> int:
    """The histogram bucket of a latency: the Python twin of LATENCY_BUCKET_SQL."""
    if seconds > 0:
        return math.floor(math.log(seconds) / _LOG_RATIO)
    if seconds < 0:
        return _NEGATIVE_BASE - math.floor(math.log(-seconds) / _LOG_RATIO)
    return _ZERO_BUCKET


def percentiles_from_histogram(buckets, fractions=FRACTIONS) -> list:
    """percentile_cont estimates from (bucket, count, min, max) rows, one value per fraction
    (None for an empty histogram). Within LATENCY_ERROR_BOUND of the exact value (see above)."""
    rows = sorted(row for row in buckets if row[1])
    if not rows:
        return [None for _ in fractions]
    starts, rank = [], 0
    for _, count, _, _ in rows:
        starts.append(rank)
        rank += count
    total = rank

    def value_at(rank: int) -> float:
        # The bucket holding this rank (0-based): the last one starting at or before it.
        i = bisect.bisect_right(starts, rank) - 1
        _, count, low, high = rows[i]
        if count == 1:
            return low
        return low + (high - low) * (rank - starts[i]) / (count - 1)

    result = []
    for fraction in fractions:
        position = fraction * (total - 1)
        low_rank, high_rank = math.floor(position), math.ceil(position)
        lower, upper = value_at(low_rank), value_at(high_rank)
        result.append(lower + (upper - lower) * (position - low_rank))
    return result


def percentile(sorted_values: list, fraction: float) -> float | None:
    """percentile_cont semantics (linear interpolation between the closest ranks), for SQLite."""
    if not sorted_values:
        return None
    position = fraction * (len(sorted_values) - 1)
    low, high = math.floor(position), math.ceil(position)
    lower, upper = sorted_values[low], sorted_values[high]
    return lower + (upper - lower) * (position - low)


def dashboard(period: str = DEFAULT_PERIOD, now=None, client=None) -> dict:
    """Every figure on the dashboard for messages created in the period (of one client, when
    given): on PostgreSQL two GROUP BY passes over the period's messages that parallel workers
    can share (counts, rates, spend and error codes; the latency histogram) and three small
    queries. Opt-outs and refused webhooks are not per client: they stay the whole system's."""
    if period not in PERIODS:
        period = DEFAULT_PERIOD
    span, bucket = PERIODS[period]
    now = now or timezone.now()
    since = now - span
    points = _buckets(since, now, bucket)

    with transaction.atomic():
        if connection.vendor == "postgresql":
            grouped, latency = _postgres_passes(since, now, points, client)
        else:
            grouped, latency = _portable_passes(since, now, bucket, client)

    by_status, spend, rate_cells, errors, total = {}, {}, {}, {}, 0
    for row in grouped:
        total += row["n"]
        by_status[row["status"]] = by_status.get(row["status"], 0) + row["n"]
        if row["spend"] is not None:
            key = (row["provider"], row["currency"] or "")
            spend[key] = spend.get(key, Decimal(0)) + row["spend"]
        if row["status"] in OUTCOMES:
            cell = rate_cells.setdefault((row["provider"], row["bucket"]), [0, 0])
            cell[1] += row["n"]
            if row["status"] == Status.DELIVERED:
                cell[0] += row["n"]
        if row["error_code"] and row["status"] != Status.CANCELLED:  # staff's, not an error
            key = (row["provider"], row["error_code"])
            errors[key] = errors.get(key, 0) + row["n"]

    top_errors = sorted(errors.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_ERRORS]
    return {
        "period": period,
        "bucket": bucket,
        "since": since,
        "until": now,
        "total": total,
        "by_status": _status_rows(by_status, total),
        "delivery_rate": _rate_series(rate_cells, points, bucket),
        "delivery_by_provider": _rate_totals(rate_cells),
        "latency": latency,
        "latency_error_bound": LATENCY_ERROR_BOUND,
        "top_errors": [
            {"provider": provider, "error_code": code, "n": n} for (provider, code), n in top_errors
        ],
        "spend": [
            {"provider": p, "currency": c, "amount": amount}
            for (p, c), amount in sorted(spend.items())
        ],
        "optouts": optout_figures(since),
        "failed_auth": failed_auth_counts(since),
    }


def _portable_passes(since, until, bucket: str, client=None):
    """SQLite (development databases): pass 1 through the ORM, exact percentiles in Python."""
    in_period = Message.objects.filter(created_at__gte=since, created_at__lte=until)
    if client is not None:
        in_period = in_period.filter(client=client)
    grouped = list(
        in_period.annotate(bucket=Trunc("created_at", bucket))
        .values("provider", "bucket", "status", "currency", "error_code")
        .annotate(n=Count("id"), spend=Sum("price"))
        .order_by()
    )
    return grouped, receipt_latency(in_period)


def _status_rows(by_status: dict, total: int) -> list:
    order = [s.value for s in Status]
    return [
        {"status": status, "count": n, "share": (n / total if total else 0.0)}
        for status, n in sorted(by_status.items(), key=lambda kv: order.index(kv[0]))
    ]


def _buckets(since, until, bucket: str) -> list:
    # Trunc truncates in the current time zone; the labels must too.
    step = timedelta(hours=1) if bucket == "hour" else timedelta(days=1)
    start = timezone.localtime(since).replace(minute=0, second=0, microsecond=0)
    if bucket == "day":
        start = start.replace(hour=0)
    points = []
    while start <= until:
        points.append(start)
        start += step
    return points


def _rate_series(cells: dict, points: list, bucket: str) -> dict:
    """{labels: [...], series: {provider: [rate or None per bucket]}}; None where a provider
    had no outcome in a bucket (a gap, not a 0% day). A cell's bucket is either the datetime
    Trunc gave (SQLite) or the 1-based position width_bucket gave (PostgreSQL)."""
    index = {_bucket_key(p): i for i, p in enumerate(points)}
    series = {}
    for (provider, when), (delivered, outcomes) in cells.items():
        values = series.setdefault(provider, [None] * len(points))
        i = when - 1 if isinstance(when, int) else index.get(_bucket_key(when))
        if i is not None and 0 <= i < len(points) and outcomes:
            values[i] = round(100.0 * delivered / outcomes, 2)
    fmt = "%Y-%m-%d %H:00" if bucket == "hour" else "%Y-%m-%d"
    return {"labels": [p.strftime(fmt) for p in points], "series": dict(sorted(series.items()))}


def _bucket_key(when):
    # Aware datetimes hash by their instant, whatever their tzinfo object.
    return when if timezone.is_aware(when) else timezone.make_aware(when)


def _rate_totals(cells: dict) -> list:
    totals = {}
    for (provider, _), (delivered, outcomes) in cells.items():
        cell = totals.setdefault(provider, [0, 0])
        cell[0] += delivered
        cell[1] += outcomes
    return [
        {
            "provider": provider,
            "delivered": delivered,
            "outcomes": outcomes,
            "rate": (100.0 * delivered / outcomes) if outcomes else None,
        }
        for provider, (delivered, outcomes) in sorted(totals.items())
    ]


def _delivered(in_period):
    return in_period.filter(
        status=Status.DELIVERED,
        direction=Direction.OUTBOUND,
        sent_at__isnull=False,
        completed_at__isnull=False,
    )


def receipt_latency(in_period) -> list:
    """Sent -> delivered seconds per provider, exact, computed in Python: count, median and p95
    (Message.sent_at to completed_at, the provider's timestamp on the delivered receipt). For
    SQLite development databases only; PostgreSQL uses the histogram pass."""
    durations = {}
    for provider, sent, done in _delivered(in_period).values_list(
        "provider", "sent_at", "completed_at"
    ):
        durations.setdefault(provider, []).append((done - sent).total_seconds())
    result = []
    for provider in sorted(durations):
        values = sorted(durations[provider])
        result.append(
            {
                "provider": provider,
                "n": len(values),
                "median": percentile(values, 0.5),
                "p95": percentile(values, 0.95),
            }
        )
    return result


# --- The dashboard on PostgreSQL -----------------------------------------------------------------
#
# Two GROUP BY passes, each one sequential scan of the period's messages. Both are raw SQL for two
# reasons the ORM cannot express:
#
# - The GROUP BY keys are computed inside a subquery that PostgreSQL must not flatten (a volatile
#   function that constant folding later removes, _FENCE, keeps it a subquery). Flattened, the
#   planner estimates the number of groups of width_bucket(created_at) or of the latency bucket
#   from the distinct values of created_at / completed_at (about one per row: 10^6 groups),
#   sizes a huge hash table and never considers parallel partial aggregation. As subquery
#   outputs, each computed key counts as ~200 values, close to the truth (31 days; ~300
#   latency buckets per provider), so each worker aggregates its share into a small hash table.
# - The day (or hour) is width_bucket(created_at, <the period's bucket starts>), a binary search
#   over ~31 timestamps, rather than date_trunc(... AT TIME ZONE ...), which converts every row's
#   time zone. The bucket starts come from _buckets(), in the current time zone, as before.
#
# JIT compilation is switched off for the transaction: the plans cost enough to trigger it, and
# compiling in the leader and every worker cost more than it saved here (measured: 1.2-1.5 s
# with JIT against 0.9-1.0 s without, for both passes).

_FENCE = "CASE WHEN false THEN clock_timestamp() END AS fence"

_PASS_1_SQL = """
SELECT provider, bucket, status, currency, error_code, count(*), sum(price)
FROM (
    SELECT provider, width_bucket(created_at, %(points)s::timestamptz[]) AS bucket, status,
           currency, error_code, price, {fence}
    FROM {table}
    WHERE created_at >= %(since)s AND created_at <= %(until)s {client}
) AS period
GROUP BY provider, bucket, status, currency, error_code
"""

# The Python twin of this bucket expression is latency_bucket(). The seconds are computed once,
# in the inner (also fenced) subquery: flattened, the expression would be evaluated three times
# per row (measured: 13 % more CPU for the pass).
LATENCY_BUCKET_SQL = f"""CASE
    WHEN seconds > 0 THEN floor(ln(seconds) / %(log_ratio)s)::int
    WHEN seconds < 0 THEN {_NEGATIVE_BASE} - floor(ln(-seconds) / %(log_ratio)s)::int
    ELSE {_ZERO_BUCKET} END"""

_LATENCY_SQL = """
SELECT provider, bucket, count(*), min(seconds), max(seconds)
FROM (
    SELECT provider, seconds, {bucket} AS bucket, {fence}
    FROM (
        SELECT provider, date_part('epoch', completed_at - sent_at) AS seconds, {fence}
        FROM {table}
        WHERE created_at >= %(since)s AND created_at <= %(until)s
          AND status = %(delivered)s AND direction = %(outbound)s
          AND sent_at IS NOT NULL AND completed_at IS NOT NULL {client}
    ) AS delivered
) AS bucketed
GROUP BY provider, bucket
"""


def _postgres_passes(since, until, points: list, client=None):
    table = connection.ops.quote_name(Message._meta.db_table)
    # Only added when a client is chosen, so the unfiltered plan stays the measured one.
    client_sql = "AND client_id = %(client)s" if client is not None else ""
    params = {
        "client": client.pk if client is not None else None,
        "since": since,
        "until": until,
        "points": points,
        "log_ratio": _LOG_RATIO,
        "delivered": Status.DELIVERED.value,
        "outbound": Direction.OUTBOUND.value,
    }
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL work_mem = %s", [DASHBOARD_WORK_MEM])
        cursor.execute("SET LOCAL jit = off")
        # Each worker hands the leader ~10^4 partial groups, not rows: the default cost per
        # gathered tuple (0.1) made the serial plan look as cheap, and the choice flipped with
        # every ANALYZE; at 0.01 the planner keeps the parallel plan it should.
        cursor.execute("SET LOCAL parallel_tuple_cost = 0.01")
        cursor.execute(_PASS_1_SQL.format(fence=_FENCE, table=table, client=client_sql), params)
        grouped = [
            {
                "provider": provider,
                "bucket": bucket,
                "status": status,
                "currency": currency,
                "error_code": error_code,
                "n": n,
                "spend": spend,
            }
            for provider, bucket, status, currency, error_code, n, spend in cursor.fetchall()
        ]
        sql = _LATENCY_SQL.format(
            bucket=LATENCY_BUCKET_SQL, fence=_FENCE, table=table, client=client_sql
        )
        cursor.execute(sql, params)
        histograms = {}
        for provider, bucket, n, low, high in cursor.fetchall():
            histograms.setdefault(provider, []).append((bucket, n, low, high))
    latency = []
    for provider in sorted(histograms):
        median, p95 = percentiles_from_histogram(histograms[provider], FRACTIONS)
        n = sum(row[1] for row in histograms[provider])
        latency.append({"provider": provider, "n": n, "median": median, "p95": p95})
    return grouped, latency


def optout_figures(since) -> dict:
    changes = (
        OptOutChange.objects.filter(created_at__gte=since)
        .values("action")
        .annotate(n=Count("id"))
        .order_by()
    )
    by_action = {row["action"]: row["n"] for row in changes}
    return {
        "current": OptOut.objects.count(),
        "opted_out": by_action.get(OptOutChange.Action.OPT_OUT, 0),
        "opted_in": by_action.get(OptOutChange.Action.OPT_IN, 0),
    }


# --- The API: every read is one client's -----------------------------------------------------


def messages_for(client):
    """The messages the API may show `client`: its own, outbound and inbound. The client is a
    required argument, not an optional filter, so no API read can be unscoped."""
    if client is None or client.pk is None:
        raise ValueError("messages_for needs a saved client")
    return Message.objects.filter(client=client).select_related("api_key")


def client_owning(number: str):
    """The client whose owned numbers (or sender ids) include `number`, or None. Clients
    are few and owned_numbers is a JSON list (no portable containment lookup on SQLite), so this
    reads the clients that own anything and compares normalised values."""
    wanted = normalise_loose(number or "").casefold()
    if not wanted:
        return None
    owners = Client.objects.exclude(owned_numbers=[]).order_by("pk")
    for client in owners:
        if any(normalise_loose(str(n)).casefold() == wanted for n in client.owned_numbers or ()):
            return client
    return None
