"""Noise-free costs per receipt, in one process: database round trips (counted in libpq's own
protocol trace: one per simple Query or extended-protocol Sync), commits, WAL bytes
(pg_current_wal_lsn before and after; cluster-wide, so the minimum of several repeats is kept)
and Python CPU (time.process_time, Django's test client included; the bare view's figure is
the client's share).

    .venv/bin/python bench/counts.py [--requests 300] [--repeats 3]

For: the bare view, the tutorial view, Herald's webhook in its default (deferred) mode, the
applier's work per receipt (batches of 200), Herald inline, and an Infobip 100-report request.
"""

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402

TRACE_LINE = re.compile(r"^F\t\d+\t(Query|Sync)\b", re.M)
COMMIT_LINE = re.compile(r'^F\t\d+\tQuery\t "COMMIT"', re.M)


class Traced:
    """Count round trips and commits of Django's connection while the block runs."""

    def __enter__(self):
        from django.db import connection

        connection.ensure_connection()
        self.pgconn = connection.connection.pgconn
        self.file = tempfile.NamedTemporaryFile("w+", delete=False)  # noqa: SIM115
        import psycopg

        self.pgconn.trace(self.file.fileno())
        self.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
        return self

    def __exit__(self, *exc):
        self.pgconn.untrace()
        self.file.flush()
        text = Path(self.file.name).read_text()
        os.unlink(self.file.name)
        self.round_trips = len(TRACE_LINE.findall(text))
        self.commits = len(COMMIT_LINE.findall(text))
        self.text = text


def wal_lsn() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
        return int(cursor.fetchone()[0])


def measure(name, count, do, per=1):
    """Run do(i) for i in range(count): per-unit round trips, commits, WAL bytes, CPU ms."""
    before_wal = wal_lsn()
    cpu = time.process_time()
    with Traced() as traced:
        for i in range(count):
            do(i)
    cpu = time.process_time() - cpu
    wal = wal_lsn() - before_wal
    units = count * per
    return {"round_trips": round(traced.round_trips / units, 2),
            "commits": round(traced.commits / units, 2),
            "wal_bytes": round(wal / units), "cpu_ms": round(1000 * cpu / units, 3)}  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from bench import infobip_wire

    env = common.setup(common.free_port(), SMS_PROVIDERS_ENABLED="sandbox,infobip",
                       DJANGO_SETTINGS_MODULE="bench.tutorial_settings",
                       **infobip_wire.ENV)  # fmt: skip
    import logging

    from django.conf import settings
    from django.test import Client

    from bench.ingest import infobip_requests, sandbox_requests, seed, tutorial_requests
    from messaging import applier

    del env
    logging.getLogger("herald").setLevel(logging.INFO)  # as served: one log line per receipt
    common.reset_tables()
    client = Client(HTTP_HOST="127.0.0.1")
    n, r = args.requests, args.repeats
    kinds = ["tutorial", "default", "inline"]
    pairs = {(k, i): seed("sandbox", n) for k in kinds for i in range(r)}
    infobip = {i: seed("infobip", n * 10, ours_as_provider_id=True) for i in range(r)}

    def split(raw: bytes):
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")[1:]
        headers = {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}
        return body, headers

    def poster(raws, path):
        prepared = [split(raw) for raw in raws]

        def do(i):
            body, headers = prepared[i]
            extra = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in headers.items()
                     if k.lower() not in ("content-type", "content-length", "host")}  # fmt: skip
            response = client.post(path, body, content_type=headers.get("Content-Type"),
                                   **extra)  # fmt: skip
            assert response.status_code < 300, response.content[:200]

        return do

    results = {k: [] for k in ("bare", "tutorial", "default", "applier", "inline", "infobip_100",
                               "infobip_applier")}  # fmt: skip
    for i in range(r):

        def bare(_):
            assert client.get("/bench/ok").status_code == 200

        results["bare"].append(measure("bare", n, bare))
        raws = list(tutorial_requests(pairs[("tutorial", i)], 80))
        results["tutorial"].append(measure("tutorial", n, poster(raws, "/bench/tutorial")))
        settings.WEBHOOK_APPLY_INLINE = False
        raws = list(sandbox_requests(pairs[("default", i)], 80))
        results["default"].append(measure("default", n, poster(raws, "/webhooks/sandbox/status/")))
        results["applier"].append(
            measure("applier", 1, lambda _: applier.drain(batch_size=200), per=n)
        )
        raws = list(infobip_requests(infobip[i], 80))[: n // 10]
        results["infobip_100"].append(
            measure("infobip", len(raws), poster(raws, "/webhooks/infobip/status/"), per=100)
        )
        results["infobip_applier"].append(
            measure(
                "infobip applier", 1, lambda _: applier.drain(batch_size=200), per=len(raws) * 100
            )  # fmt: skip
        )
        settings.WEBHOOK_APPLY_INLINE = True
        raws = list(sandbox_requests(pairs[("inline", i)], 80))
        results["inline"].append(measure("inline", n, poster(raws, "/webhooks/sandbox/status/")))
    summary = {}
    for kind, runs in results.items():
        summary[kind] = {
            "round_trips": runs[0]["round_trips"], "commits": runs[0]["commits"],
            "wal_bytes_min": min(x["wal_bytes"] for x in runs),
            "wal_bytes_median": statistics.median(x["wal_bytes"] for x in runs),
            "cpu_ms_median": statistics.median(x["cpu_ms"] for x in runs),
        }  # fmt: skip
    out = {"machine": common.machine(), "requests": n, "repeats": r, "per_receipt": summary,
           "runs": results}  # fmt: skip
    path = common.save("counts", out)
    print(json.dumps(summary, indent=1))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
