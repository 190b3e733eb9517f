"""A receipt storm and its oracle, shared by tests/load/test_receipt_storm.py (scaled down) and
bench/storm.py (100k receipts for 20k messages against gunicorn).

The plan: messages already `sent` through the sandbox provider; for each, a few distinct signed
receipts (accepted, sometimes a second accepted or an `unknown`, and at most ONE final status,
sometimes repeated with a later timestamp), plus exact duplicates of random receipts (provider
retries), all shuffled. Because a message never gets two different final statuses, the state it
must end in does not depend on the order the receipts are applied in: the oracle folds
messaging.status.decide over them and checks that claim on two orders before trusting it.
"""

import json
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from queue import Empty, Queue

import requests

from messaging.providers.sandbox import SandboxProvider, sign
from messaging.status import Status, decide


def secret() -> str:
    """The sandbox secret of the running settings (tests' or bench's)."""
    from django.conf import settings

    return settings.SMS_PROVIDERS["sandbox"]["OPTIONS"]["WEBHOOK_SECRET"].split(",")[0]


PATH = "/webhooks/sandbox/status/"
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
FINALS = [("delivered", ""), ("failed", "absent-subscriber"), ("expired", "ttl-expired"),
          ("rejected", "barred")]  # fmt: skip
CANONICAL = SandboxProvider.STATUS_MAP


@dataclass
class Plan:
    messages: list  # (our id, provider id)
    distinct: list  # receipt payloads, each once
    stream: list  # what is posted: distinct + duplicates, shuffled
    expected: dict = field(default_factory=dict)  # provider id -> final status

    @property
    def duplicates(self):
        return len(self.stream) - len(self.distinct)


def receipts_for(rng: random.Random, mid, pid) -> list:
    stamp = T0 + timedelta(seconds=rng.randrange(3600))

    def receipt(status, error="", later=0):
        when = (stamp + timedelta(seconds=later)).isoformat()
        return {"message_id": pid, "client_ref": str(mid), "status": status,
                "error_code": error, "timestamp": when}  # fmt: skip

    out = [receipt("accepted")]
    if rng.random() < 0.3:
        out.append(receipt("accepted", later=1))  # an intermediate repeated: no change
    if rng.random() < 0.25:
        out.append(receipt("unknown", later=2))
    if rng.random() < 0.9:  # the rest never get a final receipt
        status, error = rng.choices(FINALS, weights=[70, 15, 10, 5])[0]
        out.append(receipt(status, error, later=5))
        if rng.random() < 0.3:
            out.append(receipt(status, error, later=9))  # the final status again, later
    return out


def make_plan(n_messages: int, n_receipts: int, duplicate_share=0.3, seed=0) -> Plan:
    rng = random.Random(seed)
    messages = [(uuid.UUID(int=rng.getrandbits(128), version=4), uuid.uuid4().hex)
                for _ in range(n_messages)]  # fmt: skip
    want_distinct = round(n_receipts * (1 - duplicate_share))
    distinct = []
    for mid, pid in messages:
        distinct.extend(receipts_for(rng, mid, pid))
    rng.shuffle(distinct)
    # Trim or top up (with extra `accepted`, later) to the exact number of distinct receipts,
    # never dropping a message's first receipt so each message gets at least one.
    firsts, rest = {}, []
    for r in distinct:
        if r["message_id"] not in firsts and r["status"] == "accepted":
            firsts[r["message_id"]] = r
        else:
            rest.append(r)
    distinct = list(firsts.values()) + rest
    distinct = distinct[:want_distinct]
    n = 0
    while len(distinct) < want_distinct:
        mid, pid = messages[n % len(messages)]
        later = (T0 + timedelta(hours=2, seconds=n)).isoformat()
        distinct.append({"message_id": pid, "client_ref": str(mid), "status": "accepted",
                         "error_code": "", "timestamp": later})  # fmt: skip
        n += 1
    stream = distinct + [rng.choice(distinct) for _ in range(n_receipts - len(distinct))]
    rng.shuffle(stream)
    plan = Plan(messages=messages, distinct=distinct, stream=stream)
    plan.expected = oracle(plan)
    return plan


def fold(receipts, start=Status.SENT) -> Status:
    status = start
    for r in receipts:
        status = decide(status, CANONICAL[r["status"]]).status
    return status


def oracle(plan: Plan) -> dict:
    """provider id -> the status its message must end in. Folded in stream order (first
    occurrences) and, as a check of the plan's order independence, in reverse."""
    by_message = {}
    seen = set()
    for r in plan.stream:
        key = json.dumps(r, sort_keys=True)
        if key not in seen:
            seen.add(key)
            by_message.setdefault(r["message_id"], []).append(r)
    expected = {}
    for pid, receipts in by_message.items():
        forward, backward = fold(receipts), fold(list(reversed(receipts)))
        assert forward == backward, f"plan is order-dependent for {pid}: {receipts}"
        expected[pid] = forward
    for _, pid in plan.messages:
        expected.setdefault(pid, Status.SENT)
    return expected


def seed_messages(plan: Plan):
    """The plan's messages, already `sent` by the sandbox provider (one part each)."""
    from messaging.models import Client, Message, MessagePart

    client = Client.objects.default()
    for start in range(0, len(plan.messages), 5000):
        chunk = plan.messages[start : start + 5000]
        Message.objects.bulk_create(
            Message(id=mid, client=client, to_number="+447700900123", body="storm",
                    provider="sandbox",
                    status=Status.SENT, provider_message_id=pid, attempts=1)
            for mid, pid in chunk
        )  # fmt: skip
        MessagePart.objects.bulk_create(
            MessagePart(message_id=mid, index=0, provider="sandbox", provider_message_id=pid)
            for mid, pid in chunk
        )


def post_all(base_url: str, stream: list, connections: int = 16, timeout=30) -> Counter:
    """Post every receipt once, signed at sending time, over `connections` concurrent
    connections. Returns a Counter of HTTP statuses ("error" for a failed connection)."""
    work = Queue()
    for receipt in stream:
        work.put(receipt)
    statuses, lock = Counter(), threading.Lock()
    url = base_url.rstrip("/") + PATH

    def worker():
        session = requests.Session()
        local = Counter()
        while True:
            try:
                receipt = work.get_nowait()
            except Empty:
                break
            body = json.dumps(receipt, separators=(",", ":")).encode()
            stamp = str(int(time.time()))
            headers = {"Content-Type": "application/json", "X-Sandbox-Timestamp": stamp,
                       "X-Sandbox-Signature": sign(secret(), stamp, body)}  # fmt: skip
            try:
                local[
                    session.post(url, data=body, headers=headers, timeout=timeout).status_code
                ] += 1
            except requests.RequestException:
                local["error"] += 1
        session.close()
        with lock:
            statuses.update(local)

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


class Appliers:
    """`count` threads draining stored requests while the storm runs (store-then-apply)."""

    def __init__(self, count: int):
        self.count, self.stop, self.errors = count, threading.Event(), []
        self.threads = []

    def __enter__(self):
        from django.db import connection

        from messaging import applier

        def run():
            try:
                while not self.stop.is_set():
                    if applier.apply_pending(batch_size=100).rows == 0:
                        time.sleep(0.05)
            except Exception as exc:  # surfaced by the caller
                self.errors.append(exc)
            finally:
                connection.close()

        self.threads = [threading.Thread(target=run) for _ in range(self.count)]
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join()


def verify(plan: Plan) -> dict:
    """Compare the database with the plan. Returns the facts; callers assert on them."""
    from django.db.models import Count

    from messaging.models import Message, StatusEvent, WebhookRequest
    from messaging.providers.base import DeliveryReport

    actual = dict(
        Message.objects.filter(provider="sandbox").values_list("provider_message_id", "status")
    )
    wrong = {pid: (actual.get(pid), str(want)) for pid, want in plan.expected.items()
             if actual.get(pid) != want}  # fmt: skip
    keys = set()
    for r in plan.distinct:
        report = DeliveryReport(
            status=CANONICAL[r["status"]], provider_status=r["status"],
            provider_message_id=r["message_id"], client_reference=r["client_ref"],
            error_code=r["error_code"], provider_timestamp=datetime.fromisoformat(r["timestamp"]),
        )  # fmt: skip
        keys.add(report.dedupe_key("sandbox"))
    events = StatusEvent.objects.filter(source="webhook")
    # A receipt recorded once has its dedupe key; each repeat is an ignored duplicate without.
    recorded = list(events.filter(dedupe_key__isnull=False).values_list("dedupe_key", flat=True))
    duplicates = events.filter(dedupe_key__isnull=True)
    rows = WebhookRequest.objects.filter(provider="sandbox")
    return {
        "wrong_status": wrong,
        "distinct_receipts": len(keys),
        "events": len(recorded),
        "duplicate_events": duplicates.count(),
        "duplicate_events_applied": duplicates.filter(applied=True).count(),
        "events_doubled": len(recorded) - len(set(recorded)),
        "receipts_without_event": len(keys - set(recorded)),
        "events_not_in_plan": len(set(recorded) - keys),
        "rows": rows.count(),
        "rows_by_state": dict(rows.values_list("state").annotate(n=Count("id"))),
        "rows_5xx": rows.filter(response_status__gte=500).count(),
    }


def message_snapshot() -> dict:
    from messaging.models import Message

    return {
        row[0]: row[1:]
        for row in Message.objects.filter(provider="sandbox").values_list(
            "id", "status", "error_code", "completed_at", "updated_at"
        )
    }
