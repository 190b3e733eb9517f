"""Delivery to a real HTTP receiver on 127.0.0.1: Standard Webhooks signatures (verified with
the `standardwebhooks` library), sequence order, retries until a 2xx, give-up, the circuit
breaker, redirects, replay."""

import json
import time
from datetime import timedelta

import pytest
from django.utils import timezone
from standardwebhooks import Webhook, WebhookVerificationError

from messaging.callback_http import Transport
from messaging.models import Callback, CallbackAttempt, CallbackEndpoint
from messaging.providers.base import DeliveryReport, SendResult
from messaging.services import callback_delivery, callbacks, messages
from messaging.services.receipts import apply_one as apply_report
from messaging.services.sending import claim_due
from messaging.status import Status
from tests.callbacks.conftest import drain, make_client, running_receiver
from tests.sending import record_sent

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("local_callbacks")]


def life(client, n=0):
    """A message taken through sending, sent and delivered: three events."""
    message = messages.create_outbound(to=f"+4477009{n:05d}", body="hi", source="api",
                                       client=client)  # fmt: skip
    [claimed] = claim_due(1, "sender")
    record_sent(claimed, SendResult([f"p-{n}"]))
    apply_report(
        "sandbox", DeliveryReport(Status.DELIVERED, "DELIVRD", provider_message_id=f"p-{n}")
    )
    return message


def test_every_event_arrives_signed_in_sequence_order(receiver):
    client, secret = make_client("acme", receiver.url())
    message = life(client)
    drain()
    got = receiver.wait_for(3)
    bodies = [Webhook(secret).verify(r.body, r.headers) for r in got]  # raises if not signed
    assert [(b["data"]["sequence"], b["data"]["status"]) for b in bodies] == [
        (1, "sending"), (2, "sent"), (3, "delivered")
    ]  # fmt: skip
    assert all(b["data"]["message_id"] == str(message.pk) for b in bodies)
    assert [r.headers["webhook-id"] for r in got] == [b["id"] for b in bodies]
    assert got[0].headers["Content-Type"] == "application/json"
    assert set(Callback.objects.values_list("state", flat=True)) == {"delivered"}
    attempt = CallbackAttempt.objects.first()
    assert attempt.ok and attempt.http_status == 200 and attempt.response_excerpt == '{"ok": true}'
    with pytest.raises(WebhookVerificationError):
        Webhook(callbacks.new_secret()).verify(got[0].body, got[0].headers)


def test_during_a_rotation_both_secrets_verify(receiver):
    client, old = make_client("acme", receiver.url())
    new = callbacks.rotate_secret(client)
    life(client)
    drain()
    request = receiver.wait_for(3)[0]
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(request.body, request.headers)
    Webhook(new).verify(request.body, request.headers)
    assert callbacks.retire_previous_secret(client)
    messages.cancel(messages.create_outbound(to="+447700900999", body="x", source="api",
                                             client=client))  # fmt: skip
    drain()
    last = receiver.wait_for(4)[-1]
    assert len(last.headers["webhook-signature"].split(" ")) == 1
    Webhook(new).verify(last.body, last.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(last.body, last.headers)


def test_a_later_event_waits_for_an_earlier_one_that_is_being_retried():
    with running_receiver(plan=lambda n, path: (500, 0, {}) if n <= 2 else (200, 0, {})) as r:
        client, secret = make_client("acme", r.url())
        life(client)
        for _ in range(30):
            drain()
            if not Callback.objects.filter(state="pending").exists():
                break
            time.sleep(0.03)
        got = r.requests
    sequences = [json.loads(x.body)["data"]["sequence"] for x in got]
    assert sequences == [1, 1, 1, 2, 3]  # 1 fails twice, then 1, 2, 3 in order
    first = Callback.objects.get(sequence=1)
    assert first.attempts == 3 and first.state == "delivered"
    assert len({x.headers["webhook-id"] for x in got[:3]}) == 1  # retries: the same event
    assert [a.http_status for a in first.attempts_log.all()] == [500, 500, 200]


def test_an_endpoint_failing_its_first_requests_receives_every_event(settings):
    settings.CALLBACK_CIRCUIT_THRESHOLD = 100
    failing = 7
    with running_receiver(plan=lambda n, path: (500 if n <= failing else 200, 0, {})) as r:
        client, _ = make_client("acme", r.url())
        for n in range(4):
            life(client, n)
        deadline = time.monotonic() + 20
        while Callback.objects.filter(state="pending").exists():
            assert time.monotonic() < deadline
            drain()
            time.sleep(0.02)
        got = r.requests
    ok_ids = {x.headers["webhook-id"] for x in got[failing:]}
    assert ok_ids == set(Callback.objects.values_list("event_id", flat=True))  # all 12
    assert len(got) == 12 + failing
    assert Callback.objects.filter(state="delivered").count() == 12


def test_gives_up_after_the_max_age_and_stays_visible(settings):
    settings.CALLBACK_BACKOFF_BASE = 60  # one attempt per drain
    with running_receiver(plan=lambda n, path: (503, 0, {})) as r:
        client, _ = make_client("acme", r.url())
        messages.cancel(messages.create_outbound(to="+447700900999", body="x", source="api",
                                                 client=client))  # fmt: skip
        drain()
        callback = Callback.objects.get()
        assert callback.state == "pending" and callback.attempts == 1
        assert callback.give_up_at - callback.occurred_at == timedelta(hours=24)
        Callback.objects.update(give_up_at=timezone.now(), next_attempt_at=timezone.now())
        drain()
    callback.refresh_from_db()
    assert callback.state == "failed" and callback.attempts == 2
    assert callback.last_error.startswith("gave up after 2 attempts: HTTP 503")


def test_backoff_grows_exponentially_with_jitter_and_a_cap(settings):
    settings.CALLBACK_BACKOFF_BASE, settings.CALLBACK_BACKOFF_CAP = 5, 1800
    for attempt, full in ((1, 5), (2, 10), (4, 40), (12, 1800)):
        delays = [callback_delivery.backoff_seconds(attempt) for _ in range(50)]
        assert all(full / 2 <= d <= full for d in delays)
        assert len(set(delays)) > 1


def test_overdue_callbacks_behind_an_open_circuit_are_failed_by_the_sweep():
    client, _ = make_client("acme", "http://127.0.0.1:18299/never")
    messages.cancel(messages.create_outbound(to="+447700900999", body="x", source="api",
                                             client=client))  # fmt: skip
    Callback.objects.update(give_up_at=timezone.now() - timedelta(minutes=5))
    assert callback_delivery.expire_overdue() == 1
    assert Callback.objects.get().state == "failed"


def test_redirects_are_not_followed(settings):
    settings.CALLBACK_BACKOFF_BASE = 60  # one attempt
    target = []
    with (
        running_receiver() as elsewhere,
        running_receiver(
            plan=lambda n, path: (302, 0, {"Location": elsewhere.url("/internal")})
        ) as r,
    ):
        client, _ = make_client("acme", r.url())
        messages.cancel(messages.create_outbound(to="+447700900999", body="x", source="api",
                                                 client=client))  # fmt: skip
        drain()
        target = list(elsewhere.requests)
        assert len(r.requests) == 1
    assert target == []
    attempt = CallbackAttempt.objects.get()
    assert attempt.http_status == 302 and not attempt.ok
    assert attempt.error.startswith("redirect not followed (Location: http://127.0.0.1")
    assert Callback.objects.get().state == "pending"


def test_repeated_failures_open_the_circuit_then_a_probe_closes_it(settings):
    settings.CALLBACK_CIRCUIT_THRESHOLD = 3
    settings.CALLBACK_CIRCUIT_COOLDOWN = 0.3
    healthy = False
    with running_receiver(plan=lambda n, path: (200 if healthy else 500, 0, {})) as r:
        client, _ = make_client("acme", r.url())
        for n in range(5):
            messages.cancel(messages.create_outbound(to=f"+4477009{n:05d}", body="x",
                                                     source="api", client=client))  # fmt: skip
        for _ in range(3):
            drain(rounds=1)
            Callback.objects.update(next_attempt_at=timezone.now())
        endpoint = CallbackEndpoint.objects.get(url=r.url())
        assert endpoint.circuit == "open" and endpoint.consecutive_failures >= 3
        before = len(r.requests)
        assert callback_delivery.claim_due("w", 50) == []  # open: nothing is sent
        time.sleep(0.35)
        healthy = True
        probe = callback_delivery.claim_due("w2", 50)
        assert len(probe) == 1  # half open: one probe
        assert callback_delivery.claim_due("w3", 50) == []  # and only one, across workers
        callback_delivery.deliver(probe[0], Transport(), "w2")
        endpoint.refresh_from_db()
        assert endpoint.circuit == "closed" and endpoint.consecutive_failures == 0
        drain()
        assert len(r.requests) == before + 5
    assert Callback.objects.filter(state="delivered").count() == 5


def test_replay_is_the_same_event_recorded_with_who_asked(receiver, staff):
    client, secret = make_client("acme", receiver.url())
    messages.cancel(messages.create_outbound(to="+447700900999", body="x", source="api",
                                             client=client))  # fmt: skip
    drain()
    callback = Callback.objects.get()
    callbacks.replay(callback, actor=staff)
    drain()
    first, again = receiver.wait_for(2)
    assert first.headers["webhook-id"] == again.headers["webhook-id"] == callback.event_id
    assert first.body == again.body
    Webhook(secret).verify(again.body, again.headers)
    attempts = list(CallbackAttempt.objects.order_by("id"))
    assert [a.replayed_by for a in attempts] == [None, staff]
    callback.refresh_from_db()
    assert callback.state == "delivered" and callback.replay_requested_by is None
