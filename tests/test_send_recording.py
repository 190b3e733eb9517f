"""Recording accepted sends in batches (services.sending.record_accepted, and the sender loop
that calls it): each send is decided as it would be on its own, a batch costs the same queries
whatever its size, and a recording that fails is tried again, never resent."""

import random
from datetime import UTC, datetime, timedelta

import pytest
from django.db import IntegrityError, OperationalError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from messaging import sender as sender_module
from messaging.models import Message, StatusEvent, UnmatchedReport
from messaging.providers.base import DeliveryReport, SendResult
from messaging.providers.sandbox import SandboxProvider
from messaging.sender import Sender
from messaging.services import messages
from messaging.services.receipts import apply_one
from messaging.services.sending import Accepted, claim_due, record_accepted
from messaging.status import Status
from tests.test_concurrency_postgres import run_threads


def claimed(count: int) -> list:
    for n in range(count):
        messages.create_outbound(to=f"+4479111{n:05d}", body="hello", source="api")
    batch = claim_due(count, "test")
    assert len(batch) == count
    return batch


def accept(batch, ids=lambda n: [f"p-{n}"]) -> list:
    return [Accepted(m, SendResult(ids(n), provider_status="0")) for n, m in enumerate(batch)]


@pytest.mark.django_db
def test_every_send_of_a_batch_is_recorded_sent_with_its_part_and_event():
    batch = claimed(5)
    statuses = record_accepted(accept(batch))
    assert set(statuses.values()) == {"sent"}
    for n, m in enumerate(batch):
        m.refresh_from_db()
        assert (m.status, m.provider_message_id, m.lease_owner) == ("sent", f"p-{n}", "")
        assert m.sent_at is not None and m.lease_until is None
        assert list(m.parts.values_list("provider_message_id", flat=True)) == [f"p-{n}"]
        event = m.events.get(status="sent")
        assert event.applied and event.note.endswith(f"provider id(s): p-{n}")


@pytest.mark.django_db
def test_a_batch_costs_the_same_queries_as_one_send():
    def queries(count):
        accepted = accept(claimed(count), ids=lambda n: [f"p-{count}-{n}"])
        with CaptureQueriesContext(connection) as ctx:
            record_accepted(accepted)
        return [q["sql"] for q in ctx.captured_queries if "SAVEPOINT" not in q["sql"]]

    one = queries(1)
    assert len(queries(25)) == len(one)
    # lock the rows, look up the ids' owners, insert parts, update rows, insert events, look
    # for status-callback targets (none here), then find kept reports (the parts' ids, the
    # reports): eight, however many sends (seven seen on PostgreSQL, whose row update goes
    # through bulk_set's own cursor, not Django's)
    assert len(one) == (7 if connection.vendor == "postgresql" else 8), one


@pytest.mark.django_db
def test_a_provider_id_reused_inside_one_batch_stays_with_the_first_send():
    first, second = claimed(2)
    record_accepted(accept([first, second], ids=lambda n: ["same-id"]))
    first.refresh_from_db(), second.refresh_from_db()
    assert (first.status, second.status) == ("sent", "sent")
    assert (first.provider_message_id, second.provider_message_id) == ("same-id", None)
    assert not second.parts.exists()


@pytest.mark.django_db
def test_a_receipt_that_came_first_is_not_overwritten_by_its_batch():
    early, normal = claimed(2)
    Message.objects.filter(pk=early.pk).update(status=Status.DELIVERED)
    statuses = record_accepted(accept([early, normal]))
    assert statuses == {early.pk: "delivered", normal.pk: "sent"}
    event = StatusEvent.objects.get(message=early, status="sent")
    assert not event.applied and "a receipt arrived first" in event.note


@pytest.mark.django_db
def test_reports_kept_for_several_messages_are_applied_when_their_batch_is_recorded():
    by_reference, by_id, other = claimed(3)
    stamp = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    kept = [
        DeliveryReport(Status.DELIVERED, "DELIVRD", client_reference=str(by_reference.pk),
                       provider_timestamp=stamp),
        DeliveryReport(Status.FAILED, "UNDELIV", provider_message_id="p-1",
                       provider_timestamp=stamp),
    ]  # fmt: skip
    for report in kept:
        UnmatchedReport.objects.create(
            provider="sandbox",
            provider_message_id=report.provider_message_id,
            client_reference=report.client_reference,
            report=report.to_json(),
        )
    record_accepted(accept([by_reference, by_id, other]))
    statuses = dict(Message.objects.values_list("id", "status"))
    assert statuses[by_reference.pk] == "delivered"
    assert statuses[by_id.pk] == "failed"
    assert statuses[other.pk] == "sent"
    assert not UnmatchedReport.objects.filter(matched_at__isnull=True).exists()


@pytest.mark.django_db
def test_a_partly_refused_send_in_a_batch_rolls_up_to_rejected():
    partial, whole = claimed(2)
    statuses = record_accepted(
        [
            Accepted(partial, SendResult(["a"], refused_parts=[("1", "Throttled")])),
            Accepted(whole, SendResult(["b"])),
        ]
    )
    assert statuses == {partial.pk: "rejected", whole.pk: "sent"}
    partial.refresh_from_db()
    assert list(partial.parts.order_by("index").values_list("status", flat=True)) == [
        "sent",
        "rejected",
    ]


@pytest.mark.django_db(transaction=True)
def test_sends_the_recorder_could_not_write_are_written_on_the_next_pass(monkeypatch):
    calls = []
    monkeypatch.setattr(
        SandboxProvider, "send", lambda self, sms, s: calls.append(sms) or SendResult([sms.to])
    )
    real, database = sender_module.record_accepted, {"up": False}

    def flaky(batch):
        if not database["up"]:
            raise OperationalError("database went away")
        return real(batch)

    monkeypatch.setattr(sender_module, "record_accepted", flaky)
    for n in range(3):
        messages.create_outbound(to=f"+4479111{n:05d}", body="hello", source="api")
    sender = Sender(concurrency=2)
    try:
        assert sender.tick() == 3  # sent while the database is down for the recording
        assert set(Message.objects.values_list("status", flat=True)) == {"sending"}
        database["up"] = True
        assert sender.tick() == 0  # nothing new to claim; the kept sends are recorded
        assert set(Message.objects.values_list("status", flat=True)) == {"sent"}
    finally:
        sender.pool.shutdown(wait=True)
    assert len(calls) == 3  # each sent once: the recording was retried, not the request


@pytest.mark.django_db(transaction=True)
def test_the_send_loop_rides_out_a_database_outage(monkeypatch, settings):
    settings.SENDER_POLL_INTERVAL = 0.01
    monkeypatch.setattr(SandboxProvider, "send", lambda self, sms, s: SendResult([sms.to]))
    real, outage = sender_module.claim_due, [OperationalError("down")] * 3

    def claim_after_outage(*args, **kwargs):
        if outage:
            raise outage.pop()
        return real(*args, **kwargs)

    monkeypatch.setattr(sender_module, "claim_due", claim_after_outage)
    for n in range(3):
        messages.create_outbound(to=f"+4479111{n:05d}", body="hello", source="api")
    assert Sender(concurrency=2).run(max_seconds=1.0) == 3  # no exception: it waited it out
    assert outage == []
    assert set(Message.objects.values_list("status", flat=True)) == {"sent"}


@pytest.mark.django_db(transaction=True)
def test_run_once_still_fails_loudly_when_the_database_is_down(monkeypatch):
    def down(*args, **kwargs):
        raise OperationalError("down")

    monkeypatch.setattr(sender_module, "claim_due", down)
    sender = Sender(concurrency=1)
    with pytest.raises(OperationalError):
        sender.run(once=True)
    sender.pool.shutdown(wait=True)


@pytest.mark.django_db(transaction=True)
def test_a_send_that_cannot_be_recorded_does_not_hold_back_the_others(monkeypatch):
    calls = []
    monkeypatch.setattr(
        SandboxProvider, "send", lambda self, sms, s: calls.append(sms) or SendResult([sms.to])
    )
    poison = messages.create_outbound(to="+447911100000", body="hello", source="api")
    others = [
        messages.create_outbound(to=f"+4479111{n:05d}", body="hello", source="api")
        for n in range(1, 3)
    ]
    real = sender_module.record_accepted

    def refuse_poison(batch):
        if any(a.message.pk == poison.pk for a in batch):
            raise IntegrityError("this row cannot be written")
        return real(batch)

    monkeypatch.setattr(sender_module, "record_accepted", refuse_poison)
    sender = Sender(concurrency=2)
    try:
        assert sender.tick() == 3
        assert {Message.objects.get(pk=m.pk).status for m in others} == {"sent"}
        assert Message.objects.get(pk=poison.pk).status == "sending"
        assert [a.message.pk for a in sender._unrecorded] == [poison.pk]  # kept, lease valid
        # its lease runs out: lease recovery makes it unknown, and it is no longer retried
        expired = timezone.now() - timedelta(seconds=1)
        Message.objects.filter(pk=poison.pk).update(lease_until=expired)
        sender._unrecorded[0].message.lease_until = expired
        sender.tick()
        assert sender._unrecorded == []
        assert Message.objects.get(pk=poison.pk).status == "unknown"
    finally:
        sender.pool.shutdown(wait=True)
    assert len(calls) == 3  # nothing was sent again


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
def test_batches_recorded_while_their_receipts_arrive_lose_no_receipt(on_postgres):
    """The receipts race the recorder: some find the message still `sending` (kept, then applied
    by the batch that records it), some wait for its lock, some come after. Every message ends
    delivered with exactly one delivered event, and nothing stays kept."""
    batch = claimed(60)
    accepted = accept(batch)
    receipts = [
        DeliveryReport(Status.DELIVERED, "DELIVERED", provider_message_id=f"p-{n}",
                       client_reference=str(m.pk),
                       provider_timestamp=datetime(2026, 1, 1, 12, 0, tzinfo=UTC))
        for n, m in enumerate(batch)
    ]  # fmt: skip
    random.Random(5).shuffle(receipts)

    def record():
        for start in range(0, len(accepted), 10):
            record_accepted(accepted[start : start + 10])

    def receive(chunk):
        return lambda: [apply_one("sandbox", r) for r in chunk]

    jobs = [record] + [receive(receipts[i::3]) for i in range(3)]
    run_threads(lambda job: job(), jobs, threads=len(jobs))  # one job a thread, all at once
    assert set(Message.objects.values_list("status", flat=True)) == {"delivered"}
    delivered = StatusEvent.objects.filter(status="delivered", source="webhook")
    assert delivered.count() == 60
    assert len(set(delivered.values_list("message_id", flat=True))) == 60
    assert not UnmatchedReport.objects.filter(matched_at__isnull=True).exists()
