"""Status callbacks: delivery throughput, receipt-to-callback lag, and what emitting costs the
receipt path.

    .venv/bin/python bench/callbacks.py [--events 3000] [--rate 50] [--seconds 20] [--rounds 5]

Every part uses a local receiver (a threaded http.server on 127.0.0.1, ports 18200-18299) that
answers 200 after 10 ms, and the real worker (`manage.py run_callbacks` processes), on
PostgreSQL with the production settings (bench/common.py; CALLBACK_ALLOW_PRIVATE_NETWORKS=true
only so that the receiver may be on 127.0.0.1).

  throughput  `--events` message.status events, written by services.callbacks (as a receipt
              batch writes them) for 4 clients with one endpoint each, delivered by 1 and then
              2 worker processes: callbacks/s between the first and the last request received;
  lag         gunicorn takes signed sandbox receipts at a steady `--rate` for `--seconds`
              (applied inline, so each commits its callback), one worker delivers: time from
              the receipt's POST to its `delivered` callback reaching the receiver, p50/p95;
  receipts    the applier's batch path (`receipts.apply` on 200 reports in one transaction) and
              the one-receipt path (`receipts.apply_one`, as the inline webhook runs it),
              in interleaved rounds: emission switched off (patched to a no-op: the code
              before callbacks), no callback URL (one lookup query per batch), and every
              message with a URL (lookup, sequence query, bulk insert).
Figures go to stdout and bench/out/callbacks.json.
"""

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402

LATENCY = 0.010


class Receiver:
    """Answers 200 after LATENCY; records (wall time, parsed body) of every request."""

    def __init__(self):
        self.got, self.lock = [], threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                at = time.time()
                time.sleep(LATENCY)
                with receiver.lock:
                    receiver.got.append((at, body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        for port in range(18200, 18300):
            with contextlib.suppress(OSError):
                self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
                break
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def count(self):
        with self.lock:
            return len(self.got)

    def reset(self):
        with self.lock:
            self.got = []


def load():
    return round(os.getloadavg()[0], 2)


def make_clients(receiver, count):
    from messaging.models import Client
    from messaging.services import callbacks

    clients = []
    for k in range(count):
        client = Client.objects.create(name=f"bench-{k}", slug=f"bench-{k}-{uuid.uuid4().hex[:4]}")
        callbacks.configure_endpoint(client, receiver.url(f"/c{k}") if receiver else "")
        clients.append(client)
    return clients


def seed_sent(clients, per_client):
    """Messages in `sent` with one part each: [(message id, provider id, client)]."""
    from django.utils import timezone

    from messaging.models import Message, MessagePart

    now, rows = timezone.now(), []
    for client in clients:
        pairs = [(uuid.uuid4(), uuid.uuid4().hex) for _ in range(per_client)]
        Message.objects.bulk_create(
            Message(id=mid, client=client, to_number="+447700900123", body="bench",
                    provider="sandbox", provider_message_id=pid, status="sent", attempts=1,
                    sent_at=now)
            for mid, pid in pairs
        )  # fmt: skip
        MessagePart.objects.bulk_create(
            MessagePart(message_id=mid, index=0, provider="sandbox", provider_message_id=pid)
            for mid, pid in pairs
        )
        rows += [(mid, pid, client) for mid, pid in pairs]
    return rows


def worker(env, extra=None) -> subprocess.Popen:
    log = open(common.OUT / f"callbacks-worker-{uuid.uuid4().hex[:6]}.log", "wb")  # noqa: SIM115
    return subprocess.Popen(
        [str(common.PYTHON), "manage.py", "run_callbacks"], cwd=common.ROOT,
        env={**env, **(extra or {})}, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip


def stop(procs):
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def throughput(env, receiver, events, processes) -> dict:
    from django.db import connection

    from messaging.models import Callback
    from messaging.services import callbacks

    common.reset_tables()
    receiver.reset()
    clients = make_clients(receiver, 4)
    rows = seed_sent(clients, events // 4)
    for start in range(0, len(rows), 500):
        callbacks.emit_status_changes(
            callbacks.StatusChange(mid, "delivered") for mid, _, _ in rows[start : start + 500]
        )
    total = Callback.objects.count()
    connection.close()
    before = load()
    procs = [worker(env) for _ in range(processes)]
    deadline = time.monotonic() + 300
    try:
        while receiver.count() < total and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop(procs)
    times = sorted(at for at, _ in receiver.got)
    ids = {json.loads(body)["id"] for _, body in receiver.got}
    elapsed = times[-1] - times[0]
    return {
        "processes": processes, "events": total, "received": len(times), "distinct": len(ids),
        "seconds": round(elapsed, 2), "callbacks_per_s": round((len(times) - 1) / elapsed, 1),
        "load_before": before, "load_after": load(),
    }  # fmt: skip


def lag(env, receiver, rate, seconds) -> dict:
    import requests
    from django.db import connection

    from messaging.models import Callback
    from messaging.providers import get_provider
    from messaging.providers.sandbox import sign

    common.reset_tables()
    receiver.reset()
    [client] = make_clients(receiver, 1)
    count = int(rate * seconds)
    rows = seed_sent([client], count)
    secret = get_provider("sandbox").secrets("WEBHOOK_SECRET")[0]
    connection.close()
    port = common.free_port()
    posted, statuses = {}, []
    with common.Gunicorn(
        {**env, "WEBHOOK_APPLY_INLINE": "true", "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}"},
        port,
        3,
    ) as web:
        procs = [worker(env)]
        time.sleep(2)  # the worker's start-up is not lag
        before = load()
        local = threading.local()

        def post(mid, pid):
            session = getattr(local, "session", None) or requests.Session()
            local.session = session
            body = json.dumps({"message_id": pid, "status": "delivered", "error_code": "",
                               "timestamp": datetime.now(UTC).isoformat()}).encode()  # fmt: skip
            stamp = str(int(time.time()))
            headers = {"Content-Type": "application/json", "X-Sandbox-Timestamp": stamp,
                       "X-Sandbox-Signature": sign(secret, stamp, body)}  # fmt: skip
            posted[str(mid)] = time.time()
            statuses.append(session.post(f"{web.url}/webhooks/sandbox/status/", data=body,
                                         headers=headers, timeout=10).status_code)  # fmt: skip

        # A steady rate: each receipt leaves at its slot, on one of a few connections, so one
        # slow answer does not push the next receipts back.
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            for n, (mid, pid, _) in enumerate(rows):
                pause = started + n / rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                pool.submit(post, mid, pid)
            sending_seconds = time.monotonic() - started  # the offered rate
        answered_seconds = time.monotonic() - started
        deadline = time.monotonic() + 60
        while receiver.count() < count and time.monotonic() < deadline:
            time.sleep(0.05)
        stop(procs)
    events = [(at, json.loads(body)) for at, body in receiver.got]
    # From the receipt's POST (includes the webhook's own storing and applying) ...
    lags = sorted((at - posted[e["data"]["message_id"]]) * 1000 for at, e in events)
    # ... and from the status change itself (the event's timestamp, taken in its transaction).
    after_change = sorted(
        (at - datetime.fromisoformat(e["timestamp"]).timestamp()) * 1000 for at, e in events
    )
    q = statistics.quantiles(lags, n=100)
    c = statistics.quantiles(after_change, n=100)
    return {
        "rate_per_s": rate, "receipts": count, "offered_rate": round(count / sending_seconds, 1),
        "answered_rate": round(count / answered_seconds, 1),
        "non_2xx": sum(1 for s in statuses if s >= 300), "callbacks": len(lags),
        "callback_rows": Callback.objects.count(),
        "lag_ms_p50": round(q[49], 1), "lag_ms_p95": round(q[94], 1),
        "lag_ms_max": round(lags[-1], 1),
        "change_to_callback_ms_p50": round(c[49], 1), "change_to_callback_ms_p95": round(c[94], 1),
        "load_before": before, "load_after": load(),
    }  # fmt: skip


def receipt_rounds(rounds, batch=200) -> dict:
    """Interleaved rounds of the two receipt paths under three emission variants."""
    from django.db import transaction

    from messaging.models import WebhookRequest
    from messaging.providers.base import DeliveryReport
    from messaging.services import callbacks, receipts
    from messaging.status import Status

    common.reset_tables()
    real_emit = callbacks.emit_status_changes
    with_url = make_clients(None, 1)[0]
    from messaging.services.callbacks import configure_endpoint

    configure_endpoint(with_url, "http://127.0.0.1:18299/never")  # not delivered: no worker
    without = make_clients(None, 1)[0]
    variants = {"emission off (before)": without, "no callback URL": without,
                "callback URL": with_url}  # fmt: skip
    results = {name: {"batch_ms": [], "single_ms": []} for name in variants}
    loads = []
    names = list(variants)
    for r in range(rounds):
        loads.append(load())
        # Each variant takes each place in the round in turn: load shifts hit all alike.
        for name in names[r % 3 :] + names[: r % 3]:
            client = variants[name]
            callbacks.emit_status_changes = (lambda changes: 0) if "off" in name else real_emit
            try:
                seeded = seed_sent([client], batch * 2)
                row = WebhookRequest.objects.create(provider="sandbox", kind="status",
                                                    method="POST", path="/bench")  # fmt: skip
                reports = [receipts.Incoming("sandbox", DeliveryReport(
                    Status.DELIVERED, "DELIVRD", provider_message_id=pid), row)
                    for _, pid, _ in seeded[:batch]]  # fmt: skip
                started = time.perf_counter()
                with transaction.atomic():
                    receipts.apply(reports)
                results[name]["batch_ms"].append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                for _, pid, _ in seeded[batch:]:
                    receipts.apply_one(
                        "sandbox",
                        DeliveryReport(Status.DELIVERED, "DELIVRD", provider_message_id=pid),
                    )
                results[name]["single_ms"].append((time.perf_counter() - started) * 1000 / batch)
            finally:
                callbacks.emit_status_changes = real_emit
    base = results["emission off (before)"]
    summary = {}
    for name, r in results.items():
        # The median of the per-round ratios (each round's variants ran side by side).
        summary[name] = {
            "batch_of_200_ms_median": round(statistics.median(r["batch_ms"]), 1),
            "one_receipt_ms_median": round(statistics.median(r["single_ms"]), 3),
            "batch_ratio_to_before": round(statistics.median(
                a / b for a, b in zip(r["batch_ms"], base["batch_ms"], strict=True)), 3),
            "single_ratio_to_before": round(statistics.median(
                a / b for a, b in zip(r["single_ms"], base["single_ms"], strict=True)), 3),
        }  # fmt: skip
    return {"rounds": rounds, "load_per_round": loads, "variants": summary, "raw": results}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=10.0, help="receipts per second (lag)")
    parser.add_argument("--seconds", type=float, default=30.0, help="receipts for this long")
    parser.add_argument("--rounds", type=int, default=5, help="receipt-path rounds")
    parser.add_argument("--skip", default="", help="comma list: throughput,lag,receipts")
    args = parser.parse_args()
    env = common.setup(common.free_port(), CALLBACK_ALLOW_PRIVATE_NETWORKS="true",
                       LOG_LEVEL="WARNING")  # fmt: skip
    common.OUT.mkdir(exist_ok=True)
    receiver = Receiver()
    skip = set(args.skip.split(","))
    result = {"machine": common.machine(), "commit_ms_median": common.commit_latency_ms(),
              "receiver_latency_ms": LATENCY * 1000}  # fmt: skip
    if "receipts" not in skip:
        result["receipts"] = receipt_rounds(args.rounds)
        print(json.dumps(result["receipts"]["variants"], indent=2), flush=True)
    if "throughput" not in skip:
        result["throughput"] = [throughput(env, receiver, args.events, p) for p in (1, 2)]
        print(json.dumps(result["throughput"], indent=2), flush=True)
    if "lag" not in skip:
        result["lag"] = lag(env, receiver, args.rate, args.seconds)
        print(json.dumps(result["lag"], indent=2), flush=True)
    path = common.save("callbacks", result)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
