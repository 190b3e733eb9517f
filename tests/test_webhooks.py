"""The webhook contract, with the sandbox provider: authenticate on the raw body, store before
answering, 401/400/413/429/503 as documented, deduplicate, keep reports for unknown messages."""

import json
import time
from unittest import mock

import pytest
from django.db import DatabaseError

from config.test_settings import TEST_SANDBOX_SECRET as SANDBOX_SECRET
from messaging.models import Message, MessagePart, StatusEvent, UnmatchedReport, WebhookRequest
from messaging.providers.base import SendResult
from messaging.providers.sandbox import sign
from messaging.services import messages
from tests.sending import record_sent

pytestmark = pytest.mark.django_db
URL = "/webhooks/sandbox/status/"


def sandbox_headers(body, secret=SANDBOX_SECRET, stamp=None):
    stamp = stamp or str(int(time.time()))
    return {"X-Sandbox-Timestamp": stamp, "X-Sandbox-Signature": sign(secret, stamp, body)}


def signed(client, payload, secret=SANDBOX_SECRET, body=None, url=URL):
    body = body if body is not None else json.dumps(payload).encode()
    return client.post(
        url, body, content_type="application/json", headers=sandbox_headers(body, secret)
    )


def sent_message(pid="p-1"):
    message = messages.create_outbound(to="+447911123457", body="x", source="api")
    Message.objects.filter(pk=message.pk).update(status="sending")
    record_sent(message, SendResult(provider_message_ids=[pid]))
    message.refresh_from_db()
    return message


def receipt(pid="p-1", status="delivered", ref="", ts="2026-11-23T10:00:00+00:00"):
    return {"message_id": pid, "client_ref": ref, "status": status, "error_code": "",
            "timestamp": ts}  # fmt: skip


def test_valid_receipt_is_stored_then_applied(client):
    message = sent_message()
    r = signed(client, receipt())
    assert r.status_code == 200
    stored = WebhookRequest.objects.get()
    assert (stored.authenticated, stored.state, stored.report_count) == (True, "processed", 1)
    assert json.loads(bytes(stored.body)) == receipt()
    message.refresh_from_db()
    assert message.status == "delivered"
    assert StatusEvent.objects.get(message=message, source="webhook").webhook_request == stored


@pytest.mark.parametrize(
    "how", ["no-signature", "wrong-secret", "tampered-body", "stale-timestamp", "bad-timestamp"]
)
def test_failed_authentication_is_401_and_recorded(client, how):
    message = sent_message()
    body = json.dumps(receipt()).encode()
    stamp = str(int(time.time()))
    headers = {
        "X-Sandbox-Timestamp": stamp,
        "X-Sandbox-Signature": sign(SANDBOX_SECRET, stamp, body),
    }
    if how == "no-signature":
        del headers["X-Sandbox-Signature"]
    elif how == "wrong-secret":
        headers["X-Sandbox-Signature"] = sign("guess", stamp, body)
    elif how == "tampered-body":
        body = body.replace(b"delivered", b"failed")
    elif how == "stale-timestamp":
        old = str(int(time.time()) - 3600)
        headers = {
            "X-Sandbox-Timestamp": old,
            "X-Sandbox-Signature": sign(SANDBOX_SECRET, old, body),
        }
    else:
        headers["X-Sandbox-Timestamp"] = "yesterday"
    r = client.post(URL, body, content_type="application/json", headers=headers)
    assert r.status_code == 401
    stored = WebhookRequest.objects.get()
    assert (stored.authenticated, stored.state) == (False, "unauthenticated")
    assert stored.auth_error and stored.response_status == 401
    message.refresh_from_db()
    assert message.status == "sent"


def test_rotated_secrets_are_all_accepted(client, settings):
    settings.SMS_PROVIDERS = {
        **settings.SMS_PROVIDERS,
        "sandbox": {**settings.SMS_PROVIDERS["sandbox"],
                    "OPTIONS": {**settings.SMS_PROVIDERS["sandbox"]["OPTIONS"],
                                "WEBHOOK_SECRET": "old-secret, new-secret"}},
    }  # fmt: skip
    sent_message()
    assert signed(client, receipt(status="accepted"), secret="old-secret").status_code == 200
    assert signed(client, receipt(), secret="new-secret").status_code == 200
    assert signed(client, receipt(status="failed"), secret="other").status_code == 401


@pytest.mark.parametrize(
    "body", [b"not json", b"[1, 2]", b'{"status": "delivered"}', b"\xff\xfe", b""]
)
def test_unparseable_body_is_400_and_recorded(client, body):
    r = signed(client, None, body=body)
    assert r.status_code == 400
    assert r.json()["error"] == "malformed payload"
    stored = WebhookRequest.objects.get()
    assert (stored.authenticated, stored.state) == (True, "invalid")
    assert stored.error and bytes(stored.body) == body


def test_oversized_body_is_413_and_recorded(client, settings):
    settings.WEBHOOK_MAX_BODY_BYTES = 100
    r = signed(client, None, body=b"{" + b" " * 200 + b"}")
    assert r.status_code == 413
    assert WebhookRequest.objects.get().response_status == 413


def test_rate_limited_per_source_with_retry_after(client, settings):
    settings.WEBHOOK_RATE_LIMIT = "2/m"
    sent_message()
    codes = [
        signed(client, receipt(status=s)).status_code for s in ("accepted", "delivered", "failed")
    ]
    assert codes[:2] == [200, 200] and codes[2] == 429
    assert WebhookRequest.objects.count() == 2


def test_cannot_store_answers_503_and_the_retry_is_accepted(client):
    message = sent_message()
    with mock.patch("messaging.services.webhooks.store", side_effect=DatabaseError):
        r = signed(client, receipt())
    assert r.status_code == 503
    message.refresh_from_db()
    assert message.status == "sent"  # nothing was acknowledged, nothing applied
    assert signed(client, receipt()).status_code == 200  # the provider's retry
    message.refresh_from_db()
    assert message.status == "delivered"


def test_duplicates_are_one_applied_event_and_shown_as_ignored(client):
    message = sent_message()
    for _ in range(3):
        assert signed(client, receipt()).status_code == 200
    assert WebhookRequest.objects.count() == 3  # every request is evidence
    events = StatusEvent.objects.filter(message=message, source="webhook").order_by("id")
    assert [(e.applied, e.dedupe_key is not None) for e in events] == [
        (True, True), (False, False), (False, False)]  # fmt: skip
    assert all("duplicate" in e.note for e in events[1:])


def test_late_intermediate_receipt_is_recorded_not_applied(client):
    message = sent_message()
    signed(client, receipt(status="delivered", ts="2026-11-23T10:00:05+00:00"))
    signed(client, receipt(status="accepted", ts="2026-11-23T10:00:00+00:00"))
    message.refresh_from_db()
    assert message.status == "delivered"
    late = StatusEvent.objects.get(message=message, source="webhook", status="sent")
    assert late.applied is False and "final" in late.note


def test_receipt_for_an_unknown_message_is_kept_then_applied(client):
    r = signed(client, receipt(pid="later-id"))
    assert r.status_code == 200  # acknowledged: kept, not dropped
    kept = UnmatchedReport.objects.get()
    assert kept.matched_at is None
    message = sent_message(pid="later-id")  # the send response arrives after the receipt
    kept.refresh_from_db()
    assert kept.matched_at is not None and kept.message_id == message.pk
    assert message.status == "delivered"


def test_receipt_before_send_response_matches_by_our_reference(client):
    message = messages.create_outbound(to="+447911123457", body="x", source="api")
    Message.objects.filter(pk=message.pk).update(status="sending")
    # the receipt beats the send response: only our reference can match it, so it waits
    signed(client, receipt(pid="p-9", ref=str(message.pk)))
    message.refresh_from_db()
    assert message.status == "sending"
    record_sent(message, SendResult(provider_message_ids=["p-9"]))
    message.refresh_from_db()
    assert message.status == "delivered"
    assert MessagePart.objects.get(message=message).status == "delivered"


def test_unknown_provider_webhook_is_404(client, settings):
    settings.SMS_PROVIDERS_ENABLED = ["sandbox"]
    settings.SMS_PROVIDERS = {"sandbox": settings.SMS_PROVIDERS["sandbox"]}
    r = client.post("/webhooks/twilio/status/", b"x", content_type="text/plain")
    assert r.status_code == 404


def test_inbound_stop_and_start(client):
    url = "/webhooks/sandbox/inbound/"

    def post(mid, text):
        data = {"message_id": mid, "from": "447911123457", "to": "Herald", "text": text}
        return signed(client, data, url=url)

    from messaging.models import OptOut, OptOutChange

    assert post("in-1", " Stop ").status_code == 200
    assert OptOut.objects.filter(phone_number="+447911123457").exists()
    inbound = Message.objects.get(direction="inbound")
    assert (inbound.status, inbound.from_number, inbound.body) == (
        "received",
        "+447911123457",
        " Stop ",
    )
    post("in-1", " Stop ")  # a retried delivery is stored once
    assert Message.objects.filter(direction="inbound").count() == 1
    post("in-2", "unstop")
    assert not OptOut.objects.exists()
    changes = list(OptOutChange.objects.order_by("id").values_list("action", "keyword"))
    assert changes == [("opt_out", "STOP"), ("opt_in", "UNSTOP")]
    assert OptOutChange.objects.order_by("id").first().source_message == inbound


def test_credentials_in_the_query_are_not_kept(client):
    sent_message()
    body = json.dumps(receipt()).encode()
    r = client.post(URL + "?ref=abc&token=s3cret-token", body, content_type="application/json",
                    headers=sandbox_headers(body))  # fmt: skip
    assert r.status_code == 200
    stored = WebhookRequest.objects.get()
    assert stored.query_string == "ref=abc&token=[redacted]"


@pytest.mark.parametrize("inline", [True, False])
@pytest.mark.parametrize("addr", ["203.0.113.9", "2001:db8::7"])
def test_the_evidence_row_keeps_what_arrived(client, settings, inline, addr):
    """On PostgreSQL the row is written by a prebuilt INSERT, not Model.save(): every column
    must come out as the ORM would have written it (the address as inet, headers as JSON)."""
    settings.WEBHOOK_APPLY_INLINE = inline
    sent_message()
    body = json.dumps(receipt()).encode()
    r = client.post(URL + "?a=1", body, content_type="application/json", REMOTE_ADDR=addr,
                    headers={**sandbox_headers(body), "User-Agent": "tester/1"})  # fmt: skip
    assert r.status_code == 200
    stored = WebhookRequest.objects.get()
    assert stored.remote_addr == addr
    assert (stored.provider, stored.kind, stored.method) == ("sandbox", "status", "POST")
    assert (stored.path, stored.query_string) == (URL, "a=1")
    assert bytes(stored.body) == body
    assert (stored.body_size, stored.report_count, stored.response_status) == (len(body), 1, 200)
    assert stored.headers["user-agent"] == "tester/1"
    assert stored.headers["content-type"] == "application/json"
    assert "x-sandbox-signature" in stored.headers
    assert stored.authenticated and stored.received_at is not None
    assert stored.state == ("processed" if inline else "received")
