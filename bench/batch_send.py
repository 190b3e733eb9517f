"""Batch sends: messages accepted per second through POST /api/v1/messages/batch/ (1,000
recipients a request) beside single sends through POST /api/v1/messages/, in interleaved rounds
against one gunicorn, with the load average beside each round.

    .venv/bin/python bench/batch_send.py                 # PostgreSQL (production)
    .venv/bin/python bench/batch_send.py --sqlite        # the newcomer's default database

The issue's goal: at least 2,000 messages/s accepted by batch on this machine. Every round
checks what it created (one queued message and one event per accepted recipient).
"""

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import common  # noqa: E402


def api_key() -> str:
    """A credential for the API, made the way an operator makes one."""
    from messaging.models import Client
    from messaging.services import clients

    client = Client.objects.filter(slug="bench").first() or clients.create_client(
        "Bench", slug="bench"
    )
    return clients.create_api_key(client, name="batch bench").key


def auth_header(key: str) -> dict:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def batch_round(url, headers, size, requests_n, offset, connections):
    def one(i):
        start = offset + i * size
        body = {
            "body": "Hello {{name}}, your code is {{code}}",
            "recipients": [
                {"to": f"+4474{n:08d}", "variables": {"name": f"n{n}", "code": n % 999999}}
                for n in range(start, start + size)
            ],
        }
        r = requests.post(f"{url}/api/v1/messages/batch/", json=body, headers=headers, timeout=60)
        assert r.status_code == 202, (r.status_code, r.text[:300])
        return r.json()["accepted"]

    started = time.perf_counter()
    with ThreadPoolExecutor(connections) as pool:
        accepted = sum(pool.map(one, range(requests_n)))
    return accepted, time.perf_counter() - started


def single_round(url, headers, count, offset, connections):
    session_headers = headers

    def one(i):
        n = offset + i
        body = {"to": f"+4474{n:08d}", "body": f"Hello n{n}, your code is {n % 999999}"}
        r = requests.post(f"{url}/api/v1/messages/", json=body, headers=session_headers, timeout=60)
        assert r.status_code == 202, (r.status_code, r.text[:300])
        return 1

    started = time.perf_counter()
    with ThreadPoolExecutor(connections) as pool:
        accepted = sum(pool.map(one, range(count)))
    return accepted, time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=6, help="batch requests per round")
    parser.add_argument("--singles", type=int, default=300, help="single sends per round")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (Procfile: 2)")
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--sqlite", action="store_true", help="SQLite instead of PostgreSQL")
    args = parser.parse_args()

    port = common.free_port()
    extra = {}
    if args.sqlite:
        common.OUT.mkdir(exist_ok=True)
        db = common.OUT / "batch-bench.sqlite3"
        db.unlink(missing_ok=True)
        extra["DATABASE_URL"] = f"sqlite:///{db}"
        os.environ["DATABASE_URL"] = extra["DATABASE_URL"]
    env = common.setup(port, **extra) if not args.sqlite else _sqlite_setup(port, extra)
    if not args.sqlite:
        common.reset_tables()
    key = api_key()
    headers = auth_header(key)
    from messaging.models import Message, StatusEvent

    rounds = []
    offset = 0
    with common.Gunicorn(env, port, workers=args.workers) as server:
        for number in range(args.rounds):
            load = os.getloadavg()[0]
            b_accepted, b_secs = batch_round(
                server.url, headers, args.batch_size, args.batches, offset, args.connections
            )
            offset += args.batch_size * args.batches
            s_accepted, s_secs = single_round(
                server.url, headers, args.singles, offset, args.connections
            )
            offset += args.singles
            row = {
                "round": number + 1,
                "load_1m": round(load, 2),
                "batch_msgs_per_s": round(b_accepted / b_secs, 1),
                "single_msgs_per_s": round(s_accepted / s_secs, 1),
            }
            row["ratio"] = round(row["batch_msgs_per_s"] / row["single_msgs_per_s"], 2)
            rounds.append(row)
            print(row, flush=True)
    created = Message.objects.count()
    events = StatusEvent.objects.count()
    result = {
        "machine": common.machine(),
        "database": "sqlite" if args.sqlite else "postgresql",
        "args": vars(args),
        "rounds": rounds,
        "median_batch_msgs_per_s": statistics.median(r["batch_msgs_per_s"] for r in rounds),
        "median_single_msgs_per_s": statistics.median(r["single_msgs_per_s"] for r in rounds),
        "median_ratio": statistics.median(r["ratio"] for r in rounds),
        "check": {"messages": created, "events": events, "expected": offset},
    }
    ok = created == events == offset
    print({k: v for k, v in result.items() if k not in ("machine", "rounds")})
    print("check:", "ok" if ok else "MISMATCH", f"({created} messages, {events} events)")
    common.save("batch_send" + ("-sqlite" if args.sqlite else ""), result)
    sys.exit(0 if ok else 1)


def _sqlite_setup(port, extra):
    env = common.bench_env(port, **extra)
    os.environ.update(env)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return {**os.environ, **env}


if __name__ == "__main__":
    main()
