"""Send throughput and rate limits: `run_sender` processes against the provider emulator.

    .venv/bin/python bench/send_throughput.py throughput --processes 1 --concurrency 8
    .venv/bin/python bench/send_throughput.py ratelimit --processes 3 --rate 60

Production settings (config.settings through bench.settings, PostgreSQL database
$BENCH_DB, default herald_sendbench), the Sinch provider pointed at `manage.py
provider_emulator` (a separate process) with --latency-ms (default 50). Receipts are held back
(--receipt-delay 3600): this measures sending only.

throughput: messages/s over the steady window (first to last `sent_at`, so process start-up is
  not counted) and the ratio to the ideal, processes * concurrency / latency.
ratelimit: SINCH_RATE_LIMIT=R for every sender (paced together through the database,
  SENDER_RATE_HEADROOM=--headroom under R), the emulator answering 429 above R/s
  (--rate-limit sinch=R): achieved accepted sends/s against R, and the share of requests
  answered 429.
Each run is bounded (--max-seconds, default 90). Results go to bench/out/send-<mode>.json.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("BENCH_DB", "herald_sendbench")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402

SINCH = {
    "SMS_PROVIDERS_ENABLED": "sinch",
    "SMS_DEFAULT_PROVIDER": "sinch",
    "SINCH_SERVICE_PLAN_ID": "bench-plan",
    "SINCH_API_TOKEN": "bench-token",
    "SINCH_FROM": "Herald",
    "SINCH_WEBHOOK_SECRET": "bench-secret",
    "LOG_LEVEL": "WARNING",
}


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (and its waited-for children), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    ticks = sum(int(fields[i]) for i in (11, 12))  # utime, stime (after the comm field)
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_busy() -> tuple:
    """(busy, total) CPU ticks of the whole machine, from /proc/stat: other work on a shared
    machine shows here."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def start_emulator(env, port, args) -> subprocess.Popen:
    """`manage.py provider_emulator` as its own process, receipts held back."""
    options = ["--port", str(port), "--latency-ms", str(args.latency_ms),
               "--receipt-delay", "3600"]  # fmt: skip
    if args.mode == "ratelimit":
        options += ["--rate-limit", f"sinch={args.rate}"]
    cmd = [str(common.PYTHON), "manage.py", "provider_emulator", *options]
    log = open(common.OUT / "send-emulator.log", "w")  # noqa: SIM115 (lives with the process)
    proc = subprocess.Popen(cmd, cwd=common.ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        try:
            common.requests.get(f"http://127.0.0.1:{port}/_emulator/stats", timeout=1)
            return proc
        except common.requests.RequestException:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the emulator did not start") from None
            time.sleep(0.2)


def seed(count: int):
    """`count` queued messages with distinct destinations, and their first events."""
    from django.utils import timezone

    from messaging.models import Client, Message, StatusEvent

    now = timezone.now()
    client = Client.objects.default()
    rows = [
        Message(
            client=client,
            direction="outbound",
            to_number=f"+4477{n:08d}",
            body=f"bench {n}",
            provider="sinch",
            status="queued",
            encoding="GSM-7",
            segments=1,
            metadata={},
            next_attempt_at=now,
        )  # fmt: skip
        for n in range(count)
    ]
    Message.objects.bulk_create(rows, batch_size=2000)
    StatusEvent.objects.bulk_create(
        [StatusEvent(message=m, status="queued", source="api", note="accepted") for m in rows],
        batch_size=2000,
    )


def outstanding() -> int:
    from messaging.models import Message

    return Message.objects.filter(status__in=["queued", "sending"]).count()


def run(args) -> dict:
    port = common.free_port()
    env = common.setup(port, **SINCH)  # production settings, migrated bench database
    common.OUT.mkdir(exist_ok=True)
    emu_port = common.free_port()
    env = {**env, "SINCH_BASE_URL": f"http://127.0.0.1:{emu_port}"}
    sender_env = {
        **env,
        "SENDER_CONCURRENCY": str(args.concurrency),
        "SENDER_BATCH_SIZE": str(args.batch_size),
        "SENDER_BACKOFF_BASE": "1",
    }
    if args.mode == "ratelimit":
        sender_env["SINCH_RATE_LIMIT"] = str(args.rate)
        sender_env["SENDER_RATE_HEADROOM"] = str(args.headroom)
    count = args.messages or (int(args.rate * args.seconds) if args.mode == "ratelimit" else 2000)

    common.reset_tables()
    seed(count)
    from django.db import connection

    connection.close()

    emulator = start_emulator(env, emu_port, args)
    senders = []
    try:
        busy0, total0 = machine_busy()
        load_before = os.getloadavg()[0]
        started = time.monotonic()
        for n in range(args.processes):
            log = open(common.OUT / f"send-sender-{n}.log", "w")  # noqa: SIM115
            senders.append(
                subprocess.Popen(
                    [
                        str(common.PYTHON),
                        "manage.py",
                        "run_sender",
                        "--max-seconds",
                        str(args.max_seconds),
                    ],  # fmt: skip
                    cwd=common.ROOT,
                    env=sender_env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )  # fmt: skip
            )
        left = count
        while left and time.monotonic() - started < args.max_seconds:
            time.sleep(0.25)
            left = outstanding()
            if any(s.poll() not in (None, 0) for s in senders):
                raise RuntimeError("a sender died: see bench/out/send-sender-*.log")
        elapsed = time.monotonic() - started
        cpu = {
            "senders": round(sum(cpu_seconds(s.pid) for s in senders), 1),
            "emulator": round(cpu_seconds(emulator.pid), 1),
        }
        busy1, total1 = machine_busy()
        cpu["machine_busy_share"] = round((busy1 - busy0) / max(1, total1 - total0), 2)
        cpu["load_average_1m_before"] = round(load_before, 2)
        stats = common.requests.get(f"http://127.0.0.1:{emu_port}/_emulator/stats").json()
    finally:
        for proc in [*senders, emulator]:
            proc.terminate()
        for proc in [*senders, emulator]:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()

    from django.db.models import Count, Max, Min

    from messaging.models import Message

    window = Message.objects.filter(sent_at__isnull=False).aggregate(
        first=Min("sent_at"), last=Max("sent_at"), sent=Count("id")
    )
    statuses = dict(Message.objects.values_list("status").annotate(n=Count("id")))
    seconds = (window["last"] - window["first"]).total_seconds() if window["sent"] > 1 else 0
    rate = (window["sent"] - 1) / seconds if seconds else 0.0
    requests_in = stats["requests"].get("sinch", 0)
    throttled = stats["faults"].get("sinch:429", 0)
    accepted = sum(stats["sends"].get("sinch", {}).values())
    result = {
        "mode": args.mode,
        "command": " ".join([".venv/bin/python bench/send_throughput.py", *sys.argv[1:]]),
        "machine": common.machine(),
        "messages": count,
        "processes": args.processes,
        "concurrency": args.concurrency,
        "batch_size": args.batch_size,
        "latency_ms": args.latency_ms,
        "statuses": statuses,
        "unfinished": left,
        "wall_seconds": round(elapsed, 2),
        "steady_seconds": round(seconds, 2),
        "messages_per_second": round(rate, 1),
        "emulator_requests": requests_in,
        "emulator_accepted": accepted,
        "emulator_429": throttled,
        "share_429": round(throttled / requests_in, 4) if requests_in else 0.0,
        "cpu_seconds": cpu,
        "max_sends_per_destination": max(stats["sends"].get("sinch", {"": 0}).values()),
    }
    if args.mode == "throughput":
        ideal = args.processes * args.concurrency / (args.latency_ms / 1000)
        result["ideal_per_second"] = round(ideal, 1)
        result["ratio_to_ideal"] = round(rate / ideal, 3)
    else:
        result["rate_limit"] = args.rate
        result["headroom"] = args.headroom
        result["achieved_vs_limit"] = round(rate / args.rate, 3)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=["throughput", "ratelimit"])
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--messages", type=int, default=0, help="default 2000 / rate*seconds")
    parser.add_argument("--rate", type=float, default=50.0, help="ratelimit: requests/s")
    parser.add_argument("--seconds", type=float, default=30.0, help="ratelimit: run length")
    parser.add_argument(
        "--headroom", type=float, default=0.05, help="ratelimit: SENDER_RATE_HEADROOM"
    )
    parser.add_argument("--max-seconds", type=float, default=90.0)
    parser.add_argument("--tag", default="", help="suffix for the output file")
    args = parser.parse_args()
    result = run(args)
    path = common.save(f"send-{args.mode}{'-' + args.tag if args.tag else ''}", result)
    print(json.dumps(result, indent=2, default=str))
    print(f"saved {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
