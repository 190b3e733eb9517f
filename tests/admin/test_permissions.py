"""Who may do what in the admin. Evidence (StatusEvent, WebhookRequest) is read-only for
everyone, superusers included; staff without a permission do not see its action or page."""

import pytest
from django.urls import reverse

from messaging.models import Message, StatusEvent, WebhookRequest
from tests.admin.conftest import make_message

pytestmark = pytest.mark.django_db


def action_names(response):
    form = response.context["action_form"]
    return [] if form is None else [value for value, _ in form.fields["action"].choices]


def test_staff_without_resend_permission_does_not_see_the_action(make_staff):
    client = make_staff("view_message")
    make_message(status="failed")
    response = client.get(reverse("admin:messaging_message_changelist"))
    assert response.status_code == 200
    assert "resend_messages" not in action_names(response)
    assert "cancel_messages" not in action_names(response)
    assert b"Resend selected messages" not in response.content


def test_staff_with_resend_permission_sees_the_action(make_staff):
    client = make_staff("view_message", "resend_message")
    make_message(status="failed")
    response = client.get(reverse("admin:messaging_message_changelist"))
    assert "resend_messages" in action_names(response)
    assert "cancel_messages" not in action_names(response)


def test_posting_the_hidden_action_does_nothing(make_staff):
    client = make_staff("view_message")
    message = make_message(status="failed")
    response = client.post(
        reverse("admin:messaging_message_changelist"),
        {"action": "resend_messages", "_selected_action": [message.pk], "post": "yes",
         "reason": "try"},
    )  # fmt: skip
    # The admin ignores an action it did not offer: the changelist again, no confirmation page.
    assert response.status_code in (200, 302)
    assert "herald/resend_confirm.html" not in [t.name for t in response.templates]
    assert not Message.objects.filter(resend_of=message).exists()


def test_resend_and_cancel_pages_need_their_permission(make_staff):
    client = make_staff("view_message")
    failed = make_message(status="failed")
    queued = make_message(status="queued")
    assert (
        client.get(reverse("admin:messaging_message_resend", args=[failed.pk])).status_code == 403
    )
    post = client.post(
        reverse("admin:messaging_message_resend", args=[failed.pk]), {"post": "yes", "reason": "x"}
    )
    assert post.status_code == 403
    assert (
        client.get(reverse("admin:messaging_message_cancel", args=[queued.pk])).status_code == 403
    )
    assert not Message.objects.filter(resend_of=failed).exists()


def test_message_page_hides_buttons_without_permission(make_staff):
    failed = make_message(status="failed")
    viewer = make_staff("view_message")
    page = viewer.get(reverse("admin:messaging_message_change", args=[failed.pk]))
    assert page.status_code == 200
    assert b'id="herald-resend"' not in page.content
    resender = make_staff("view_message", "resend_message")
    page = resender.get(reverse("admin:messaging_message_change", args=[failed.pk]))
    assert b'id="herald-resend"' in page.content


def test_send_page_needs_add_permission(make_staff):
    url = reverse("admin:messaging_message_send")
    assert make_staff("view_message").get(url).status_code == 403
    assert make_staff("view_message", "add_message").get(url).status_code == 200


def test_dashboard_needs_its_permission(make_staff):
    url = reverse("admin:messaging_dashboard")
    assert make_staff("view_message").get(url).status_code == 403
    assert make_staff("view_message", "view_dashboard").get(url).status_code == 200


def test_dashboard_linked_from_the_index_only_with_permission(make_staff):
    index = reverse("admin:index")
    dashboard = reverse("admin:messaging_dashboard").encode()
    assert dashboard not in make_staff("view_message").get(index).content
    assert dashboard in make_staff("view_message", "view_dashboard").get(index).content


def test_replay_action_hidden_without_permission(make_staff):
    WebhookRequest.objects.create(
        provider="sandbox", kind="status", method="POST", path="/webhooks/sandbox/status/",
        authenticated=True, state="processed",
    )  # fmt: skip
    url = reverse("admin:messaging_webhookrequest_changelist")
    assert "replay_selected" not in action_names(make_staff("view_webhookrequest").get(url))
    allowed = make_staff("view_webhookrequest", "replay_webhookrequest").get(url)
    assert "replay_selected" in action_names(allowed)


# --- evidence is read-only for everyone -----------------------------------------------------


@pytest.fixture
def evidence():
    message = make_message(status="delivered")
    stored = WebhookRequest.objects.create(
        provider="sandbox", kind="status", method="POST", path="/webhooks/sandbox/status/",
        body=b'{"status": "delivered"}', authenticated=True, state="processed",
    )  # fmt: skip
    event = StatusEvent.objects.create(
        message=message, status="delivered", source="webhook", webhook_request=stored
    )
    return message, event, stored


@pytest.mark.parametrize("model", ["statusevent", "webhookrequest", "message"])
def test_evidence_cannot_be_added(superuser_client, model):
    url = reverse(f"admin:messaging_{model}_add")
    assert superuser_client.get(url).status_code == 403
    assert superuser_client.post(url, {"status": "delivered", "source": "admin"}).status_code == 403


@pytest.mark.parametrize("model", ["statusevent", "webhookrequest", "message"])
def test_evidence_cannot_be_changed_or_deleted(superuser_client, evidence, model):
    message, event, stored = evidence
    obj = {"statusevent": event, "webhookrequest": stored, "message": message}[model]
    change = reverse(f"admin:messaging_{model}_change", args=[obj.pk])
    delete = reverse(f"admin:messaging_{model}_delete", args=[obj.pk])
    page = superuser_client.get(change)
    assert page.status_code == 200  # viewable...
    assert b'name="_save"' not in page.content  # ...but there is nothing to save
    assert superuser_client.post(change, {"status": "failed", "note": "x"}).status_code == 403
    assert superuser_client.get(delete).status_code == 403
    assert superuser_client.post(delete, {"post": "yes"}).status_code == 403
    event.refresh_from_db()
    stored.refresh_from_db()
    message.refresh_from_db()
    assert (event.status, stored.state, message.status) == ("delivered", "processed", "delivered")


@pytest.mark.parametrize("model", ["statusevent", "webhookrequest", "message"])
def test_no_delete_action_on_evidence(superuser_client, evidence, model):
    response = superuser_client.get(reverse(f"admin:messaging_{model}_changelist"))
    assert "delete_selected" not in action_names(response)
