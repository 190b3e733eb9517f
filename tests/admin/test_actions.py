"""Every staff action, exercised through the admin: send, resend (single and bulk, with the
confirmation page, a reason and another provider), cancel, and webhook replay. Each lands in
the timeline with the acting user."""

import json
import time

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils import timezone

from messaging import providers
from messaging.admin import actions as admin_actions
from messaging.models import Message, OptOut, StatusEvent, WebhookRequest
from messaging.providers.base import WebhookInput
from messaging.providers.sandbox import sign
from messaging.services import webhooks
from tests.admin.conftest import make_message

pytestmark = pytest.mark.django_db
CHANGELIST = reverse("admin:messaging_message_changelist")


def flashes(response):
    return [str(m) for m in get_messages(response.wsgi_request)]


@pytest.fixture
def second_provider(settings):
    """A second enabled provider (the sandbox again under another name)."""
    settings.SMS_PROVIDERS = {
        **settings.SMS_PROVIDERS,
        "sandbox-b": {**settings.SMS_PROVIDERS["sandbox"]},
    }
    settings.SMS_PROVIDERS_ENABLED = [*settings.SMS_PROVIDERS_ENABLED, "sandbox-b"]
    return "sandbox-b"


# --- Send SMS ----------------------------------------------------------------------------------

SEND = reverse("admin:messaging_message_send")


def test_send_sms_queues_a_message_with_the_acting_user(superuser_client):
    response = superuser_client.post(
        SEND,
        {"to": "+44 7911 123457", "body": "Hi from the admin", "provider": "sandbox",
         "client_reference": "adm-1"},
    )  # fmt: skip
    message = Message.objects.get(client_reference="adm-1")
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:messaging_message_change", args=[message.pk])
    assert (message.to_number, message.status, message.created_by) == (
        "+447911123457", "queued", superuser_client.user,
    )  # fmt: skip
    event = message.events.get()
    assert (event.source, event.actor, event.status) == ("admin", superuser_client.user, "queued")


@pytest.mark.parametrize(
    "data,field,text",
    [
        ({"to": "12", "body": "x"}, "to", "not a phone number in international format"),
        ({"to": "+44791112345", "body": "x"}, "to", "not a valid phone number"),
        ({"to": "+447911123457", "body": "   "}, "body", "must not be empty"),
        ({"to": "+447911123457", "body": "x" * 1601}, "body", "the limit is 1600"),
        ({"to": "+447911123457", "body": "x", "provider": "nope"}, "provider", "valid choice"),
        ({"to": "+447911123457", "body": "x", "send_at": "2001-01-01 10:00"}, "send_at",
         "must not be in the past"),
    ],
)  # fmt: skip
def test_send_sms_refuses_what_the_api_refuses(superuser_client, api, data, field, text):
    response = superuser_client.post(SEND, {"provider": "sandbox", **data})
    assert response.status_code == 200
    assert text in " ".join(response.context["form"].errors[field])
    assert not Message.objects.exists()
    api_data = dict(data)
    if "send_at" in api_data:
        api_data["send_at"] = "2001-01-01T10:00:00Z"
    assert api.post("/api/v1/messages/", api_data, format="json").status_code == 400


def test_send_sms_to_an_opted_out_number_is_a_clear_error(superuser_client, api):
    OptOut.objects.create(phone_number="+447911123457", keyword="STOP")
    response = superuser_client.post(
        SEND, {"to": "447911123457", "body": "hello", "provider": "sandbox"}
    )
    errors = response.context["form"].errors["to"]
    assert errors == [
        "+447911123457 has opted out of messages (they sent STOP). It cannot be sent to until "
        "they opt back in."
    ]
    assert b"has opted out" in response.content
    assert not Message.objects.exists()
    api_response = api.post("/api/v1/messages/", {"to": "+447911123457", "body": "hello"})
    assert api_response.status_code == 422


def test_send_through_another_enabled_provider(superuser_client, second_provider):
    superuser_client.post(SEND, {"to": "+447911123457", "body": "x", "provider": "sandbox-b"})
    assert Message.objects.get().provider == "sandbox-b"


# --- Resend --------------------------------------------------------------------------------


def test_single_resend_confirmation_then_linked_copy(superuser_client, second_provider):
    original = make_message(status="failed", error_code="absent-subscriber")
    url = reverse("admin:messaging_message_resend", args=[original.pk])

    page = superuser_client.get(url)
    assert page.status_code == 200
    assert "herald/confirm_repair.html" in [t.name for t in page.templates]
    assert not Message.objects.filter(resend_of=original).exists()  # nothing before confirming

    no_reason = superuser_client.post(url, {"post": "yes", "reason": " "})
    assert no_reason.status_code == 200 and no_reason.context["form"].errors["reason"]
    assert not Message.objects.filter(resend_of=original).exists()

    done = superuser_client.post(
        url, {"post": "yes", "reason": "handset back online", "provider": "sandbox-b"}
    )
    copy = Message.objects.get(resend_of=original)
    assert done.status_code == 302
    assert done["Location"] == reverse("admin:messaging_message_change", args=[copy.pk])
    assert (copy.provider, copy.status, copy.resend_reason) == (
        "sandbox-b", "queued", "handset back online",
    )  # fmt: skip
    assert copy.created_by == superuser_client.user
    original.refresh_from_db()
    assert original.status == "failed"  # the original keeps its status
    note = original.events.get(source="admin")
    assert note.actor == superuser_client.user and not note.applied
    assert str(copy.pk) in note.note and "handset back online" in note.note
    first = copy.events.get()
    assert (first.source, first.actor) == ("admin", superuser_client.user)
    assert "handset back online" in first.note

    # links both ways on the message pages
    original_page = superuser_client.get(
        reverse("admin:messaging_message_change", args=[original.pk])
    ).content.decode()
    copy_page = superuser_client.get(
        reverse("admin:messaging_message_change", args=[copy.pk])
    ).content.decode()
    assert reverse("admin:messaging_message_change", args=[copy.pk]) in original_page
    assert reverse("admin:messaging_message_change", args=[original.pk]) in copy_page


def test_single_resend_refused_for_a_delivered_message(superuser_client):
    delivered = make_message(status="delivered")
    url = reverse("admin:messaging_message_resend", args=[delivered.pk])
    page = superuser_client.get(url)
    assert b"None of the selected messages can be resent" in page.content
    superuser_client.post(url, {"post": "yes", "reason": "x"})
    assert not Message.objects.filter(resend_of=delivered).exists()


def test_bulk_resend_with_confirmation_reason_and_provider(superuser_client, second_provider):
    failed = make_message(status="failed")
    expired = make_message(status="expired")
    unknown = make_message(status="unknown")
    delivered = make_message(status="delivered")
    selected = [failed.pk, expired.pk, unknown.pk, delivered.pk]

    confirm = superuser_client.post(
        CHANGELIST, {"action": "resend_messages", "_selected_action": selected}
    )
    assert confirm.status_code == 200
    assert confirm.context["allowed_count"] == 3
    assert [m.pk for m in confirm.context["skipped"]] == [delivered.pk]
    assert not Message.objects.filter(resend_of__isnull=False).exists()

    done = superuser_client.post(
        CHANGELIST,
        {"action": "resend_messages", "_selected_action": confirm.context["selected_ids"],
         "post": "yes", "reason": "carrier outage over", "provider": "sandbox-b"},
    )  # fmt: skip
    assert done.status_code == 302
    copies = Message.objects.filter(resend_of__isnull=False)
    assert {c.resend_of_id for c in copies} == {failed.pk, expired.pk, unknown.pk}
    assert {c.provider for c in copies} == {"sandbox-b"}
    assert {c.resend_reason for c in copies} == {"carrier outage over"}
    assert "Resent 3 message(s)" in " ".join(flashes(done))
    for original in (failed, expired, unknown):
        original.refresh_from_db()
        assert original.status in ("failed", "expired", "unknown")
        assert original.events.filter(source="admin", actor=superuser_client.user).count() == 1


def test_bulk_resend_keeps_each_original_provider_by_default(superuser_client, second_provider):
    a = make_message(status="failed", provider="sandbox")
    b = make_message(status="failed", provider="sandbox-b")
    superuser_client.post(
        CHANGELIST,
        {"action": "resend_messages", "_selected_action": [a.pk, b.pk], "post": "yes",
         "reason": "retry", "provider": ""},
    )  # fmt: skip
    assert Message.objects.get(resend_of=a).provider == "sandbox"
    assert Message.objects.get(resend_of=b).provider == "sandbox-b"


def test_bulk_resend_over_the_limit_is_refused(superuser_client, monkeypatch):
    monkeypatch.setattr(admin_actions, "MAX_BULK", 2)
    rows = [make_message(status="failed").pk for _ in range(3)]
    response = superuser_client.post(
        CHANGELIST, {"action": "resend_messages", "_selected_action": rows}, follow=True
    )
    assert "at most 2" in " ".join(flashes(response))
    assert not Message.objects.filter(resend_of__isnull=False).exists()


def test_resend_to_a_number_that_opted_out_since_is_reported(superuser_client):
    failed = make_message(status="failed", to_number="+447911123450")
    OptOut.objects.create(phone_number="+447911123450")
    response = superuser_client.post(
        reverse("admin:messaging_message_resend", args=[failed.pk]),
        {"post": "yes", "reason": "retry"},
        follow=True,
    )
    assert any("opted out" in m for m in flashes(response))
    assert not Message.objects.filter(resend_of=failed).exists()


# --- Cancel ------------------------------------------------------------------------------------


def test_bulk_cancel_of_queued_messages(superuser_client):
    queued = make_message(status="queued")
    sent = make_message(status="sent")
    confirm = superuser_client.post(
        CHANGELIST, {"action": "cancel_messages", "_selected_action": [queued.pk, sent.pk]}
    )
    assert confirm.context["allowed_count"] == 1
    queued.refresh_from_db()
    assert queued.status == "queued"  # not before confirming
    superuser_client.post(
        CHANGELIST,
        {"action": "cancel_messages", "_selected_action": [queued.pk], "post": "yes",
         "reason": "wrong campaign"},
    )  # fmt: skip
    queued.refresh_from_db()
    sent.refresh_from_db()
    assert (queued.status, queued.error_code) == ("cancelled", "cancelled")
    assert sent.status == "sent"
    event = queued.events.get(source="admin")
    assert event.actor == superuser_client.user and "wrong campaign" in event.note


def test_single_cancel_page(superuser_client):
    queued = make_message(status="queued")
    url = reverse("admin:messaging_message_cancel", args=[queued.pk])
    assert b"herald-cancel-form" in superuser_client.get(url).content
    response = superuser_client.post(url, {"post": "yes", "reason": ""})
    assert response.status_code == 302
    queued.refresh_from_db()
    assert queued.status == "cancelled"


def test_cancel_action_needs_permission(make_staff):
    client = make_staff("view_message", "cancel_message")
    queued = make_message(status="queued")
    client.post(
        CHANGELIST,
        {"action": "cancel_messages", "_selected_action": [queued.pk], "post": "yes"},
    )
    queued.refresh_from_db()
    assert queued.status == "cancelled"


# --- Webhook replay --------------------------------------------------------------------------


def post_receipt(client, payload, secret=None):
    secret = secret or providers.get_provider("sandbox").secrets("WEBHOOK_SECRET")[0]
    body = json.dumps(payload).encode()
    stamp = str(int(time.time()))
    return client.post(
        "/webhooks/sandbox/status/",
        data=body,
        content_type="application/json",
        HTTP_X_SANDBOX_TIMESTAMP=stamp,
        HTTP_X_SANDBOX_SIGNATURE=sign(secret, stamp, body),
    )


def receipt(message, status="delivered"):
    return {
        "message_id": message.provider_message_id,
        "client_ref": str(message.pk),
        "status": status,
        "error_code": "",
        "timestamp": timezone.now().isoformat(),
    }


def replay(client, stored_ids):
    return client.post(
        reverse("admin:messaging_webhookrequest_changelist"),
        {"action": "replay_selected", "_selected_action": stored_ids},
    )


def test_replay_is_idempotent(client, superuser_client):
    message = make_message(status="sent", provider_message_id="sbx-1", parts=["sbx-1"])
    assert post_receipt(client, receipt(message)).status_code == 200
    stored = WebhookRequest.objects.get()
    assert stored.state == "processed"
    webhook_events = StatusEvent.objects.filter(message=message, source="webhook")
    assert webhook_events.count() == 1

    replay(superuser_client, [stored.pk])
    replay(superuser_client, [stored.pk])

    assert webhook_events.count() == 1  # no duplicate receipt event
    notes = StatusEvent.objects.filter(message=message, source="admin")
    assert notes.count() == 2 and {e.actor for e in notes} == {superuser_client.user}
    assert all("0 new event(s)" in e.note for e in notes)
    message.refresh_from_db()
    assert message.status == "delivered"


def test_replay_applies_a_stored_request_that_was_never_processed(superuser_client):
    message = make_message(status="sent", provider_message_id="sbx-2", parts=["sbx-2"])
    body = json.dumps(receipt(message)).encode()
    stored = webhooks.store(
        "sandbox", "status",
        WebhookInput(method="POST", url="http://x/webhooks/sandbox/status/",
                     headers={"content-type": "application/json"}, body=body),
        "/webhooks/sandbox/status/", authenticated=True,
    )  # fmt: skip
    assert stored.state == "received"
    response = replay(superuser_client, [stored.pk])
    assert response.status_code == 302
    message.refresh_from_db()
    stored.refresh_from_db()
    assert (message.status, stored.state) == ("delivered", "processed")
    assert StatusEvent.objects.filter(message=message, source="webhook").count() == 1
    replay(superuser_client, [stored.pk])
    assert StatusEvent.objects.filter(message=message, source="webhook").count() == 1


def test_replay_skips_unauthenticated_requests(client, superuser_client):
    message = make_message(status="sent", provider_message_id="sbx-3", parts=["sbx-3"])
    assert post_receipt(client, receipt(message), secret="wrong").status_code == 401
    stored = WebhookRequest.objects.get()
    response = replay(superuser_client, [stored.pk])
    assert any("only authenticated" in m for m in flashes(response))
    message.refresh_from_db()
    assert message.status == "sent"
    assert not StatusEvent.objects.filter(message=message, source__in=["webhook", "admin"])


def test_replay_button_on_the_request_page(client, superuser_client):
    message = make_message(status="sent", provider_message_id="sbx-4", parts=["sbx-4"])
    post_receipt(client, receipt(message))
    stored = WebhookRequest.objects.get()
    page = superuser_client.get(reverse("admin:messaging_webhookrequest_change", args=[stored.pk]))
    assert b"herald-replay-form" in page.content
    url = reverse("admin:messaging_webhookrequest_replay", args=[stored.pk])
    assert superuser_client.get(url).status_code == 403  # state changes only by POST
    assert superuser_client.post(url).status_code == 302
    assert StatusEvent.objects.filter(message=message, source="admin").count() == 1


def test_replay_needs_permission(client, make_staff):
    message = make_message(status="sent", provider_message_id="sbx-5", parts=["sbx-5"])
    post_receipt(client, receipt(message))
    stored = WebhookRequest.objects.get()
    viewer = make_staff("view_webhookrequest")
    url = reverse("admin:messaging_webhookrequest_replay", args=[stored.pk])
    assert viewer.post(url).status_code == 403
    assert (
        b"herald-replay-form"
        not in viewer.get(
            reverse("admin:messaging_webhookrequest_change", args=[stored.pk])
        ).content
    )


# --- Resends cannot double ---------------------------------------------------------------------


def test_a_second_resend_is_refused_unless_send_again_anyway(superuser_client):
    original = make_message(status="failed")
    url = reverse("admin:messaging_message_resend", args=[original.pk])
    superuser_client.post(url, {"post": "yes", "reason": "first try"})
    first = Message.objects.get(resend_of=original)

    page = superuser_client.get(url)
    html = page.content.decode()
    assert 'id="herald-already-resent"' in html  # the lineage, before confirming
    assert reverse("admin:messaging_message_change", args=[first.pk]) in html
    assert "send_again" in page.context["form"].fields

    again = superuser_client.post(url, {"post": "yes", "reason": "double click"}, follow=True)
    assert Message.objects.filter(resend_of=original).count() == 1
    assert any("already resent" in m for m in flashes(again))

    no_reason = superuser_client.post(url, {"post": "yes", "send_again": "on", "reason": ""})
    assert no_reason.status_code == 200 and no_reason.context["form"].errors["reason"]
    assert Message.objects.filter(resend_of=original).count() == 1

    superuser_client.post(url, {"post": "yes", "send_again": "on", "reason": "still nothing"})
    assert Message.objects.filter(resend_of=original).count() == 2


def test_bulk_resend_skips_the_already_resent_ones(superuser_client):
    resent = make_message(status="failed")
    fresh = make_message(status="failed")
    make_message(status="queued", resend_of=resent)
    confirm = superuser_client.post(
        CHANGELIST, {"action": "resend_messages", "_selected_action": [resent.pk, fresh.pk]}
    )
    assert confirm.context["already_resent"] == 1
    superuser_client.post(
        CHANGELIST,
        {"action": "resend_messages", "_selected_action": [resent.pk, fresh.pk], "post": "yes",
         "reason": "outage over"},
    )  # fmt: skip
    assert Message.objects.filter(resend_of=resent).count() == 1  # not a second copy
    assert Message.objects.filter(resend_of=fresh).count() == 1


def test_the_service_refuses_a_second_resend(staff):
    from messaging.errors import AlreadyResent
    from messaging.services import messages as message_service

    original = make_message(status="expired")
    message_service.resend(original, source="admin", actor=staff, reason="a")
    with pytest.raises(AlreadyResent):
        message_service.resend(original, source="admin", actor=staff, reason="b")
    message_service.resend(original, source="admin", actor=staff, reason="c", repeat=True)
    assert Message.objects.filter(resend_of=original).count() == 2


def test_a_cancelled_message_has_its_own_status_and_is_not_an_error(superuser_client):
    from messaging import selectors

    queued = make_message(status="queued")
    superuser_client.post(
        reverse("admin:messaging_message_cancel", args=[queued.pk]), {"post": "yes"}
    )
    queued.refresh_from_db()
    assert queued.status == "cancelled" and queued.completed_at is not None
    figures = selectors.dashboard("24h")
    assert {r["status"]: r["count"] for r in figures["by_status"]}.get("cancelled") == 1
    assert not [r for r in figures["top_errors"] if r["error_code"] == "cancelled"]
    listed = superuser_client.get(CHANGELIST, {"status__exact": "cancelled"})
    assert [m.pk for m in listed.context["cl"].result_list] == [queued.pk]


def test_the_api_status_filter_knows_cancelled(api):
    assert api.get("/api/v1/messages/", {"status": "cancelled"}).status_code == 200
    assert api.get("/api/v1/messages/", {"status": "cancelledx"}).status_code == 400
