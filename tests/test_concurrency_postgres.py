"""Concurrency on real PostgreSQL: threads with their own connections and real transactions.

- Many receipts for the same message at once: the final status is right, and every distinct
  receipt is exactly one StatusEvent (none lost, none doubled).
- Several senders claiming at once: each due message is claimed by exactly one of them.
"""

import random
import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from messaging.models import Message, MessagePart, StatusEvent
from messaging.providers.base import DeliveryReport
from messaging.services import messages
from messaging.services.receipts import apply_one
from messaging.services.sending import claim_due
from messaging.status import Status

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]


def run_threads(target, items, threads=8):
    barrier = threading.Barrier(threads)
    errors = []
    chunks = [items[i::threads] for i in range(threads)]

    def work(chunk):
        try:
            barrier.wait()
            for item in chunk:
                target(item)
        except Exception as exc:  # surfaced below: a thread's failure fails the test
            errors.append(exc)
        finally:
            connection.close()

    pool = [threading.Thread(target=work, args=(c,)) for c in chunks]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert not errors, errors


def sent_message(parts=1):
    message = messages.create_outbound(to="+447911123457", body="x", source="api")
    Message.objects.filter(pk=message.pk).update(status=Status.SENT, provider_message_id="p-0")
    for i in range(parts):
        MessagePart.objects.create(
            message=message, index=i, provider="sandbox", provider_message_id=f"p-{i}"
        )
    return message


def report(status, part=0, second=0):
    return DeliveryReport(
        status=Status(status),
        provider_status=status,
        provider_message_id=f"p-{part}",
        provider_timestamp=datetime(2026, 1, 1, 12, 0, second, tzinfo=UTC),
    )


def test_concurrent_receipts_for_one_message(on_postgres):
    message = sent_message()
    distinct = [report("sent", second=s) for s in range(20)]
    distinct += [report("delivered", second=30), report("failed", second=31)]
    # every receipt three times, in random order, from 8 threads at once
    storm = distinct * 3
    random.Random(7).shuffle(storm)
    run_threads(lambda r: apply_one("sandbox", r), storm)

    message.refresh_from_db()
    all_events = StatusEvent.objects.filter(message=message, source="webhook")
    events = all_events.exclude(dedupe_key=None)
    assert events.count() == len(distinct)  # none lost, none doubled
    duplicates = all_events.filter(dedupe_key=None)  # the repeats: shown, never applied
    assert (duplicates.count(), duplicates.filter(applied=True).count()) == (2 * len(distinct), 0)
    assert len(set(events.values_list("dedupe_key", flat=True))) == len(distinct)
    # whichever final status was applied first wins; the other is recorded, not applied
    applied_final = events.filter(applied=True, status__in=["delivered", "failed"])
    assert applied_final.count() == 1
    assert message.status == applied_final.get().status
    assert events.filter(status__in=["delivered", "failed"], applied=False).count() == 1


def test_concurrent_part_receipts_roll_up(on_postgres):
    message = sent_message(parts=3)
    storm = [report("delivered", part=i, second=10 + i) for i in range(3)] * 4
    random.Random(3).shuffle(storm)
    run_threads(lambda r: apply_one("sandbox", r), storm, threads=6)
    message.refresh_from_db()
    assert message.status == "delivered"
    assert set(message.parts.values_list("status", flat=True)) == {"delivered"}
    events = StatusEvent.objects.filter(message=message, source="webhook").exclude(dedupe_key=None)
    assert events.count() == 3
    assert events.filter(applied=True).count() == 1  # only the last part completes it


def test_concurrent_senders_claim_each_message_once(on_postgres):
    for _ in range(60):
        messages.create_outbound(to="+447911123457", body="x", source="api")
    claims = {}
    lock = threading.Lock()

    def claim(owner):
        while batch := claim_due(7, owner):
            with lock:
                claims.setdefault(owner, []).extend(m.pk for m in batch)

    run_threads(claim, [f"sender-{i}" for i in range(4)], threads=4)
    claimed = [pk for batch in claims.values() for pk in batch]
    assert len(claimed) == 60 and len(set(claimed)) == 60
    assert len(claims) > 1  # the work was actually shared
    assert Message.objects.filter(status="sending").count() == 60
    sending_events = StatusEvent.objects.filter(status="sending")
    assert sending_events.count() == 60


def test_lease_expiry_makes_unknown_not_queued(on_postgres):
    from messaging.services.sending import recover_expired_leases

    message = messages.create_outbound(to="+447911123457", body="x", source="api")
    [claimed] = claim_due(1, "crashed-sender")
    Message.objects.filter(pk=claimed.pk).update(
        lease_until=datetime.now(UTC) - timedelta(seconds=1)
    )
    assert recover_expired_leases() == 1
    message.refresh_from_db()
    assert (message.status, message.error_code) == ("unknown", "lease-expired")
    assert claim_due(10, "another") == []  # never picked up again
