"""Receipt storm, full size: 100k signed sandbox receipts for 20k messages, 30% exact duplicates,
shuffled, posted by 16 concurrent connections to gunicorn (production settings, PostgreSQL),
then the whole set posted again.

    .venv/bin/python bench/storm.py [--messages 20000] [--receipts 100000] [--apply deferred]

Checks (exit status 1 if any fails): zero 5xx and every request answered 200; every message in
the status the oracle (tests/load/storm.py, messaging.status.decide) computes; every distinct
receipt exactly one StatusEvent; the replay changes no message and adds no event. With
`--apply deferred` (the default) `manage.py run_applier` processes run during the storm.
Figures go to stdout and bench/out/storm.json.
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--receipts", type=int, default=100000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=8, help="gunicorn sync workers")
    parser.add_argument("--apply", choices=["deferred", "inline"], default="deferred")
    parser.add_argument("--appliers", type=int, default=1, help="run_applier processes")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    port = common.free_port()
    env = common.setup(port, WEBHOOK_APPLY_INLINE=str(args.apply == "inline").lower())
    common.reset_tables()
    from messaging import applier
    from messaging.models import StatusEvent
    from tests.load import storm

    result = {"machine": common.machine(), "args": vars(args)}
    started = time.perf_counter()
    plan = storm.make_plan(args.messages, args.receipts, 0.3, seed=args.seed)
    storm.seed_messages(plan)
    result["plan"] = {"messages": len(plan.messages), "receipts": len(plan.stream),
                      "distinct": len(plan.distinct), "duplicates": plan.duplicates,
                      "expected": _count(plan.expected.values())}  # fmt: skip
    print(f"plan ready in {time.perf_counter() - started:.1f}s: {result['plan']}", flush=True)

    server = common.Gunicorn(env, port, args.workers)
    result["gunicorn"] = " ".join(server.command())
    with server:
        first = _storm(server.url, plan.stream, env, args)
        result["first_pass"] = first
        facts = storm.verify(plan)
        result["first_pass"]["verify"] = {**facts, "wrong_status": len(facts["wrong_status"])}
        before, events = storm.message_snapshot(), StatusEvent.objects.count()
        second = _storm(server.url, list(reversed(plan.stream)), env, args)
        result["replay"] = second
        result["replay"]["messages_changed"] = sum(
            1 for k, v in storm.message_snapshot().items() if before.get(k) != v
        )
        result["replay"]["new_events"] = StatusEvent.objects.count() - events
        result["replay"]["verify"] = storm.verify(plan)
        result["replay"]["verify"]["wrong_status"] = len(result["replay"]["verify"]["wrong_status"])
    assert applier.pending().count() == 0
    checks = {
        "zero 5xx, every request 200": first["statuses"] == {"200": args.receipts}
        and second["statuses"] == {"200": args.receipts},
        "every message as the oracle says": facts["wrong_status"] == {},
        "every distinct receipt one event": facts["events"] == facts["distinct_receipts"]
        and facts["events_doubled"] == facts["receipts_without_event"] == 0,
        "every repeat an ignored duplicate": facts["duplicate_events"] == plan.duplicates
        and facts["duplicate_events_applied"] == 0,
        "every request stored": facts["rows"] == args.receipts and facts["rows_5xx"] == 0,
        # the replay applies nothing: each of its receipts is one more ignored duplicate
        "replay changes nothing": second["messages_changed"] == 0
        and second["new_events"] == args.receipts
        and second["verify"]["events"] == facts["events"]
        and second["verify"]["duplicate_events_applied"] == 0,
    }
    result["checks"] = checks
    path = common.save("storm", result)
    for name in ("first_pass", "replay"):
        r = result[name]
        print(f"{name}: {r['requests_per_second']} req/s over {r['seconds']}s, "
              f"statuses {r['statuses']}, "
              f"all applied {r['seconds_to_applied']}s after the first request")  # fmt: skip
    print(f"verify: {result['first_pass']['verify']}")
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    print(f"written to {path}")
    sys.exit(0 if all(checks.values()) else 1)


def _storm(url, stream, env, args):
    from messaging import applier
    from tests.load import storm

    procs = []
    with open(common.OUT / "storm-applier.log", "ab") as log:
        if args.apply == "deferred":
            procs = [
                subprocess.Popen(
                    [str(common.PYTHON), "manage.py", "run_applier"],
                    cwd=common.ROOT,
                    env=env,
                    stdout=log,
                    stderr=log,
                )  # fmt: skip
                for _ in range(args.appliers)
            ]
        started = time.perf_counter()
        statuses = storm.post_all(url, stream, connections=args.connections)
        posted = time.perf_counter() - started
        while applier.pending().exists() and time.perf_counter() - started < 3600:
            time.sleep(0.2)
        applied = time.perf_counter() - started
        for proc in procs:
            proc.terminate()
            proc.wait(30)
    return {
        "statuses": {str(k): v for k, v in sorted(statuses.items(), key=str)},
        "seconds": round(posted, 1),
        "requests_per_second": round(len(stream) / posted, 1),
        "seconds_to_applied": round(applied, 1),
    }


def _count(values):
    out = {}
    for v in values:
        out[str(v)] = out.get(str(v), 0) + 1
    return out


if __name__ == "__main__":
    main()
