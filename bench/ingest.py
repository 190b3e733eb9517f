"""Receipt ingest throughput: a bare Django view vs the status webhook, in one run.

    .venv/bin/python bench/ingest.py [--duration 10] [--workers 4] [--connections 32]

Seeds messages in `sent` with their provider ids, pre-builds signed receipts for them (one
distinct receipt per message, so no request is a duplicate), starts gunicorn with the
production settings, then drives it with wrk (bench/wrk/requests.lua) three times:
  1. GET /bench/ok                       the ceiling: Django with the same middleware, no work
  2. POST /webhooks/sandbox/status/      one signed receipt per request
  3. POST /webhooks/infobip/status/      100 reports per request (when the provider exists)
Afterwards it checks what was stored (every request a WebhookRequest row, no 5xx), drains
the stored receipts with the applier and times it, and checks every message ended delivered.
Figures go to stdout and bench/out/ingest.json.
"""

import argparse
import json
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402

SCRIPT = common.BENCH / "wrk" / "requests.lua"


def seed(provider: str, count: int) -> list:
    """`count` messages already accepted by `provider`: (our id, provider id) pairs."""
    from django.utils import timezone

    from messaging.models import Message, MessagePart

    now = timezone.now()
    pairs = [(uuid.uuid4(), uuid.uuid4().hex) for _ in range(count)]
    for start in range(0, count, 5000):
        chunk = pairs[start : start + 5000]
        Message.objects.bulk_create(
            Message(id=mid, to_number="+447700900123", body="bench", provider=provider,
                    provider_message_id=pid, status="sent", attempts=1, sent_at=now)
            for mid, pid in chunk
        )  # fmt: skip
        MessagePart.objects.bulk_create(
            MessagePart(message_id=mid, index=0, provider=provider, provider_message_id=pid)
            for mid, pid in chunk
        )
    return pairs


def sandbox_requests(pairs, port):
    from messaging.providers import get_provider
    from messaging.providers.sandbox import sign

    secret = get_provider("sandbox").secrets("WEBHOOK_SECRET")[0]
    stamp = str(int(time.time()))
    when = datetime.now(UTC).isoformat()
    for mid, pid in pairs:
        body = json.dumps(
            {"message_id": pid, "client_ref": str(mid), "status": "delivered",
             "error_code": "", "timestamp": when},
            separators=(",", ":"),
        ).encode()  # fmt: skip
        headers = {"Content-Type": "application/json", "X-Sandbox-Timestamp": stamp,
                   "X-Sandbox-Signature": sign(secret, stamp, body)}  # fmt: skip
        yield common.raw_post("/webhooks/sandbox/status/", port, body, headers)


def infobip_requests(pairs, port, per_request=100):
    """Infobip v3 delivery reports, `per_request` per POST, authenticated as configured."""
    from bench import infobip_wire

    for start in range(0, len(pairs), per_request):
        body, headers = infobip_wire.batch(pairs[start : start + per_request])
        yield common.raw_post("/webhooks/infobip/status/", port, body, headers)


def get_requests(port):
    return [f"GET /bench/ok HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()]


def run_wrk(url, records, args, name):
    path = common.OUT / f"{name}.requests"
    common.write_requests(path, records)
    return common.wrk(url, duration=args.duration, connections=args.connections,
                      threads=args.threads, script=SCRIPT, args=(path, args.threads))  # fmt: skip


def stored_summary(provider):
    from django.db.models import Count

    from messaging.models import WebhookRequest

    rows = WebhookRequest.objects.filter(provider=provider)
    return {
        "rows": rows.count(),
        "by_response_status": {
            str(r["response_status"]): r["n"]
            for r in rows.values("response_status").annotate(n=Count("id"))
        },
        "by_state": {r["state"]: r["n"] for r in rows.values("state").annotate(n=Count("id"))},
    }


def drain_applier():
    """Apply every stored receipt with the applier; (reports applied, seconds)."""
    from messaging import applier

    started = time.perf_counter()
    reports = 0
    while True:
        done = applier.apply_pending(batch_size=200)
        if not done.rows:
            break
        reports += done.reports
    return reports, time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn sync workers")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--messages", type=int, default=30000, help="messages per provider")
    parser.add_argument("--apply", choices=["deferred", "inline"], default="deferred")
    parser.add_argument("--skip-infobip", action="store_true")
    args = parser.parse_args()

    port = common.free_port()
    extra = {"WEBHOOK_APPLY_INLINE": "true" if args.apply == "inline" else "false"}
    providers = ["sandbox"]
    infobip = not args.skip_infobip and _infobip_available()
    if infobip:
        from bench import infobip_wire

        providers.append("infobip")
        extra.update(infobip_wire.ENV)
    extra["SMS_PROVIDERS_ENABLED"] = ",".join(providers)
    env = common.setup(port, **extra)
    common.reset_tables()
    result = {"machine": common.machine(), "args": vars(args), "runs": {}}

    sandbox_pairs = seed("sandbox", args.messages)
    infobip_pairs = seed("infobip", args.messages * 5) if infobip else []
    sandbox_records = list(sandbox_requests(sandbox_pairs, port))
    infobip_records = list(infobip_requests(infobip_pairs, port)) if infobip else []

    server = common.Gunicorn(env, port, args.workers)
    result["gunicorn"] = " ".join(server.command())
    with server:
        # Warm every worker (imports, connections) before measuring.
        common.wrk(f"{server.url}/bench/ok", duration=2, connections=args.connections,
                   threads=args.threads)  # fmt: skip
        ok = run_wrk(f"{server.url}/bench/ok", get_requests(port), args, "ok")
        single = run_wrk(server.url, sandbox_records, args, "sandbox")
        batch = run_wrk(server.url, infobip_records, args, "infobip") if infobip else None

    result["runs"]["bare_ok"] = ok
    result["runs"]["sandbox_single"] = single
    single["stored"] = stored_summary("sandbox")
    single["reports_per_second"] = single["requests_per_second"]
    if single["requests"] > len(sandbox_records):
        single["warning"] = "the receipt set wrapped: later requests were duplicates"
    result["ratio_single_to_bare"] = round(
        single["requests_per_second"] / ok["requests_per_second"], 3
    )
    if batch:
        result["runs"]["infobip_batch_100"] = batch
        batch["stored"] = stored_summary("infobip")
        batch["reports_per_second"] = batch["requests_per_second"] * 100
        result["ratio_batch_reports_to_single"] = round(
            batch["reports_per_second"] / single["reports_per_second"], 1
        )

    if args.apply == "deferred":
        reports, seconds = drain_applier()
        result["applier"] = {
            "reports": reports,
            "seconds": round(seconds, 2),
            "reports_per_second": round(reports / seconds, 1) if seconds else None,
        }
    result["check"] = check()
    path = common.save("ingest", result)
    print_summary(result, path)


def check():
    """What the database says after the run: nothing lost, nothing doubled, nothing refused."""
    from django.db.models import Count

    from messaging.models import Message, StatusEvent, WebhookRequest

    webhook_events = StatusEvent.objects.filter(source="webhook")
    doubled = webhook_events.values("dedupe_key").annotate(n=Count("id")).filter(n__gt=1).count()
    return {
        "webhook_rows": WebhookRequest.objects.count(),
        "rows_5xx": WebhookRequest.objects.filter(response_status__gte=500).count(),
        "rows_not_processed": WebhookRequest.objects.exclude(state="processed").count(),
        "status_events_from_webhooks": webhook_events.count(),
        "dedupe_keys_doubled": doubled,
        "messages_delivered": Message.objects.filter(status="delivered").count(),
    }


def _infobip_available() -> bool:
    try:
        import bench.infobip_wire  # noqa: F401
        import messaging.providers.infobip  # noqa: F401
    except ImportError:
        return False
    return True


def print_summary(result, path):
    runs = result["runs"]
    print(f"machine: {result['machine']}")
    for name, run in runs.items():
        print(f"{name:20s} {run['requests_per_second']:10.1f} req/s  "
              f"non-2xx {run['non_2xx']}  errors {run['socket_errors']}  "
              f"latency {run['latency_avg']}")  # fmt: skip
    print(f"ratio single/bare: {result['ratio_single_to_bare']}")
    if "ratio_batch_reports_to_single" in result:
        print(f"infobip reports/s over single reports/s: {result['ratio_batch_reports_to_single']}")
    if "applier" in result:
        print(f"applier: {result['applier']}")
    print(f"check: {result['check']}")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
