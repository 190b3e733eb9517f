"""The sandbox end to end over real HTTP: API -> sender -> signed receipts posted to the live
server's webhook -> final status, with every step in the audit trail."""

import time

import pytest

from messaging.models import Message, SandboxReceipt, StatusEvent, WebhookRequest
from messaging.sender import Sender

pytestmark = pytest.mark.django_db(transaction=True)


def drain(max_seconds=20):
    """Run the sender until nothing is due and every sandbox receipt is posted."""
    sender = Sender(concurrency=4, batch_size=20)
    deadline = time.monotonic() + max_seconds
    while time.monotonic() < deadline:
        sender.tick()
        pending = SandboxReceipt.objects.filter(delivered_at__isnull=True).exists()
        due = Message.objects.filter(status="queued").exists()
        if not pending and not due:
            break
        time.sleep(0.05)
    sender.pool.shutdown()


def send(api, to, body="Hello from Herald"):
    response = api.post("/api/v1/messages/", {"to": to, "body": body}, format="json")
    assert response.status_code == 202, response.content
    return Message.objects.get(pk=response.json()["id"])


def statuses(message):
    return list(message.events.order_by("id").values_list("status", "applied"))


def test_delivered_with_full_timeline(api, public_url):
    message = send(api, "+447911123457")
    drain()
    message.refresh_from_db()
    assert message.status == "delivered"
    assert message.provider_message_id
    assert statuses(message) == [
        ("queued", True),
        ("sending", True),
        ("sent", True),
        ("sent", False),  # the provider's `accepted` receipt: no change after our own `sent`
        ("delivered", True),
    ]
    assert WebhookRequest.objects.filter(authenticated=True, state="processed").count() == 2


def test_failed_and_expired(api, public_url):
    failed = send(api, "+447911123450")
    expired = send(api, "+447911123451")
    drain()
    failed.refresh_from_db()
    expired.refresh_from_db()
    assert (failed.status, failed.error_code) == ("failed", "absent-subscriber")
    assert (expired.status, expired.error_code) == ("expired", "ttl-expired")


def test_duplicated_and_out_of_order_receipts(api, public_url):
    message = send(api, "+447911123452")
    drain()
    message.refresh_from_db()
    assert message.status == "delivered"
    webhook_events = message.events.filter(source="webhook").order_by("id")
    # three posts, one exact duplicate: two distinct receipts, the duplicate shown as ignored
    assert WebhookRequest.objects.filter(state="processed").count() == 3
    assert list(webhook_events.values_list("status", "applied")) == [
        ("delivered", True),
        ("sent", False),
        ("delivered", False),
    ]
    assert "final" in webhook_events.get(status="sent").note
    assert "duplicate" in webhook_events.last().note


def test_no_receipt_stays_sent(api, public_url):
    message = send(api, "+447911123453")
    drain()
    message.refresh_from_db()
    assert message.status == "sent"


def test_refused_at_send(api, public_url):
    message = send(api, "+447911123454")
    drain()
    message.refresh_from_db()
    assert (message.status, message.error_code) == ("rejected", "invalid-destination")


def test_throttled_then_retried(api, public_url, settings):
    settings.SENDER_BACKOFF_BASE = 0.01
    message = send(api, "+447911123455")
    drain()
    message.refresh_from_db()
    assert message.status == "delivered"
    assert message.attempts == 2
    retry = message.events.get(status="queued", source="sender")
    assert retry.error_code == "throttled"


def test_ambiguous_send_becomes_unknown_then_resolves(api, public_url):
    message = send(api, "+447911123456")
    drain()
    message.refresh_from_db()
    assert message.attempts == 1  # never resent blindly
    events = statuses(message)
    assert ("unknown", True) in events
    # the late receipt is matched by our reference and resolves unknown
    assert message.status == "delivered"


def test_multipart_rolls_up_per_part_receipts(api, public_url):
    message = send(api, "+447911123459", body="x" * 200)
    assert message.segments == 2
    drain()
    message.refresh_from_db()
    assert message.parts.count() == 2
    assert set(message.parts.values_list("status", flat=True)) == {"delivered"}
    assert message.status == "delivered"
    delivered = message.events.filter(status="delivered", source="webhook")
    assert [e.applied for e in delivered] == [False, True]  # the second part completes it
    assert StatusEvent.objects.filter(message=message, source="webhook").count() == 4
