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
import contextlib
import json
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402

SCRIPT = common.BENCH / "wrk" / "requests.lua"


def seed(provider: str, count: int, ours_as_provider_id=False) -> list:
    """`count` messages already accepted by `provider`: (our id, provider id) pairs. Infobip
    takes our id as its messageId, so there the two are the same."""
    from django.utils import timezone

    from messaging.models import Client, Message, MessagePart

    now = timezone.now()
    ids = [uuid.uuid4() for _ in range(count)]
    pairs = [(mid, str(mid) if ours_as_provider_id else uuid.uuid4().hex) for mid in ids]
    client = Client.objects.default()
    for start in range(0, count, 5000):
        chunk = pairs[start : start + 5000]
        Message.objects.bulk_create(
            Message(id=mid, client=client, to_number="+447700900123", body="bench",
                    provider=provider,
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


def run_wrk(url, records, args, name, duration=None):
    path = common.OUT / f"{name}.requests"
    common.write_requests(path, records)
    result = common.wrk(url, duration=duration or args.duration, connections=args.connections,
                        threads=args.threads, script=SCRIPT, args=(path, args.threads))  # fmt: skip
    result["distinct_requests_available"] = len(records)
    path.unlink()
    return result


def stored_summary():
    from django.db.models import Count

    from messaging.models import WebhookRequest

    rows = WebhookRequest.objects.all()
    return {
        "rows": rows.count(),
        "by_provider": {
            r["provider"]: r["n"] for r in rows.values("provider").annotate(n=Count("id"))
        },
        "by_response_status": {
            str(r["response_status"]): r["n"]
            for r in rows.values("response_status").annotate(n=Count("id"))
        },
        "by_state": {r["state"]: r["n"] for r in rows.values("state").annotate(n=Count("id"))},
    }


def drain_applier(env, processes=1):
    """Run `manage.py run_applier --once` in `processes` processes until nothing is pending."""
    import re
    import subprocess

    from messaging.models import StatusEvent

    cmd = [str(common.PYTHON), "manage.py", "run_applier", "--once"]
    before = StatusEvent.objects.filter(source="webhook").count()
    rows = reports = 0
    with contextlib.ExitStack() as stack:
        logs = [stack.enter_context(open(common.OUT / f"applier-{n}.log", "wb"))
                for n in range(processes)]  # fmt: skip
        started = time.perf_counter()
        procs = [subprocess.Popen(cmd, cwd=common.ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=log) for log in logs]  # fmt: skip
        for proc in procs:
            out, _ = proc.communicate(timeout=1800)
            found = re.search(rb"after (\d+) request\(s\), (\d+) report", out)
            rows += int(found.group(1))
            reports += int(found.group(2))
        seconds = time.perf_counter() - started
    events = StatusEvent.objects.filter(source="webhook").count() - before
    return {
        "command": f"{' '.join(cmd)}  (x{processes} processes at once)",
        "requests": rows,
        "reports": reports,
        "status_events_created": events,
        "seconds": round(seconds, 2),
        "reports_per_second": round(reports / seconds, 1),
        "events_per_second": round(events / seconds, 1),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=6, help="bare/single/batch rounds")
    parser.add_argument("--duration", type=int, default=4, help="seconds per wrk run")
    parser.add_argument("--batch-duration", type=int, default=2, help="seconds per batch run")
    parser.add_argument("--workers", type=int, default=8, help="gunicorn workers")
    parser.add_argument("--worker-class", default="sync", choices=["sync", "gthread"])
    parser.add_argument("--worker-threads", type=int, default=1, help="threads per gthread worker")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--messages", type=int, default=42000, help="sandbox messages")
    parser.add_argument("--infobip-messages", type=int, default=200000)
    parser.add_argument("--apply", choices=["deferred", "inline"], default="deferred")
    parser.add_argument("--appliers", type=int, default=2, help="run_applier processes")
    parser.add_argument(
        "--sustained",
        type=int,
        default=10,
        help="seconds of single receipts with an applier running (0: skip)",
    )
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
    result = {"machine": common.machine(), "args": vars(args), "rounds": []}
    result["machine"]["commit_ms_median"] = common.commit_latency_ms()

    sandbox = list(sandbox_requests(seed("sandbox", args.messages), port))
    batches = (
        list(
            infobip_requests(seed("infobip", args.infobip_messages, ours_as_provider_id=True), port)
        )  # fmt: skip
        if infobip
        else []
    )
    phases = args.rounds + (1 if args.sustained else 0)
    singles = [sandbox[i::phases] for i in range(phases)]  # disjoint receipts per phase
    server = common.Gunicorn(env, port, args.workers, args.worker_class, args.worker_threads)
    result["gunicorn"] = " ".join(server.command())
    with server:
        # Warm every worker (imports, connections) before measuring.
        common.wrk(f"{server.url}/bench/ok", duration=2, connections=args.connections,
                   threads=args.threads)  # fmt: skip
        offset = 0
        for n in range(args.rounds):
            load = os.getloadavg()[0]  # background load on a shared machine, for the record
            run = {"bare_ok": run_wrk(f"{server.url}/bench/ok", get_requests(port), args, "ok")}
            run["sandbox_single"] = run_wrk(server.url, singles[n], args, f"single-{n}")
            if batches:
                # Each round continues where the last stopped, so reports repeat only if the
                # whole set wraps (said in the result).
                run["infobip_batch_100"] = run_wrk(
                    server.url,
                    batches[offset:] + batches[:offset],
                    args,
                    f"batch-{n}",
                    args.batch_duration,
                )
                offset = (offset + run["infobip_batch_100"]["requests"]) % len(batches)
            result["rounds"].append({**summarise_round(run), "load1_at_start": load})
        result["ingest_rows"] = stored_summary()
        if args.apply == "deferred":
            result["applier_drain"] = drain_applier(env, args.appliers)
            if args.sustained:
                result["sustained"] = sustained(server, env, singles[-1], args)
    result["ratio_single_to_bare_median"] = statistics.median(
        r["ratio_single_to_bare"] for r in result["rounds"]
    )
    if batches:
        result["ratio_batch_reports_to_single_median"] = statistics.median(
            r["ratio_batch_reports_to_single"] for r in result["rounds"]
        )
        sent = sum(r["runs"]["infobip_batch_100"]["requests"] for r in result["rounds"])
        result["batch_set_wrapped"] = sent > len(batches)
    result["check"] = check()
    path = common.save("ingest", result)
    print_summary(result, path)


def summarise_round(run):
    for value in run.values():
        value.pop("output", None)
    single = run["sandbox_single"]["requests_per_second"]
    out = {
        "runs": run,
        "ratio_single_to_bare": round(single / run["bare_ok"]["requests_per_second"], 3),
    }
    if "infobip_batch_100" in run:
        batch = run["infobip_batch_100"]["requests_per_second"] * 100
        out["infobip_reports_per_second"] = round(batch)
        out["ratio_batch_reports_to_single"] = round(batch / single, 1)
    return out


def sustained(server, env, records, args):
    """Single receipts for `args.sustained` seconds while one applier runs beside gunicorn:
    the ingest rate it sustains, what the applier applied meanwhile, and how long the backlog
    left at the end takes to drain."""
    import subprocess

    from messaging.models import StatusEvent

    before = StatusEvent.objects.filter(source="webhook").count()
    cmd = [str(common.PYTHON), "manage.py", "run_applier"]
    with open(common.OUT / "applier-sustained.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=common.ROOT, env=env, stdout=log, stderr=log)
        try:
            run = run_wrk(server.url, records, args, "sustained", args.sustained)
            run.pop("output", None)
            applied_during = StatusEvent.objects.filter(source="webhook").count() - before
            backlog = applier_backlog()
            started = time.perf_counter()
            while applier_backlog() and time.perf_counter() - started < 300:
                time.sleep(0.2)
            catch_up = time.perf_counter() - started
        finally:
            proc.terminate()
            proc.wait(30)
    return {
        "applier_command": " ".join(cmd),
        "ingest": run,
        "applied_during_run": applied_during,
        "applied_per_second_during_run": round(applied_during / args.sustained, 1),
        "backlog_rows_at_end": backlog,
        "seconds_to_drain_backlog": round(catch_up, 2),
    }


def applier_backlog():
    from messaging.applier import pending

    return pending().count()


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
    print(f"machine: {result['machine']}")
    print(f"gunicorn: {result['gunicorn']}")
    for n, rnd in enumerate(result["rounds"]):
        for name, run in rnd["runs"].items():
            print(f"round {n} {name:18s} {run['requests_per_second']:9.1f} req/s  "
                  f"non-2xx {run['non_2xx']}  errors {run['socket_errors']}  "
                  f"latency {run['latency_avg']}")  # fmt: skip
        print(f"round {n} ratios: single/bare {rnd['ratio_single_to_bare']}  "
              f"(load average {rnd['load1_at_start']:.1f} at start)  "
              f"batch reports/single {rnd.get('ratio_batch_reports_to_single')}")  # fmt: skip
    print(f"median single/bare: {result['ratio_single_to_bare_median']}")
    if "ratio_batch_reports_to_single_median" in result:
        print(f"median batch reports/s over single reports/s: "
              f"{result['ratio_batch_reports_to_single_median']}"
              f" (set wrapped: {result['batch_set_wrapped']})")  # fmt: skip
    for key in ("applier_drain", "sustained"):
        if key in result:
            print(f"{key}: {result[key]}")
    print(f"check: {result['check']}")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
