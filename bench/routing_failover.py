"""Routing under a provider outage: one emulated provider starts answering 503 mid-run, then
recovers. Messages are created at a steady rate through the API's service and routed
`GB: sinch 50, infobip 50`; the real Sender sends them to two provider emulators.

    .venv/bin/python bench/routing_failover.py [--rate 20] [--before 5] [--outage 20] [--after 15]

Database: PostgreSQL $BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/
herald_routing, migrated and emptied of messages first). Emulators on ports 18601 and 18602.
It prints (and writes to bench/out/routing-failover.json) the figures: time from the outage to
the circuit opening and to the last new message routed to the failing provider, messages
delayed by the outage (moved after a 503) and by how much, double sends (must be 0), and the
time from recovery to the circuit closing and traffic returning.

`scenario()` is also the proof in tests/routing/test_outage_emulator.py (smaller numbers).
"""

import argparse
import json
import os
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Settings that make the outage visible at bench scale; production defaults are in
# config/settings.py (ROUTING_*), the only changes here are a shorter open time and window.
FAST_HEALTH = {
    "ROUTING_BUCKET_SECONDS": 1,
    "ROUTING_HEALTH_FLUSH_SECONDS": 0.25,
    "ROUTING_HEALTH_CACHE_SECONDS": 0.25,
    "ROUTING_HEALTH_WINDOW_SECONDS": 5,
    "ROUTING_CIRCUIT_MIN_REQUESTS": 5,
    "ROUTING_CIRCUIT_ERROR_RATE": 0.5,
    "ROUTING_CIRCUIT_OPEN_SECONDS": 3.0,
    "ROUTING_PROBE_INTERVAL_SECONDS": 0.5,
    "ROUTING_PROBES_TO_CLOSE": 3,
    "SMS_ROUTES": "GB: sinch 50, infobip 50",
    "SMS_FALLBACK_PROVIDERS": [],
    "SENDER_BACKOFF_BASE": 0.05,
}


def provider_settings(sinch_url, infobip_url) -> dict:
    return {
        "sinch": {
            "BACKEND": "messaging.providers.sinch.SinchProvider",
            "OPTIONS": {"SERVICE_PLAN_ID": "plan-bench", "API_TOKEN": "token", "REGION": "eu",
                        "FROM": "Herald", "WEBHOOK_SECRET": "s", "BASE_URL": sinch_url,
                        "WEBHOOK_SIGNING": "true"},
            "ENV": {},
        },
        "infobip": {
            "BACKEND": "messaging.providers.infobip.InfobipProvider",
            "OPTIONS": {"API_KEY": "key", "BASE_URL": infobip_url, "FROM": "Herald",
                        "WEBHOOK_USERNAME": "u", "WEBHOOK_PASSWORD": "p", "WEBHOOK_TOKEN": "",
                        "WEBHOOK_SIGNING": "true"},
            "ENV": {},
        },
    }  # fmt: skip


def scenario(sender, down, *, rate=20.0, before=2.0, outage=8.0, after=8.0, drain=20.0):
    """Create messages at `rate`/s for before + outage + after seconds; the `down` emulator
    (sinch) answers 503 from `before` to `before + outage`. The sender ticks until everything
    is settled. Returns the figures (and the raw times) as a dict."""
    from django.db import connection
    from django.utils import timezone

    from messaging.models import Message, ProviderHealthEvent, StatusEvent
    from messaging.services import messages
    from messaging.status import Status

    marks = {}
    done = threading.Event()
    errors = []

    def produce():
        try:
            start, n = time.monotonic(), 0
            while True:
                elapsed = time.monotonic() - start
                if elapsed >= before and "t0" not in marks:
                    down.faults.rate_5xx = 1.0
                    marks["t0"] = timezone.now()
                if elapsed >= before + outage and "t1" not in marks:
                    down.faults.rate_5xx = 0.0
                    marks["t1"] = timezone.now()
                if elapsed >= before + outage + after:
                    break
                messages.create_outbound(to=f"+4477009{n:05d}", body="outage", source="api")
                n += 1
                time.sleep(max(0.0, start + n / rate - time.monotonic()))
        except Exception as exc:  # reported by the caller
            errors.append(exc)
        finally:
            done.set()
            connection.close()

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    settle_by = None
    while True:
        sender.tick()
        if done.is_set():
            settle_by = settle_by or time.monotonic() + drain
            busy = Message.objects.filter(status__in=[Status.QUEUED, Status.SENDING]).exists()
            if not busy or time.monotonic() > settle_by:
                break
        time.sleep(0.02)
    producer.join()
    if errors:
        raise errors[0]
    t0, t1 = marks["t0"], marks["t1"]

    rows = list(Message.objects.values("id", "created_at", "sent_at", "status", "provider"))
    first_choice = {
        e.message_id: e.raw_payload["route"]["chosen"]
        for e in StatusEvent.objects.filter(status=Status.QUEUED, raw_payload__isnull=False)
        if e.raw_payload and "route" in e.raw_payload and e.note.startswith("accepted")
    }
    moved = set(
        StatusEvent.objects.filter(note__startswith="failover").values_list("message_id", flat=True)
    )
    events = list(ProviderHealthEvent.objects.filter(provider="sinch").order_by("id"))
    opened = next((e.created_at for e in events if e.kind == "open" and e.created_at >= t0), None)
    closed = next((e.created_at for e in events if e.kind == "close" and e.created_at >= t1), None)
    during = [r for r in rows if t0 <= r["created_at"] < t1]
    to_down = [r for r in during if first_choice.get(r["id"]) == "sinch"]
    last_to_down = max((r["created_at"] for r in to_down), default=None)
    returned = [r for r in rows if closed and r["created_at"] > closed]

    def latency(r):
        return (r["sent_at"] - r["created_at"]).total_seconds()

    sent = [r for r in rows if r["sent_at"]]
    delayed = [latency(r) for r in sent if r["id"] in moved]
    normal = [latency(r) for r in sent if r["id"] not in moved]
    snap = down.stats.snapshot()
    stats = {"requests": snap["requests"], "faults": snap["faults"],
             "accepted": sum(sum(c.values()) for c in snap["sends"].values())}  # fmt: skip
    return {
        "messages": len(rows),
        "by_status": dict(Counter(r["status"] for r in rows)),
        "created_during_outage": len(during),
        "seconds_to_open": (opened - t0).total_seconds() if opened else None,
        "seconds_to_last_new_on_failing": (last_to_down - t0).total_seconds()
        if last_to_down
        else 0.0,
        "new_routed_to_failing_during_outage": len(to_down),
        "moved_after_503": len(delayed),
        "moved_delay_median_s": statistics.median(delayed) if delayed else None,
        "moved_delay_max_s": max(delayed) if delayed else None,
        "unmoved_delay_median_s": statistics.median(normal) if normal else None,
        "seconds_recovery_to_close": (closed - t1).total_seconds() if closed else None,
        "created_after_close": len(returned),
        "routed_to_recovered_after_close": sum(1 for r in returned if r["provider"] == "sinch"),
        "health_events": [(e.kind, e.reason, e.created_at.isoformat()) for e in events],
        "sinch_emulator": stats,
        "t0": t0,
        "t1": t1,
        "closed": closed,
    }


def double_sends(*emulators) -> int:
    """Destinations (one per message) that more than one accepted send reached, over all."""
    total = Counter()
    for emu in emulators:
        for counts in emu.stats.snapshot()["sends"].values():
            total.update(counts)
    return sum(1 for n in total.values() if n > 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--before", type=float, default=5.0)
    parser.add_argument("--outage", type=float, default=20.0)
    parser.add_argument("--after", type=float, default=15.0)
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("SECRET_KEY", "bench")
    os.environ.setdefault("DEBUG", "true")
    os.environ.setdefault("LOG_LEVEL", "ERROR")
    os.environ["DATABASE_URL"] = os.environ.get(
        "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/herald_routing"
    )
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    from devtools.emulator.base import Emulator
    from devtools.emulator.infobip import InfobipEmulator
    from devtools.emulator.sinch import SinchEmulator
    from messaging import providers
    from messaging.sender import Sender
    from messaging.services import provider_health, routing

    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:  # a clean slate in the bench database
        cursor.execute(
            "TRUNCATE messaging_statusevent, messaging_messagepart, messaging_unmatchedreport, "
            "messaging_idempotencykey, messaging_message, messaging_providerhealth, "
            "messaging_providerhealthevent, messaging_providersendbucket CASCADE"
        )
    down = Emulator(port=18601, receipt_delay=3600, providers={"sinch": SinchEmulator})
    up = Emulator(port=18602, receipt_delay=3600, providers={"infobip": InfobipEmulator})
    with down, up:
        for key, value in FAST_HEALTH.items():
            setattr(settings, key, value)
        settings.SMS_PROVIDERS = provider_settings(down.url, up.url)
        settings.SMS_PROVIDERS_ENABLED = ["sinch", "infobip"]
        settings.SMS_DEFAULT_PROVIDER = "sinch"
        providers.get_provider.cache_clear()
        routing.clear_cache()
        provider_health.reset_caches()
        sender = Sender(concurrency=8, batch_size=50)
        load = os.getloadavg()
        started = time.monotonic()
        figures = scenario(sender, down, rate=args.rate, before=args.before,
                           outage=args.outage, after=args.after)  # fmt: skip
        figures["double_sends"] = double_sends(down, up)
        figures["wall_seconds"] = round(time.monotonic() - started, 1)
        figures["loadavg_before"] = load
        figures["loadavg_after"] = os.getloadavg()
        sender.pool.shutdown()
    for key in ("t0", "t1", "closed"):
        figures[key] = figures[key].isoformat() if figures[key] else None
    figures["args"] = vars(args)
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "routing-failover.json").write_text(json.dumps(figures, indent=2, default=str))
    print(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
