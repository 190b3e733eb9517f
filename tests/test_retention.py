from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from messaging.models import WebhookRequest

pytestmark = pytest.mark.django_db


def stored(days_ago):
    row = WebhookRequest.objects.create(
        provider="sandbox", kind="status", method="POST", path="/webhooks/sandbox/status/",
        headers={"content-type": "application/json"}, body=b'{"status": "delivered"}',
        authenticated=True, state="processed",
    )  # fmt: skip
    WebhookRequest.objects.filter(pk=row.pk).update(
        received_at=timezone.now() - timedelta(days=days_ago)
    )
    return row


def test_old_bodies_are_erased_rows_kept(settings):
    settings.RAW_PAYLOAD_RETENTION_DAYS = 30
    old, recent = stored(40), stored(5)
    out = StringIO()
    call_command("purge_payloads", stdout=out)
    old.refresh_from_db(), recent.refresh_from_db()
    assert (bytes(old.body), old.headers, old.state) == (b"", {}, "processed")
    assert bytes(recent.body) == b'{"status": "delivered"}'
    assert "1 webhook bodies erased" in out.getvalue()
    call_command("purge_payloads", stdout=out)  # idempotent
    assert "0 webhook bodies erased" in out.getvalue().splitlines()[-1]


# --- message bodies and raw event payloads (RETENTION_BODY_DAYS) --------------------------------


def outbound(days_ago, client=None, status="delivered", body="your code is 918273"):
    from messaging.models import Client, Message, StatusEvent

    client = client or Client.objects.default()
    message = Message.objects.create(
        client=client, to_number="+447911123457", body=body, provider="sandbox",
        status=status, metadata={"order": 7}, error_code="", provider_message_id=None,
    )  # fmt: skip
    webhook = stored(days_ago)
    StatusEvent.objects.create(
        message=message, status="delivered", source="webhook",
        raw_payload={"text": body, "status": "DELIVERED"}, webhook_request=webhook,
    )  # fmt: skip
    Message.objects.filter(pk=message.pk).update(
        created_at=timezone.now() - timedelta(days=days_ago),
        sent_at=timezone.now() - timedelta(days=days_ago),
    )
    message.refresh_from_db()
    return message


def test_bodies_and_event_payloads_expire_metadata_stays(settings):
    from messaging.models import StatusEvent

    settings.RETENTION_BODY_DAYS, settings.RAW_PAYLOAD_RETENTION_DAYS = 30, 365
    old, recent = outbound(40), outbound(5)
    out = StringIO()
    call_command("purge_payloads", stdout=out)
    old.refresh_from_db(), recent.refresh_from_db()
    assert old.body == "" and recent.body == "your code is 918273"
    assert (old.status, old.metadata, old.to_number) == ("delivered", {"order": 7}, "+447911123457")
    assert old.sent_at is not None and old.created_at < timezone.now() - timedelta(days=39)
    events = list(old.events.order_by("id"))
    assert [e.raw_payload for e in events] == [None, None]
    assert (events[0].status, events[0].source) == ("delivered", "webhook")  # the fact stays
    erasure = events[-1]
    assert (erasure.source, erasure.status, erasure.applied) == ("retention", "delivered", False)
    assert "older than 30 days" in erasure.note
    assert bytes(events[0].webhook_request.body) == b""  # its webhook request's body too
    assert recent.events.get().raw_payload == {"text": "your code is 918273",
                                               "status": "DELIVERED"}  # fmt: skip
    assert "1 message bodies erased, 1 event payloads erased" in out.getvalue()
    again = StringIO()
    call_command("purge_payloads", stdout=again)  # idempotent: nothing new, no second event
    assert "0 message bodies erased" in again.getvalue()
    assert StatusEvent.objects.filter(source="retention").count() == 1


def test_a_clients_own_retention_wins(settings):
    from messaging.models import Client

    settings.RETENTION_BODY_DAYS = 30
    short = Client.objects.create(name="Short", slug="short", retention_body_days=3)
    long = Client.objects.create(name="Long", slug="long", retention_body_days=400)
    forever_default = outbound(40)
    a, b = outbound(5, client=short), outbound(40, client=long)
    call_command("purge_payloads", stdout=StringIO())
    for m in (forever_default, a, b):
        m.refresh_from_db()
    assert (forever_default.body, a.body, b.body) == ("", "", "your code is 918273")


def test_zero_days_keeps_bodies_and_queued_messages_are_never_erased(settings):
    settings.RETENTION_BODY_DAYS = 0
    kept = outbound(900)
    call_command("purge_payloads", stdout=StringIO())
    kept.refresh_from_db()
    assert kept.body
    settings.RETENTION_BODY_DAYS = 30
    queued = outbound(60, status="queued")
    call_command("purge_payloads", stdout=StringIO())
    queued.refresh_from_db(), kept.refresh_from_db()
    assert queued.body and not kept.body


def test_inbound_messages_without_a_client_expire_too(settings):
    from messaging.models import Message

    settings.RETENTION_BODY_DAYS = 30
    inbound = Message.objects.create(
        direction="inbound", to_number="+1", from_number="+2", body="STOP", provider="sandbox",
        status="received",
    )  # fmt: skip
    Message.objects.filter(pk=inbound.pk).update(created_at=timezone.now() - timedelta(days=31))
    call_command("purge_payloads", stdout=StringIO())
    inbound.refresh_from_db()
    assert inbound.body == "" and inbound.events.get().source == "retention"


def test_batches_with_progress(settings):
    from messaging.models import Message

    settings.RETENTION_BODY_DAYS = 30
    for _ in range(7):
        outbound(45)
    out = StringIO()
    call_command("purge_payloads", "--batch-size", "3", stdout=out)
    progress = [line for line in out.getvalue().splitlines() if "so far" in line]
    assert len(progress) == 3  # 3 + 3 + 1
    assert "7 bodies erased so far" in progress[-1]
    assert not Message.objects.exclude(body="").exists()


def test_the_erase_path_is_narrow():
    from messaging.models import StatusEvent

    message = outbound(40)
    with pytest.raises(TypeError):
        StatusEvent.objects.filter(message=message).update(note="rewritten")
    with pytest.raises(TypeError):
        StatusEvent.objects.filter(message=message).delete()
    event = message.events.get()
    with pytest.raises(TypeError):
        event.save()
    assert StatusEvent.objects.filter(message=message).erase_payloads() == 1
    event.refresh_from_db()
    assert event.raw_payload is None and event.status == "delivered"


def test_an_erased_message_cannot_be_resent(settings):
    from messaging.services import messages

    settings.RETENTION_BODY_DAYS = 30
    message = outbound(40, status="failed")
    call_command("purge_payloads", stdout=StringIO())
    message.refresh_from_db()
    with pytest.raises(messages.NotResendable, match="erased"):
        messages.resend(message, source="admin")


# --- finished status callbacks (CALLBACK_RETENTION_DAYS) -----------------------------------------


def callback(days_ago, state="delivered", message=None, sequence=None, attempts=1):
    import uuid

    from messaging.models import Callback, CallbackAttempt, Client

    now = timezone.now()
    row = Callback.objects.create(
        event_id=f"evt_{uuid.uuid4().hex}", event_type="message.status", occurred_at=now,
        client=message.client if message else Client.objects.default(), message=message,
        sequence=sequence, payload={"to": "+447911123457"}, url="https://example.com/hook",
        state=state, next_attempt_at=now, give_up_at=now,
    )  # fmt: skip
    for _ in range(attempts):
        CallbackAttempt.objects.create(callback=row, started_at=now, http_status=200, ok=True)
    Callback.objects.filter(pk=row.pk).update(created_at=now - timedelta(days=days_ago))
    return row


def test_finished_callbacks_expire_with_their_attempts(settings):
    from messaging.models import Callback, CallbackAttempt

    settings.CALLBACK_RETENTION_DAYS = 30
    m = outbound(40)
    old = [callback(40, message=m, sequence=1), callback(40, "failed", message=m, sequence=2,
                                                          attempts=3)]  # fmt: skip
    newest = callback(40, message=m, sequence=3)  # the message's last: its sequence goes on
    pending = callback(40, "pending", attempts=0)  # still to deliver, whatever its age
    recent = callback(5)
    inbound = callback(40)  # no message (inbound, opt-out events): no sequence to keep
    out = StringIO()
    call_command("purge_payloads", stdout=out)
    assert "purge_payloads: 3 finished callbacks deleted, with 5 attempts" in out.getvalue()
    kept = set(Callback.objects.values_list("pk", flat=True))
    assert kept == {newest.pk, pending.pk, recent.pk}
    assert not kept & {c.pk for c in [*old, inbound]}
    assert not CallbackAttempt.objects.filter(callback_id__in=[c.pk for c in old]).exists()
    assert CallbackAttempt.objects.filter(callback=newest).count() == 1


def test_the_next_callback_of_a_purged_message_continues_its_sequence(settings):
    from messaging.models import Callback
    from messaging.services import callbacks, retention

    settings.CALLBACK_RETENTION_DAYS = 30
    m = outbound(40, status="unknown")
    m.client.callback_url = "https://example.com/hook"
    m.client.save()
    for n in (1, 2):
        callback(40, message=m, sequence=n)
    assert retention.purge_callbacks()["callbacks_deleted"] == 1
    callbacks.emit_status_changes([callbacks.StatusChange(m.pk, "delivered", "", "")])
    assert list(Callback.objects.filter(message=m).order_by("sequence")
                .values_list("sequence", flat=True)) == [2, 3]  # fmt: skip


def test_zero_callback_days_keeps_them_and_batches_report_progress(settings):
    from messaging.models import Callback
    from messaging.services import retention

    settings.CALLBACK_RETENTION_DAYS = 0
    for _ in range(5):
        callback(400)
    assert retention.purge_callbacks() == {"callbacks_deleted": 0,
                                           "callback_attempts_deleted": 0}  # fmt: skip
    lines = []
    done = retention.purge_callbacks(days=30, batch_size=2, progress=lines.append)
    assert done == {"callbacks_deleted": 5, "callback_attempts_deleted": 5}
    assert len(lines) == 3 and lines[-1].startswith("  5 callbacks deleted so far")
    assert not Callback.objects.exists()
