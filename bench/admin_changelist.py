"""The staff admin at scale on PostgreSQL: the Message changelist's latency at 10k and 1M
messages (median, p95 and their ratio; goal <= 2), the dashboard at 1M (goal < 1 s), and a
streamed CSV export of the whole table.

Messages are spread over the last 90 days (bench/seed.py). The dashboard is measured for each
period on that data, and once more on a worst case: all 1M messages inside the last 30 days,
so the 30-day view aggregates every row.

Requests go through a logged-in django.test.Client in this process: the full middleware stack,
the admin, its queries and the template rendering, without network noise. Rows are seeded in
SQL by bench/seed.py.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/herald_bench_admin \\
        .venv/bin/python bench/admin_changelist.py [--sizes 10000 1000000] [--runs 30]

With --dashboard-only the script seeds nothing: it measures the dashboard on whatever the
database holds (e.g. the worst case the full run leaves behind), so a change to the dashboard's
queries can be measured in a minute instead of re-seeding a million rows.
"""

import argparse
import os
import re
import resource
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlencode, urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHANGELIST = "/admin/messaging/message/"
DASHBOARD = "/admin/messaging/message/dashboard/"
EXPORT = "/admin/messaging/message/export.csv"


def configure(database_url: str):
    """Point bench.common at the database named in DATABASE_URL, then set Django up with the
    production settings (bench.settings) and migrate."""
    os.environ.setdefault(
        "LOG_LEVEL", "WARNING"
    )  # one JSON line per request would drown the output
    if database_url:
        os.environ["BENCH_DB"] = urlparse(database_url).path.lstrip("/")
    os.environ.setdefault("BENCH_DB", "herald_bench_admin")
    from bench import common

    common.DB_NAME = os.environ["BENCH_DB"]
    return common.setup(common.free_port())


def percentile(values, fraction):
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


class SqlTimer:
    """Sums the time spent in the database during a request (connection.execute_wrapper)."""

    def __init__(self):
        self.seconds = 0.0

    def __call__(self, execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.seconds += time.perf_counter() - started


def timed_get(client, url):
    started = time.perf_counter()
    response = client.get(url)
    if response.streaming:
        for _ in response.streaming_content:
            pass
    else:
        response.content  # noqa: B018 - rendered already; touch it like a server would
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise RuntimeError(f"GET {url} answered {response.status_code}")
    return elapsed, response


COUNT_SHOWN = re.compile(r'class="herald-count"[^>]*>\s*([^<]*?)\s*</span>')


def measure(client, url, runs, warmup=3):
    from django.db import connection, reset_queries
    from django.test.utils import CaptureQueriesContext

    for _ in range(warmup):
        timed_get(client, url)
    reset_queries()  # the capture counts from the log's length, which the request resets
    with CaptureQueriesContext(connection) as captured:
        _, response = timed_get(client, url)
    # Read now: the capture is a view of the connection's log, which the next request clears.
    queries = [q["sql"] for q in captured]
    times, db_times = [], []
    for _ in range(runs):
        timer = SqlTimer()
        with connection.execute_wrapper(timer):
            times.append(timed_get(client, url)[0])
        db_times.append(timer.seconds * 1000)
    html = response.content.decode()
    count = COUNT_SHOWN.search(html)
    return {
        "url": url,
        "median_ms": round(statistics.median(times), 1),
        "p95_ms": round(percentile(times, 0.95), 1),
        "db_median_ms": round(statistics.median(db_times), 2),
        "db_p95_ms": round(percentile(db_times, 0.95), 2),
        "queries": len(queries),
        "rows_shown": html.count('name="_selected_action"'),
        "count_shown": " ".join(count.group(1).split()) if count else None,
        "sql": queries,
    }


def scenarios():
    """Changelist URLs, with search terms taken from rows that exist at every size."""
    from messaging.models import Message

    sample = (
        Message.objects.filter(direction="outbound", status="delivered")
        .exclude(client_reference="")
        .order_by("created_at")
        .values("to_number", "provider_message_id", "client_reference", "created_at")
        .first()
    )
    day = sample["created_at"].date().isoformat()
    number = sample["to_number"]
    typed = f"{number[:3]} {number[3:7]} {number[7:]}"  # "+44 7911 012345": normalised
    return [
        ("unfiltered, page 1", CHANGELIST),
        ("unfiltered, page 20", f"{CHANGELIST}?p=20"),
        ("status = failed", f"{CHANGELIST}?status__exact=failed"),
        ("provider + status", f"{CHANGELIST}?provider=twilio&status__exact=delivered"),
        ("direction = inbound", f"{CHANGELIST}?direction__exact=inbound"),
        ("error code", f"{CHANGELIST}?error_code=30003"),
        ("date range (one day)", f"{CHANGELIST}?created_from={day}&created_to={day}"),
        ("search: number", f"{CHANGELIST}?{urlencode({'q': typed})}"),
        ("search: provider id", f"{CHANGELIST}?q={sample['provider_message_id']}"),
        ("search: client reference", f"{CHANGELIST}?q={sample['client_reference']}"),
    ]


def logged_in_client():
    from django.contrib.auth import get_user_model
    from django.test import Client

    User = get_user_model()
    user, _ = User.objects.get_or_create(
        username="bench-admin", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(user)
    return client


def export_all(client, url):
    """Stream a CSV export to the end, counting rows; with the peak RSS growth it caused."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    response = client.get(url)
    rows = sum(chunk.count(b"\n") for chunk in response.streaming_content) - 1
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "url": url,
        "rows": rows,
        "seconds": round(seconds, 1),
        "rows_per_second": round(rows / seconds),
        "peak_rss_growth_mib": round((after - before) / 1024, 1),
    }


def dashboard_only(runs):
    """The dashboard for each period on the rows already seeded, with the load around it."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*), min(created_at), max(created_at) FROM messaging_message")
        count, oldest, newest = cursor.fetchone()
    print(f"== dashboard on existing rows: {count:,} messages, {oldest} .. {newest}")
    client = logged_in_client()
    result = {"messages": count, "oldest": str(oldest), "newest": str(newest)}
    for period in ("24h", "7d", "30d"):
        load_before = os.getloadavg()
        result[period] = figures = measure(client, f"{DASHBOARD}?period={period}", runs, warmup=1)
        figures["load_average_before"] = load_before
        figures["load_average_after"] = os.getloadavg()
        print(
            f"  dashboard {period:4}  median {figures['median_ms']:7.1f} ms  "
            f"p95 {figures['p95_ms']:7.1f} ms  (db {figures['db_median_ms']:7.2f} ms)"
            f"  {figures['queries']} queries  load {load_before[0]:.1f}"
        )
    return result


def main():
    parser = argparse.ArgumentParser(description="Admin changelist and dashboard at scale")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--dashboard-runs", type=int, default=10)
    parser.add_argument("--no-export", action="store_true")
    parser.add_argument(
        "--dashboard-only",
        action="store_true",
        help="seed nothing: measure the dashboard on the rows already in the database",
    )
    parser.add_argument(
        "--no-worst-case",
        action="store_true",
        help="skip the dashboard run with every message inside the last 30 days",
    )
    args = parser.parse_args()

    configure(os.environ.get("DATABASE_URL", ""))
    from bench import common
    from bench.seed import seed

    result = {"machine": common.machine(), "runs": args.runs, "sizes": {}}
    if args.dashboard_only:
        result["dashboard_existing_rows"] = dashboard_only(args.dashboard_runs)
        args.sizes = []
    for size in args.sizes:
        print(f"== {size:,} messages")
        timings = seed(size)
        client = logged_in_client()
        entry = {"seed_seconds": timings, "changelist": {}, "dashboard": {}}
        entry["load_average_before"] = os.getloadavg()
        for name, url in scenarios():
            entry["changelist"][name] = figures = measure(client, url, args.runs)
            print(
                f"  {name:26} median {figures['median_ms']:7.1f} ms  p95 {figures['p95_ms']:7.1f}"
                f" ms  (db {figures['db_median_ms']:6.2f} / {figures['db_p95_ms']:6.2f} ms)"
                f"  {figures['queries']} queries  {figures['rows_shown']} rows"
                f"  ({figures['count_shown']})"
            )
        for period in ("24h", "7d", "30d"):
            entry["dashboard"][period] = figures = measure(
                client, f"{DASHBOARD}?period={period}", args.dashboard_runs, warmup=1
            )
            print(
                f"  dashboard {period:4}  median {figures['median_ms']:7.1f} ms  "
                f"p95 {figures['p95_ms']:7.1f} ms  (db {figures['db_median_ms']:7.2f} ms)"
                f"  {figures['queries']} queries"
            )
        if not args.no_export and size == max(args.sizes):
            entry["export"] = export_all(client, EXPORT)
            print(f"  CSV export: {entry['export']}")
        entry["load_average_after"] = os.getloadavg()
        result["sizes"][str(size)] = entry

    if not args.no_worst_case and args.sizes:
        size = max(args.sizes)
        print(f"== dashboard worst case: {size:,} messages, all in the last 30 days")
        seed(size, days=30, parts=False)
        client = logged_in_client()
        result["dashboard_worst_case"] = worst = {}
        for period in ("24h", "7d", "30d"):
            worst[period] = figures = measure(
                client, f"{DASHBOARD}?period={period}", args.dashboard_runs, warmup=1
            )
            print(
                f"  dashboard {period:4}  median {figures['median_ms']:7.1f} ms  "
                f"p95 {figures['p95_ms']:7.1f} ms  (db {figures['db_median_ms']:7.2f} ms)"
            )

    if len(args.sizes) >= 2:
        small, large = (result["sizes"][str(s)] for s in (min(args.sizes), max(args.sizes)))
        result["ratios"] = {
            name: {
                "median": round(
                    large["changelist"][name]["median_ms"] / small["changelist"][name]["median_ms"],
                    2,
                ),
                "p95": round(
                    large["changelist"][name]["p95_ms"] / small["changelist"][name]["p95_ms"], 2
                ),
            }
            for name in small["changelist"]
        }
        print("== ratio large/small (median, p95)")
        for name, ratio in result["ratios"].items():
            print(f"  {name:26} {ratio['median']:5.2f}  {ratio['p95']:5.2f}")
    result["load_average_end"] = os.getloadavg()
    result["command"] = (
        f"DATABASE_URL={os.environ.get('DATABASE_URL', '')} .venv/bin/python "
        f"bench/admin_changelist.py {' '.join(sys.argv[1:])}"
    ).strip()
    path = common.save("admin_changelist", result)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
