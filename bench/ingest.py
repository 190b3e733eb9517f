"""Receipt ingest throughput, in interleaved rounds of one run (issue 12, item 3).

    .venv/bin/python bench/ingest.py [--rounds 4] [--duration 3] [--workers 8]

Seeds messages in `sent` with their provider ids, pre-builds one distinct receipt per message,
starts three gunicorns with the same settings, middleware and database (sync x8 each; idle
workers cost nothing): Herald with the defaults a newcomer gets (deferred apply), the tutorial
baseline (bench/tutorial_settings.py) and Herald with WEBHOOK_APPLY_INLINE=true. Each round
runs, one after the other, with wrk (bench/wrk/requests.lua):
  bare       GET /bench/ok                    Django with the same middleware and no work
  tutorial   POST /bench/tutorial             what the providers' tutorials do (no auth, no
                                              evidence, no dedupe): UPDATE + INSERT
  default    POST /webhooks/sandbox/status/   Herald's default: verify, parse, store (applied
                                              later; drained between rounds)
  e2e        the same, with the Procfile's worker (manage.py run_sender) applying meanwhile;
             the round waits until the backlog is applied and says how late the last one was
  inline     the same on the inline gunicorn: stored and applied before the answer
  batch      POST /webhooks/infobip/status/   100 reports per request (deferred)
with the 1-minute load average and a commit latency probe beside each round, and the CPU
seconds gunicorn (and the worker) spent per request. Then a paced run at --paced-rate receipts/s
with the worker running: how long after its evidence row each receipt's status change was
committed (WebhookRequest.processed_at - received_at, both set by Herald; processed_at is
written in the applying transaction). Figures go to stdout and bench/out/ingest.json.
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
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--batch-duration", type=int, default=2, help="seconds per batch run")
    parser.add_argument("--workers", type=int, default=8, help="gunicorn workers (each server)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--per-run", type=int, default=4000, help="distinct receipts per run")
    parser.add_argument("--infobip-messages", type=int, default=40000)
    parser.add_argument("--paced-rate", type=int, default=300, help="receipts/s (0: skip)")
    parser.add_argument("--paced-seconds", type=int, default=10)
    parser.add_argument("--skip-infobip", action="store_true")
    args = parser.parse_args()

    ports = []
    for _ in range(3):
        ports.append(common.free_port(exclude=ports))
    providers = ["sandbox"]
    extra = {}
    infobip = not args.skip_infobip
    if infobip:
        from bench import infobip_wire

        providers.append("infobip")
        extra.update(infobip_wire.ENV)
    extra["SMS_PROVIDERS_ENABLED"] = ",".join(providers)
    env = common.setup(ports[0], **extra)  # the defaults: WEBHOOK_APPLY_INLINE unset (false)
    env.pop("WEBHOOK_APPLY_INLINE", None)
    import logging

    logging.getLogger("herald").setLevel(logging.WARNING)  # this process; servers log INFO
    common.reset_tables()
    result = {"machine": common.machine(), "args": vars(args), "rounds": []}
    result["machine"]["commit_ms_median"] = common.commit_latency_ms()

    kinds = ["tutorial", "default", "e2e", "inline"]
    runs = args.rounds * len(kinds) + (1 if args.paced_rate else 0)
    pairs = seed("sandbox", args.per_run * runs)
    sets = {}
    for n, kind in enumerate([*kinds, "paced"]):
        for r in range(args.rounds if kind != "paced" else 1):
            start = (n * args.rounds + r) * args.per_run
            sets[(kind, r)] = pairs[start : start + args.per_run]
    batches = (
        list(
            infobip_requests(
                seed("infobip", args.infobip_messages, ours_as_provider_id=True), ports[0]
            )
        )  # fmt: skip
        if infobip
        else []
    )
    servers = {
        "main": common.Gunicorn(env, ports[0], args.workers),
        "tutorial": common.Gunicorn(
            {**env, "PUBLIC_BASE_URL": f"http://127.0.0.1:{ports[1]}"},
            ports[1],
            args.workers,
            settings_module="bench.tutorial_settings",
        ),  # fmt: skip
        "inline": common.Gunicorn(
            {
                **env,
                "WEBHOOK_APPLY_INLINE": "true",
                "PUBLIC_BASE_URL": f"http://127.0.0.1:{ports[2]}",
            },
            ports[2],
            args.workers,
        ),  # fmt: skip
    }
    result["gunicorn"] = {k: " ".join(s.command()) for k, s in servers.items()}
    result["worker"] = "manage.py run_sender  (the Procfile's worker)"
    with contextlib.ExitStack() as stack:
        for server in servers.values():
            stack.enter_context(server)
        for server in servers.values():  # warm every worker (imports, connections)
            common.wrk(f"{server.url}/bench/ok", duration=2, connections=args.connections,
                       threads=args.threads)  # fmt: skip
        offset = 0
        for r in range(args.rounds):
            rnd = {"load1_at_start": os.getloadavg()[0],
                   "commit_ms": common.commit_latency_ms(50)}  # fmt: skip
            main_url, tut_url = servers["main"].url, servers["tutorial"].url
            rnd["bare"] = measured(servers["main"], args, f"{main_url}/bench/ok",
                                   get_requests(ports[0]), "ok")  # fmt: skip
            rnd["tutorial"] = measured(servers["tutorial"], args, tut_url,
                                       tutorial_requests(sets[("tutorial", r)], ports[1]),
                                       f"tutorial-{r}")  # fmt: skip
            rnd["default"] = measured(servers["main"], args, main_url,
                                      list(sandbox_requests(sets[("default", r)], ports[0])),
                                      f"default-{r}")  # fmt: skip
            drain()
            with Worker(env) as worker:
                rnd["e2e"] = measured(servers["main"], args, main_url,
                                      list(sandbox_requests(sets[("e2e", r)], ports[0])),
                                      f"e2e-{r}", extra_pid=worker.pid)  # fmt: skip
                rnd["e2e"].update(caught_up(rnd["e2e"]["started_at"]))
            rnd["inline"] = measured(servers["inline"], args, servers["inline"].url,
                                     list(sandbox_requests(sets[("inline", r)], ports[2])),
                                     f"inline-{r}")  # fmt: skip
            if batches:
                ordered = batches[offset:] + batches[:offset]
                rnd["batch"] = measured(servers["main"], args, main_url, ordered, f"batch-{r}",
                                        duration=args.batch_duration)  # fmt: skip
                offset = (offset + rnd["batch"]["requests"]) % len(batches)
                drain()
            ratios(rnd)
            result["rounds"].append(rnd)
            print_round(r, rnd)
        if args.paced_rate:
            with Worker(env):
                result["paced"] = paced(servers["main"], args, sets[("paced", 0)], ports[0])
            print(f"paced: {result['paced']}")
        result["ingest_rows"] = stored_summary()
    drain()
    result["medians"] = {
        key: statistics.median(rnd["ratios"][key] for rnd in result["rounds"])
        for key in result["rounds"][0]["ratios"]
    }
    if batches:
        sent = sum(rnd["batch"]["requests"] for rnd in result["rounds"])
        result["batch_set_wrapped"] = sent > len(batches)
    result["check"] = check()
    path = common.save("ingest", result)
    print(f"medians: {result['medians']}")
    print(f"check: {result['check']}")
    print(f"written to {path}")


def tutorial_requests(pairs, port):
    """Vonage SMS JSON receipts, as the tutorials' view reads them."""
    for _mid, pid in pairs:
        body = json.dumps({"messageId": pid, "status": "delivered", "msisdn": "447700900123",
                           "to": "Herald", "err-code": "0", "price": "0.0333",
                           "message-timestamp": "2026-11-23 10:00:00"}).encode()  # fmt: skip
        yield common.raw_post("/bench/tutorial", port, body, {"Content-Type": "application/json"})


def measured(server, args, url, records, name, duration=None, extra_pid=None):
    """One wrk run with the server's CPU seconds (master + workers, and `extra_pid`)."""
    pids = [server.proc.pid] + ([extra_pid] if extra_pid else [])
    cpu = sum(common.process_cpu_seconds(p) for p in pids)
    from django.utils import timezone

    started_at = timezone.now()
    run = run_wrk(url, list(records), args, name, duration)
    run.pop("output", None)
    cpu = sum(common.process_cpu_seconds(p) for p in pids) - cpu
    run["cpu_ms_per_request"] = round(1000 * cpu / max(1, run["requests"]), 3)
    run["started_at"] = started_at
    return run


def ratios(rnd):
    bare, tutorial = rnd["bare"]["requests_per_second"], rnd["tutorial"]["requests_per_second"]
    out = {}
    for kind in ("default", "e2e", "inline"):
        rps = rnd[kind]["requests_per_second"]
        out[f"{kind}/bare"] = round(rps / bare, 3)
        out[f"{kind}/tutorial"] = round(rps / tutorial, 3)
    out["tutorial/bare"] = round(tutorial / bare, 3)
    if "batch" in rnd:
        out["batch reports/default reports"] = round(
            rnd["batch"]["requests_per_second"] * 100 / rnd["default"]["requests_per_second"], 1
        )
    rnd["ratios"] = out


def drain():
    from messaging import applier

    applier.drain()


class Worker:
    """The Procfile's worker (manage.py run_sender) for the length of a block."""

    def __init__(self, env):
        self.env = env

    def __enter__(self):
        import subprocess

        self.log = open(common.OUT / "worker.log", "ab")  # noqa: SIM115 - closed in __exit__
        self.proc = subprocess.Popen([str(common.PYTHON), "manage.py", "run_sender"],
                                     cwd=common.ROOT, env=self.env, stdout=self.log,
                                     stderr=self.log)  # fmt: skip
        self.pid = self.proc.pid
        time.sleep(1.5)  # imported and polling
        if self.proc.poll() is not None:  # a worker that refused to start measures nothing
            self.log.close()
            tail = (common.OUT / "worker.log").read_text(errors="replace")[-2000:]
            raise SystemExit(f"the worker exited with {self.proc.returncode}:\n{tail}")
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


def caught_up(since, limit=120):
    """Wait until nothing received since `since` is pending; how long that took after wrk
    stopped, and the lag of those rows (processed_at - received_at)."""
    started = time.perf_counter()
    while applier_backlog() and time.perf_counter() - started < limit:
        time.sleep(0.1)
    return {"seconds_to_catch_up_after_run": round(time.perf_counter() - started, 2),
            "lag": lag(since)}  # fmt: skip


def lag(since, until=None):
    from django.db.models import F

    from messaging.models import WebhookRequest

    rows = WebhookRequest.objects.filter(received_at__gte=since, provider="sandbox",
                                         processed_at__isnull=False)  # fmt: skip
    if until:
        rows = rows.filter(received_at__lt=until)
    values = sorted(
        (d.total_seconds() for d in rows.annotate(d=F("processed_at") - F("received_at"))
         .values_list("d", flat=True)),
    )  # fmt: skip
    if not values:
        return {}
    pick = lambda q: round(values[min(len(values) - 1, int(q * len(values)))], 3)  # noqa: E731
    return {"rows": len(values), "p50_s": pick(0.5), "p95_s": pick(0.95), "p99_s": pick(0.99),
            "max_s": round(values[-1], 3)}  # fmt: skip


def paced(server, args, pairs, port):
    """--paced-rate receipts/s for --paced-seconds with the worker applying."""
    from django.utils import timezone

    path = common.OUT / "paced.requests"
    common.write_requests(path, sandbox_requests(pairs, port))
    # wrk waits `delay` after each answer on a connection: aim a little under the rate's
    # spacing (the answer takes time too); the achieved rate is what is reported.
    connections = 32
    delay_ms = round(0.85 * connections * 1000 / args.paced_rate)
    since = timezone.now()
    run = common.wrk(server.url, duration=args.paced_seconds, connections=connections,
                     threads=args.threads, script=common.BENCH / "wrk" / "paced.lua",
                     args=(path, args.threads, delay_ms))  # fmt: skip
    run.pop("output", None)
    path.unlink()
    done = caught_up(since)
    return {"offered_per_second": args.paced_rate, "wrk": run, "load1": os.getloadavg()[0],
            **done}  # fmt: skip


def print_round(n, rnd):
    print(f"round {n}: load {rnd['load1_at_start']:.1f}, commit {rnd['commit_ms']} ms")
    for kind in ("bare", "tutorial", "default", "e2e", "inline", "batch"):
        if kind in rnd:
            run = rnd[kind]
            print(f"  {kind:9s} {run['requests_per_second']:9.1f} req/s  non-2xx {run['non_2xx']}"
                  f"  errors {run['socket_errors']}  cpu {run['cpu_ms_per_request']} ms/req"
                  f"  latency {run['latency_avg']}")  # fmt: skip
    if "e2e" in rnd:
        print(f"  e2e caught up {rnd['e2e']['seconds_to_catch_up_after_run']} s after; "
              f"lag {rnd['e2e']['lag']}")  # fmt: skip
    print(f"  ratios {rnd['ratios']}", flush=True)


def applier_backlog():
    from messaging.applier import pending

    return pending().count()


def check():
    """What the database says after the run: nothing lost, nothing doubled, nothing refused."""
    from django.db.models import Count

    from messaging.models import Message, StatusEvent, WebhookRequest

    webhook_events = StatusEvent.objects.filter(source="webhook")
    keyed = webhook_events.exclude(dedupe_key=None)  # duplicates are shown without a key
    doubled = keyed.values("dedupe_key").annotate(n=Count("id")).filter(n__gt=1).count()
    return {
        "webhook_rows": WebhookRequest.objects.count(),
        "rows_5xx": WebhookRequest.objects.filter(response_status__gte=500).count(),
        "rows_not_processed": WebhookRequest.objects.exclude(state="processed").count(),
        "status_events_from_webhooks": webhook_events.count(),
        "dedupe_keys_doubled": doubled,
        "messages_delivered": Message.objects.filter(status="delivered").count(),
    }


if __name__ == "__main__":
    main()
