"""The message page: only the facts that apply to the message, times with seconds and zone in the
staff user's zone, the live endpoint the page polls while the message is not final (no inline
script), and the timeline's wording. Also migration 0007's move of staff cancellations."""

import importlib
import re
from datetime import UTC, datetime

import pytest
from django.apps import apps as django_apps
from django.urls import reverse

from messaging.admin import display
from messaging.models import Message, StatusEvent
from tests.admin.conftest import make_message

pytestmark = pytest.mark.django_db


def page(client, message, **kwargs):
    response = client.get(reverse("admin:messaging_message_change", args=[message.pk]), **kwargs)
    assert response.status_code == 200
    return response


def facts(response):
    return {name: str(value) for name, _, value in response.context["summary"]}


def test_delivered_message_has_no_next_attempt(superuser_client):
    when = datetime(2026, 3, 1, 20, 17, 5, tzinfo=UTC)
    message = make_message(
        status="delivered", next_attempt_at=when, sent_at=when, completed_at=when, attempts=1
    )
    shown = facts(page(superuser_client, message))
    assert "next_attempt_at" not in shown
    assert "2026-03-01 20:17:05 UTC" in shown["sent_at"]  # seconds and zone, no "8:17 p.m."
    assert "completed_at" in shown and "error" not in shown and "price" not in shown


def test_queued_message_shows_its_next_attempt_and_no_completion(superuser_client):
    message = make_message(status="queued", next_attempt_at=datetime(2026, 3, 1, tzinfo=UTC))
    shown = facts(page(superuser_client, message))
    assert "next_attempt_at" in shown and "completed_at" not in shown and "sent_at" not in shown


def test_times_follow_the_staff_users_zone_and_say_it(superuser_client):
    when = datetime(2026, 7, 1, 12, 0, 0, tzinfo=UTC)
    message = make_message(status="delivered", sent_at=when)
    superuser_client.cookies["herald_tz"] = "Europe/London"
    response = page(superuser_client, message)
    assert "2026-07-01 13:00:00 BST" in facts(response)["sent_at"]
    assert "Times are shown in <strong>Europe/London</strong>" in response.content.decode()
    superuser_client.cookies["herald_tz"] = "Not/AZone"
    response = page(superuser_client, message)
    assert "2026-07-01 12:00:00 UTC" in facts(response)["sent_at"]


def test_live_endpoint_while_in_flight_and_when_final(superuser_client):
    message = make_message(status="sent")
    html = page(superuser_client, message).content.decode()
    url = reverse("admin:messaging_message_live", args=[message.pk])
    assert f'data-live-url="{url}"' in html and 'data-live="polling"' in html
    data = superuser_client.get(url).json()
    assert (data["status"], data["final"], data["event_count"]) == ("sent", False, 1)
    assert 'id="herald-summary"' in data["summary_html"]
    assert 'id="herald-timeline"' in data["timeline_html"]

    StatusEvent.objects.create(message=message, status="delivered", source="webhook")
    Message.objects.filter(pk=message.pk).update(status="delivered")
    data = superuser_client.get(url).json()
    assert (data["status"], data["final"], data["event_count"]) == ("delivered", True, 2)
    assert 'data-live="final"' in page(superuser_client, message).content.decode()


def test_live_endpoint_needs_view_permission(make_staff):
    message = make_message(status="sent")
    url = reverse("admin:messaging_message_live", args=[message.pk])
    assert make_staff().get(url).status_code == 403
    assert make_staff("view_message").get(url).status_code == 200


def test_the_page_has_no_inline_script(superuser_client):
    """The live updates come from a static file, so a CSP without 'unsafe-inline' allows them."""
    html = page(superuser_client, make_message(status="sent")).content.decode()
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S)
    assert any("herald/admin.js" in attrs for attrs, _ in scripts)
    for attrs, body in scripts:
        assert "src=" in attrs or "application/json" in attrs, (attrs, body[:80])


@pytest.mark.parametrize(
    "fields,kind,label",
    [
        ({"applied": True, "note": "applied"}, "applied", "applied"),
        ({"applied": False, "note": "part 2/3 delivered; no change: already sent"}, "part",
         "applied to part 2/3"),
        ({"applied": True, "note": "part 3/3 delivered; applied"}, "applied",
         "applied (part 3/3)"),
        ({"applied": False, "note": "no change: already sent"}, "duplicate", "duplicate"),
        ({"applied": False, "note": "ignored: delivered is final"}, "ignored", "ignored"),
        ({"applied": False, "note": "resent as x", "source": "admin"}, "action", "staff action"),
    ],
)  # fmt: skip
def test_timeline_says_what_each_event_did(fields, kind, label):
    event = StatusEvent(status="delivered", source=fields.pop("source", "webhook"), **fields)
    assert display.describe_event(event) == (kind, label)


def test_status_event_list_is_newest_first(superuser_client):
    message = make_message(status="sent")
    last = StatusEvent.objects.create(message=message, status="delivered", source="webhook")
    response = superuser_client.get(reverse("admin:messaging_statusevent_changelist"))
    assert response.context["cl"].result_list[0].pk == last.pk


def test_migration_0007_moves_staff_cancellations_out_of_rejected():
    migration = importlib.import_module("messaging.migrations.0008_cancelled_status")
    cancelled = make_message(status="rejected", error_code="cancelled", error_text="wrong list")
    refused = make_message(status="rejected", error_code="invalid-destination")
    migration.forwards(django_apps, None)
    cancelled.refresh_from_db()
    refused.refresh_from_db()
    assert (cancelled.status, cancelled.error_text) == ("cancelled", "wrong list")
    assert refused.status == "rejected"
    note = cancelled.events.order_by("-id").first()
    assert note.status == "cancelled" and "migration 0007" in note.note


def test_send_at_is_read_in_the_zone_the_page_names(superuser_client):
    superuser_client.cookies["herald_tz"] = "Europe/Paris"
    page = superuser_client.get(reverse("admin:messaging_message_send"))
    assert "YYYY-MM-DD HH:MM, Europe/Paris" in page.content.decode()
    superuser_client.post(
        reverse("admin:messaging_message_send"),
        {"to": "+447911123457", "body": "x", "provider": "sandbox",
         "send_at": "2099-07-01 12:00", "client_reference": "tz-1"},
    )  # fmt: skip
    message = Message.objects.get(client_reference="tz-1")
    assert message.send_at == datetime(2099, 7, 1, 10, 0, tzinfo=UTC)  # 12:00 in Paris (CEST)


def test_djangos_own_date_display_has_seconds_and_zone():
    from django.utils import formats

    value = datetime(2026, 3, 1, 20, 17, 5, tzinfo=UTC)
    assert formats.date_format(value, "DATETIME_FORMAT") == "2026-03-01 20:17:05 UTC"


def test_an_inbound_message_page_does_not_poll(superuser_client):
    inbound = make_message(direction="inbound", status="received", client=None)
    assert 'data-live="final"' in page(superuser_client, inbound).content.decode()
    url = reverse("admin:messaging_message_live", args=[inbound.pk])
    assert superuser_client.get(url).json()["final"] is True
