"""What the message and webhook-request pages show: the full audit timeline with payloads,
parts and lineage; the stored request readably, its events and the failed-auth counts."""

import json
from datetime import UTC, datetime

import pytest
from django.urls import reverse

from messaging.admin.display import error_meaning, pretty_body
from messaging.models import StatusEvent, WebhookRequest
from tests.admin.conftest import make_message

pytestmark = pytest.mark.django_db


def page(client, message):
    response = client.get(reverse("admin:messaging_message_change", args=[message.pk]))
    assert response.status_code == 200
    return response


def test_timeline_shows_every_event_with_its_details(superuser_client, staff):
    message = make_message(status="failed", error_code="absent-subscriber", parts=["p-1", "p-2"])
    stored = WebhookRequest.objects.create(
        provider="sandbox", kind="status", method="POST", path="/w/", authenticated=True
    )
    StatusEvent.objects.create(
        message=message, status="failed", provider_status="failed",
        error_code="absent-subscriber", source="webhook", applied=True, note="applied",
        provider_timestamp=datetime(2026, 3, 1, 10, 0, 5, 250000, tzinfo=UTC),
        raw_payload={"status": "failed", "message_id": "p-1", "nested": {"a": 1}},
        webhook_request=stored, part_id="p-1",
    )  # fmt: skip
    StatusEvent.objects.create(
        message=message, status="sent", provider_status="accepted", source="webhook",
        applied=False, note="ignored: failed is final",
    )  # fmt: skip
    StatusEvent.objects.create(
        message=message, status="failed", source="admin", actor=staff, applied=False,
        note="resent as 1234",
    )  # fmt: skip
    response = page(superuser_client, message)
    events = response.context["events"]
    assert [e.status for e in events] == ["queued", "failed", "sent", "failed"]
    html = response.content.decode()
    assert html.count('data-applied="no"') == 2 and html.count('data-applied="yes"') == 2
    # provider time: to the second with the zone, the exact instant in the tooltip
    assert "2026-03-01<br>10:00:05 UTC" in html
    assert 'title="2026-03-01 10:00:05.250000 UTC"' in html
    kinds = {e.note: e.kind for e in events}
    assert kinds["ignored: failed is final"] == "ignored"
    assert kinds["resent as 1234"] == "action"  # a staff action, not a grey "ignored" row
    assert 'id="herald-legend"' in html
    assert "ignored: failed is final" in html
    assert "The handset was off or out of coverage" in html  # the error code's meaning
    assert f"webhook #{stored.pk}" in html
    assert "resent as 1234" in html and ">staff<" in html  # the actor
    pretty = json.dumps(
        {"message_id": "p-1", "nested": {"a": 1}, "status": "failed"}, indent=2, sort_keys=True
    ).replace('"', "&quot;")
    assert pretty in html  # the raw payload, pretty-printed
    assert "p-2" in html and 'id="herald-parts"' in html


def test_timeline_is_one_query_whatever_its_length(superuser_client, staff):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def count(message):
        with CaptureQueriesContext(connection) as queries:
            page(superuser_client, message)
        return len(queries)

    short = make_message(status="delivered")
    long = make_message(status="delivered")
    for _ in range(20):
        StatusEvent.objects.create(message=long, status="sent", source="admin", actor=staff)
    assert count(short) == count(long)


def test_error_meaning_prefers_the_providers_text():
    assert error_meaning("sandbox", "30003", "Unreachable handset") == "Unreachable handset"
    assert error_meaning("sandbox", "cancelled") == "Cancelled by staff before it was sent."
    assert error_meaning("gone-provider", "zz") == ""
    assert error_meaning("sandbox", "", "") == ""


def test_pretty_body_formats_json_and_forms_without_touching_bytes():
    assert pretty_body(b'{"b":1,"a":[1,2]}', "application/json") == (
        '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}'
    )
    form = pretty_body(
        b"MessageSid=SM1&MessageStatus=delivered", "application/x-www-form-urlencoded"
    )
    assert form == "MessageSid = SM1\nMessageStatus = delivered"
    assert pretty_body(b"\xff\xfe", "") == "b'\\xff\\xfe'"
    assert pretty_body(b"", "") == ""


def test_webhook_request_page(superuser_client, staff):
    message = make_message(status="delivered")
    stored = WebhookRequest.objects.create(
        provider="sandbox", kind="status", method="POST", path="/webhooks/sandbox/status/",
        headers={"content-type": "application/json", "x-sandbox-signature": "abc"},
        body=b'{"status":"delivered","message_id":"m-1"}', authenticated=True,
        state="failed", error="KeyError: 'x'",
        traceback="Traceback (most recent call last):\n  boom",
    )  # fmt: skip
    StatusEvent.objects.create(
        message=message, status="delivered", source="webhook", webhook_request=stored
    )
    response = superuser_client.get(
        reverse("admin:messaging_webhookrequest_change", args=[stored.pk])
    )
    html = response.content.decode()
    assert "&quot;message_id&quot;: &quot;m-1&quot;" in html  # body, pretty-printed
    assert "Traceback (most recent call last):" in html
    assert "KeyError: &#x27;x&#x27;" in html
    assert reverse("admin:messaging_message_change", args=[message.pk]) in html  # linked event
    assert "herald-replay-form" in html


def test_failed_auth_counts_per_provider_on_the_changelist(superuser_client):
    for provider, n in (("sandbox", 3), ("twilio", 1)):
        for _ in range(n):
            WebhookRequest.objects.create(
                provider=provider, kind="status", method="POST", path="/w/",
                authenticated=False, state="unauthenticated", auth_error="signature mismatch",
            )  # fmt: skip
    WebhookRequest.objects.create(  # authenticated: not counted
        provider="sandbox", kind="status", method="POST", path="/w/", authenticated=True
    )
    WebhookRequest.objects.create(  # too large: refused, but not an authentication failure
        provider="sandbox", kind="status", method="POST", path="/w/", state="invalid"
    )
    response = superuser_client.get(reverse("admin:messaging_webhookrequest_changelist"))
    assert response.context["failed_auth"] == [("sandbox", 3), ("twilio", 1)]
    assert b'data-provider="sandbox">3<' in response.content


def test_lineage_column_links_to_the_original_without_a_join(superuser_client):
    original = make_message(status="failed")
    make_message(status="queued", resend_of=original)
    response = superuser_client.get(reverse("admin:messaging_message_changelist"))
    assert (
        f'resend of<br><a href="{reverse("admin:messaging_message_change", args=[original.pk])}"'
        in (response.content.decode())
    )
