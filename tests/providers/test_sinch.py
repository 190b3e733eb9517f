"""Sinch SMS REST API: send request shape, error classification, callback signatures, receipt
and inbound parsing through the real webhook view, reconciliation, and one round trip through
the emulator over real HTTP. Payloads are the ones in providers.md section 3, stored under
tests/fixtures/sinch/ (the signed sample byte-exact)."""

import json
import time
from pathlib import Path

import pytest
import requests
import responses
from django.db import connection
from responses import matchers

from messaging.models import Message, OptOut, StatusEvent, UnmatchedReport, WebhookRequest
from messaging.providers import get_provider
from messaging.providers import sinch as sinch_module
from messaging.providers.base import (
    AmbiguousSendError,
    OutboundSms,
    PermanentSendError,
    RetryableSendError,
    SendResult,
    WebhookAuthError,
    WebhookInput,
    WebhookParseError,
)
from messaging.providers.sinch import SinchProvider
from messaging.services.messages import create_outbound
from messaging.status import Status
from tests.sending import record_sent

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "sinch"
BASE = "https://sinch.test"
PLAN = "plan123"
TOKEN = "token-abc"
SECRET = "webhook-secret"
STATUS_URL = "/webhooks/sinch/status/"
INBOUND_URL = "/webhooks/sinch/inbound/"

# providers.md 3.8 verified test vector
VECTOR_SECRET = "SMSWebhooksSecret"
VECTOR_NONCE = "01JHFFHWYY7HSS4FWTMDTQEK8V"
VECTOR_TIMESTAMP = "1736760161"
VECTOR_SIGNATURE = "ZoHei66PPN/kZjw7hFVfGhJOnml3iGNCMWoyQVcE5o0="


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def fixture_json(name: str):
    return json.loads(fixture_bytes(name))


def options(**overrides):
    return {
        "SERVICE_PLAN_ID": PLAN,
        "API_TOKEN": TOKEN,
        "REGION": "eu",
        "FROM": "Herald",
        "WEBHOOK_SECRET": SECRET,
        "BASE_URL": BASE,
        "WEBHOOK_SIGNING": "true",
        **overrides,
    }


def configure(settings, **overrides):
    settings.SMS_PROVIDERS = {
        **settings.SMS_PROVIDERS,
        "sinch": {
            "BACKEND": "messaging.providers.sinch.SinchProvider",
            "OPTIONS": options(**overrides),
            "ENV": {},
        },
    }
    settings.SMS_PROVIDERS_ENABLED = [*settings.SMS_PROVIDERS_ENABLED, "sinch"]
    return get_provider("sinch")


@pytest.fixture
def sinch(settings):
    return configure(settings)


def sms(**overrides) -> OutboundSms:
    fields = {
        "message_id": "6f1c2c3e-0000-4000-8000-000000000001",
        "to": "+447700900123",
        "sender": "Herald",
        "body": "Hello from Herald",
        "encoding": "GSM-7",
        "segments": 1,
        "callback_url": "https://herald.example.com/webhooks/sinch/status/",
        **overrides,
    }
    return OutboundSms(**fields)


def signature_headers(body: bytes, secret=SECRET, stamp=None, nonce="01JHFFHWYY7HSS4FWTMDTQEK8V"):
    stamp = str(int(time.time())) if stamp is None else stamp
    return {
        "x-sinch-webhook-signature": sinch_module.sign(secret, body, nonce, stamp),
        "x-sinch-webhook-signature-nonce": nonce,
        "x-sinch-webhook-signature-timestamp": stamp,
        "x-sinch-webhook-signature-algorithm": "HmacSHA256",
        "content-type": "application/json",
    }


def winput(body: bytes, headers=None) -> WebhookInput:
    return WebhookInput(
        method="POST",
        url="https://herald.example.com" + STATUS_URL,
        headers=headers if headers is not None else {"content-type": "application/json"},
        body=body,
    )


def post(client, url, body: bytes, headers=None):
    """POST a raw body to a webhook with Sinch's signature headers (fresh unless given)."""
    headers = signature_headers(body) if headers is None else headers
    meta = {
        "HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items() if k != "content-type"
    }
    return client.post(url, data=body, content_type="application/json", **meta)


def report_body(**fields) -> bytes:
    data = fixture_json("recipient_delivered_signed.raw")
    data.update(fields)
    return json.dumps({k: v for k, v in data.items() if v is not None}).encode()


# --- send -----------------------------------------------------------------------------------


@responses.activate
def test_send_request_shape_is_exact(sinch):
    expected_body = {
        "to": ["+447700900123"],
        "body": "Hello from Herald",
        "delivery_report": "per_recipient",
        "callback_url": "https://herald.example.com/webhooks/sinch/status/",
        "client_reference": "6f1c2c3e-0000-4000-8000-000000000001",
        "from": "Herald",
    }
    responses.post(
        f"{BASE}/xms/v1/{PLAN}/batches",
        status=201,
        json=fixture_json("send_response_201.json"),
        match=[
            matchers.header_matcher(
                {
                    "Authorization": f"Bearer {TOKEN}",
                    "Content-Type": "application/json",
                    "Accept": "application/json",
                }
            ),
            matchers.json_params_matcher(expected_body, strict_match=True),
        ],
    )
    result = sinch.send(sms(), requests.Session())
    assert result.provider_message_ids == ["01FC66621XXXXX119Z8PMV1QPQ"]
    assert result.raw["client_reference"] == "6f1c2c3e-0000-4000-8000-000000000001"
    call = responses.calls[0]
    assert call.request.method == "POST"
    assert call.request.url == f"{BASE}/xms/v1/{PLAN}/batches"
    # every field we send is one of Sinch's documented request fields (providers.md 3.2)
    assert set(json.loads(call.request.body)) <= set(fixture_json("send_request.json"))


def test_default_base_url_comes_from_region(settings):
    provider = configure(settings, BASE_URL="", REGION="eu")
    request = provider.build_send_request(sms())
    assert request.url == f"https://eu.sms.api.sinch.com/xms/v1/{PLAN}/batches"


def test_no_sender_leaves_from_to_the_service_plan_default(settings):
    provider = configure(settings, FROM="")
    assert "from" not in provider.build_send_request(sms(sender="")).json


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 415])
@responses.activate
def test_client_errors_are_permanent(sinch, status):
    body = fixture_json("error_400.json") if status == 400 else None
    if status == 403:
        body = fixture_json("error_403.json")
    responses.post(f"{BASE}/xms/v1/{PLAN}/batches", status=status, json=body)
    with pytest.raises(PermanentSendError) as caught:
        sinch.send(sms(), requests.Session())
    expected = {400: "syntax_invalid_parameter_format", 403: "missing_callback_url"}
    assert caught.value.code == expected.get(status, f"http-{status}")
    assert not caught.value.retryable


@pytest.mark.parametrize("status", [429, 500, 502, 503])
@responses.activate
def test_throttling_and_server_errors_are_retryable(sinch, status):
    responses.post(
        f"{BASE}/xms/v1/{PLAN}/batches", status=status, body="busy", headers={"Retry-After": "7"}
    )
    with pytest.raises(RetryableSendError) as caught:
        sinch.send(sms(), requests.Session())
    assert caught.value.code == f"http-{status}"
    assert caught.value.retry_after == 7.0


@responses.activate
def test_google_style_error_body_is_read(sinch):
    body = {"error": {"code": 400, "message": "parsing field", "status": "INVALID_ARGUMENT"}}
    responses.post(f"{BASE}/xms/v1/{PLAN}/batches", status=400, json=body)
    with pytest.raises(PermanentSendError) as caught:
        sinch.send(sms(), requests.Session())
    assert caught.value.code == "INVALID_ARGUMENT"


@responses.activate
def test_created_without_a_batch_id_is_ambiguous(sinch):
    responses.post(f"{BASE}/xms/v1/{PLAN}/batches", status=201, json={"to": ["+447700900123"]})
    with pytest.raises(AmbiguousSendError):
        sinch.send(sms(), requests.Session())


@responses.activate
def test_read_timeout_is_ambiguous_never_resent(sinch):
    responses.post(f"{BASE}/xms/v1/{PLAN}/batches", body=requests.ReadTimeout("slow"))
    with pytest.raises(AmbiguousSendError):
        sinch.send(sms(), requests.Session())


# --- status map -----------------------------------------------------------------------------

STATUS_TABLE = {
    "Queued": Status.SENT,
    "Dispatched": Status.SENT,
    "Delivered": Status.DELIVERED,
    "Failed": Status.FAILED,
    "Deleted": Status.FAILED,
    "Expired": Status.EXPIRED,
    "Rejected": Status.REJECTED,
    "Aborted": Status.REJECTED,
    "Cancelled": Status.REJECTED,
    "Unknown": Status.UNKNOWN,
}


@pytest.mark.parametrize("sinch_status,canonical", STATUS_TABLE.items())
def test_every_status_is_mapped(sinch, sinch_status, canonical):
    for spelling in (sinch_status, sinch_status.upper()):  # SPY's Literal list is upper-case
        [report] = sinch.parse_status_webhook(winput(report_body(status=spelling)))
        assert report.status == canonical
        assert report.provider_status == spelling


def test_status_table_covers_the_provider_map(sinch):
    assert {s.lower() for s in STATUS_TABLE} == set(sinch.STATUS_MAP)


def test_unmapped_status_is_unknown(sinch):
    [report] = sinch.parse_status_webhook(winput(report_body(status="Teleported")))
    assert report.status == Status.UNKNOWN


def test_code_zero_with_a_failed_status_is_failed(sinch):
    [report] = sinch.parse_status_webhook(winput(fixture_bytes("recipient_failed_code0.json")))
    assert report.status == Status.FAILED
    assert report.error_code == "0"


def test_recipient_report_fields(sinch):
    [report] = sinch.parse_status_webhook(winput(fixture_bytes("recipient_delivered_signed.raw")))
    assert report.provider_message_id == "01JHFFHQ0P99JPPNQPJDV7JTBP"
    assert report.client_reference == "a client reference"
    assert report.status == Status.DELIVERED
    assert report.error_code == ""  # code 0 on Delivered is not an error
    assert report.provider_timestamp.isoformat() == "2025-01-13T09:22:00+00:00"
    assert report.raw["recipient"] == "33662162466"


def test_dispatched_report_from_providers_md(sinch):
    [report] = sinch.parse_status_webhook(winput(fixture_bytes("recipient_dispatched.json")))
    assert (report.status, report.provider_status) == (Status.SENT, "Dispatched")
    assert report.error_code == ""
    assert report.segments == 123
    assert report.provider_timestamp.isoformat() == "2022-08-30T08:16:08.150000+00:00"


def test_report_without_operator_time_uses_at(sinch):
    [report] = sinch.parse_status_webhook(winput(report_body(operator_status_at=None)))
    assert report.provider_timestamp.isoformat() == "2025-01-13T09:22:40.914000+00:00"


def test_sinch_code_is_described(sinch):
    [report] = sinch.parse_status_webhook(winput(report_body(status="Rejected", code=402)))
    assert (report.error_code, report.error_text) == ("402", "Message unroutable")


def test_batch_report_gives_one_report_per_status_entry(sinch):
    data = fixture_json("batch_delivery_report.json")
    rejected = {"code": 402, "count": 1, "recipients": ["447700900"], "status": "Rejected"}
    data["statuses"].append(rejected)
    reports = sinch.parse_status_webhook(winput(json.dumps(data).encode()))
    assert [(r.status, r.provider_message_id, r.client_reference) for r in reports] == [
        (Status.DELIVERED, "01FC66621XXXXX119Z8PMV1QPQ", "a client reference"),
        (Status.REJECTED, "01FC66621XXXXX119Z8PMV1QPQ", "a client reference"),
    ]
    assert reports[0].raw["statuses"][0]["recipients"] == ["44231235674"]
    assert reports[1].error_code == "402"


def test_summary_batch_report_without_recipients(sinch):
    data = fixture_json("batch_delivery_report.json")
    del data["statuses"][0]["recipients"]
    [report] = sinch.parse_status_webhook(winput(json.dumps(data).encode()))
    assert report.status == Status.DELIVERED


# --- signatures -----------------------------------------------------------------------------


def test_signature_matches_the_published_vector():
    body = fixture_bytes("recipient_delivered_signed.raw")
    assert sinch_module.sign(VECTOR_SECRET, body, VECTOR_NONCE, VECTOR_TIMESTAMP) == (
        VECTOR_SIGNATURE
    )


def vector_headers(**overrides):
    headers = {
        "x-sinch-webhook-signature": VECTOR_SIGNATURE,
        "x-sinch-webhook-signature-nonce": VECTOR_NONCE,
        "x-sinch-webhook-signature-timestamp": VECTOR_TIMESTAMP,
        "x-sinch-webhook-signature-algorithm": "HmacSHA256",
    }
    headers.update(overrides)
    return headers


@pytest.fixture
def at_vector_time(monkeypatch):
    monkeypatch.setattr(SinchProvider, "now", staticmethod(lambda: int(VECTOR_TIMESTAMP) + 30))


def test_vector_is_accepted(settings, at_vector_time):
    provider = configure(settings, WEBHOOK_SECRET=f"old-secret, {VECTOR_SECRET}")  # rotation
    body = fixture_bytes("recipient_delivered_signed.raw")
    provider.verify_webhook(winput(body, vector_headers()), "status")


@pytest.mark.parametrize(
    "tamper",
    [
        "body",
        "signature",
        "nonce",
        "timestamp",
        "missing-signature",
        "missing-nonce",
        "missing-timestamp",
        "algorithm",
        "timestamp-not-a-number",
    ],
)
def test_tampering_is_rejected(settings, at_vector_time, tamper):
    provider = configure(settings, WEBHOOK_SECRET=VECTOR_SECRET)
    body = fixture_bytes("recipient_delivered_signed.raw")
    headers = vector_headers()
    if tamper == "body":
        body = body.replace(b'"Delivered"', b'"Delivered" ')
    elif tamper == "signature":
        headers["x-sinch-webhook-signature"] = "A" + VECTOR_SIGNATURE[1:]
    elif tamper == "nonce":
        headers["x-sinch-webhook-signature-nonce"] = VECTOR_NONCE[:-1] + "W"
    elif tamper == "timestamp":
        headers["x-sinch-webhook-signature-timestamp"] = str(int(VECTOR_TIMESTAMP) + 1)
    elif tamper == "timestamp-not-a-number":
        headers["x-sinch-webhook-signature-timestamp"] = "2025-01-13T09:22:41Z"
    elif tamper == "algorithm":
        headers["x-sinch-webhook-signature-algorithm"] = "HmacSHA1"
    else:  # missing-signature / missing-nonce / missing-timestamp
        suffix = {"signature": "", "nonce": "-nonce", "timestamp": "-timestamp"}
        del headers["x-sinch-webhook-signature" + suffix[tamper.removeprefix("missing-")]]
    with pytest.raises(WebhookAuthError):
        provider.verify_webhook(winput(body, headers), "status")


def test_stale_timestamp_is_rejected(settings, monkeypatch):
    provider = configure(settings, WEBHOOK_SECRET=VECTOR_SECRET)
    monkeypatch.setattr(SinchProvider, "now", staticmethod(lambda: int(VECTOR_TIMESTAMP) + 301))
    body = fixture_bytes("recipient_delivered_signed.raw")
    with pytest.raises(WebhookAuthError, match="window"):
        provider.verify_webhook(winput(body, vector_headers()), "status")


def test_wrong_secret_is_rejected(sinch, at_vector_time):
    body = fixture_bytes("recipient_delivered_signed.raw")
    with pytest.raises(WebhookAuthError, match="mismatch"):
        sinch.verify_webhook(winput(body, vector_headers()), "status")


def test_signing_on_without_a_secret_refuses_everything(settings, at_vector_time):
    provider = configure(settings, WEBHOOK_SECRET="")
    body = fixture_bytes("recipient_delivered_signed.raw")
    with pytest.raises(WebhookAuthError, match="SINCH_WEBHOOK_SECRET"):
        provider.verify_webhook(winput(body, vector_headers()), "status")


def test_signing_switched_off_accepts_unsigned(settings):
    provider = configure(settings, WEBHOOK_SIGNING="false")
    provider.verify_webhook(winput(b"{}"), "status")  # no exception


# --- through the webhook view ---------------------------------------------------------------


def sent_message(batch_id="01JHFFHQ0P99JPPNQPJDV7JTBP", to="+33662162466"):
    """An outbound Sinch message whose 201 (batch id) has been recorded."""
    message = create_outbound(to=to, body="Hi", source="api", provider="sinch")
    Message.objects.filter(pk=message.pk).update(status=Status.SENDING)
    record_sent(message, SendResult(provider_message_ids=[batch_id]))
    message.refresh_from_db()
    assert message.status == Status.SENT
    return message


def webhook_events(message):
    return list(
        message.events.filter(source="webhook").order_by("id").values_list("status", "applied")
    )


@pytest.mark.django_db
def test_signed_receipt_is_applied(client, sinch):
    message = sent_message()
    response = post(client, STATUS_URL, fixture_bytes("recipient_delivered_signed.raw"))
    assert response.status_code == 200
    message.refresh_from_db()
    assert message.status == Status.DELIVERED
    stored = WebhookRequest.objects.get()
    assert (stored.authenticated, stored.state, stored.report_count) == (True, "processed", 1)
    assert bytes(stored.body) == fixture_bytes("recipient_delivered_signed.raw")
    assert stored.headers["x-sinch-webhook-signature-nonce"] == "01JHFFHWYY7HSS4FWTMDTQEK8V"


@pytest.mark.django_db
def test_forged_receipt_is_401_and_recorded(client, sinch):
    message = sent_message()
    body = fixture_bytes("recipient_delivered_signed.raw")
    headers = signature_headers(body, secret="not-the-secret")
    response = post(client, STATUS_URL, body, headers)
    assert response.status_code == 401  # a forgery should not be retried by anyone
    message.refresh_from_db()
    assert message.status == Status.SENT
    stored = WebhookRequest.objects.get()
    assert (stored.authenticated, stored.state) == (False, "unauthenticated")


MALFORMED = {
    "not-json": b"{not json",
    "not-utf8": b'{"type":"\xff"}',
    "array": b"[]",
    "no-type": b'{"batch_id":"B","recipient":"1","status":"Delivered"}',
    "unknown-type": b'{"type":"something_else"}',
    "inbound-at-status": fixture_bytes("mo_text.json"),
    "no-batch-id": report_body(batch_id=None),
    "no-status": report_body(status=None),
    "no-recipient": report_body(recipient=None),
    "status-not-text": report_body(status=["Delivered"]),
    "bad-code": report_body(code="zero"),
    "bad-time": report_body(operator_status_at="yesterday"),
    "time-not-text": report_body(at=12, operator_status_at=None),
    "batch-no-statuses": b'{"type":"delivery_report_sms","batch_id":"B"}',
    "batch-entry-not-object": b'{"type":"delivery_report_sms","batch_id":"B","statuses":[1]}',
    "batch-recipients-not-list": (
        b'{"type":"delivery_report_sms","batch_id":"B",'
        b'"statuses":[{"status":"Delivered","code":0,"recipients":"1"}]}'
    ),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_receipts_raise_parse_errors(sinch, case):
    with pytest.raises(WebhookParseError):
        sinch.parse_status_webhook(winput(MALFORMED[case]))


@pytest.mark.django_db
@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_receipts_are_400_and_recorded_invalid(client, sinch, case):
    response = post(client, STATUS_URL, MALFORMED[case])
    assert response.status_code == 400
    stored = WebhookRequest.objects.get()
    assert (stored.authenticated, stored.state, stored.response_status) == (True, "invalid", 400)
    assert stored.error
    assert not StatusEvent.objects.filter(source="webhook").exists()


@pytest.mark.django_db
def test_batch_report_through_the_view(client, sinch):
    message = sent_message(batch_id="01FC66621XXXXX119Z8PMV1QPQ", to="+447700900123")
    response = post(client, STATUS_URL, fixture_bytes("batch_delivery_report.json"))
    assert response.status_code == 200
    message.refresh_from_db()
    assert message.status == Status.DELIVERED


@pytest.mark.django_db
def test_duplicates_and_out_of_order_keep_the_final_status(client, sinch):
    message = sent_message()
    delivered = fixture_bytes("recipient_delivered_signed.raw")
    dispatched = report_body(
        status="Dispatched", code=401, operator_status_at="2025-01-13T09:21:50Z"
    )
    for body in (delivered, dispatched, delivered):  # the last is Sinch retrying the first
        assert post(client, STATUS_URL, body).status_code == 200
    message.refresh_from_db()
    assert message.status == Status.DELIVERED
    assert webhook_events(message) == [("delivered", True), ("sent", False), ("delivered", False)]
    late = message.events.get(source="webhook", status="sent")
    assert "final" in late.note
    assert WebhookRequest.objects.filter(state="processed").count() == 3


@pytest.mark.django_db
def test_code_zero_failure_fails_the_message(client, sinch):
    message = sent_message()
    assert post(client, STATUS_URL, fixture_bytes("recipient_failed_code0.json")).status_code == 200
    message.refresh_from_db()
    assert (message.status, message.error_code) == (Status.FAILED, "0")


@pytest.mark.django_db
def test_receipt_before_the_201_is_matched_by_client_reference(client, sinch):
    message = create_outbound(to="+33662162466", body="Hi", source="api", provider="sinch")
    Message.objects.filter(pk=message.pk).update(status=Status.SENDING)
    body = report_body(client_reference=str(message.pk))
    assert post(client, STATUS_URL, body).status_code == 200
    assert UnmatchedReport.objects.filter(client_reference=str(message.pk)).exists()
    record_sent(message, SendResult(provider_message_ids=["01JHFFHQ0P99JPPNQPJDV7JTBP"]))
    message.refresh_from_db()
    assert message.status == Status.DELIVERED


# --- inbound --------------------------------------------------------------------------------


def inbound_body(text: str) -> bytes:
    data = fixture_json("mo_text.json")
    data["body"] = text
    return json.dumps(data, separators=(",", ":")).encode()


def test_inbound_fields(sinch):
    [sms_in] = sinch.parse_inbound_webhook(winput(fixture_bytes("mo_text.json")))
    assert sms_in.provider_message_id == "01FC66621XXXXX119Z8PMV1QPA"
    assert (sms_in.from_number, sms_in.to_number) == ("+11203494390", "11203453453")
    assert sms_in.text == "a body"
    assert sms_in.received_at.isoformat() == "2019-08-24T14:17:22+00:00"


@pytest.mark.django_db
def test_inbound_stop_opts_the_sender_out(client, sinch):
    response = post(client, INBOUND_URL, inbound_body("  Stop "))
    assert response.status_code == 200
    stored = Message.objects.get(direction="inbound")
    assert stored.provider_message_id == "01FC66621XXXXX119Z8PMV1QPA"
    assert stored.from_number == "+11203494390"
    assert stored.body == "  Stop "
    assert OptOut.objects.filter(phone_number="+11203494390").exists()
    # Sinch retries the same MO: stored once
    assert post(client, INBOUND_URL, inbound_body("  Stop ")).status_code == 200
    assert Message.objects.filter(direction="inbound").count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [
        fixture_bytes("recipient_delivered_signed.raw"),  # a receipt at the inbound URL
        b'{"type":"mo_binary","id":"X","from":"1","to":"2","body":"AAE=","udh":"0500"}',
        b'{"type":"mo_text","id":"X","from":"+11203494390","to":"2"}',
        b'{"type":"mo_text","from":"+11203494390","to":"2","body":"hi"}',
    ],
)
def test_malformed_inbound_is_400(client, sinch, body):
    assert post(client, INBOUND_URL, body).status_code == 400
    assert WebhookRequest.objects.get().state == "invalid"
    assert not Message.objects.filter(direction="inbound").exists()


# --- reconciliation -------------------------------------------------------------------------


@pytest.mark.django_db
@responses.activate
def test_fetch_reports_gets_the_recipient_report(sinch):
    message = sent_message()
    responses.get(
        f"{BASE}/xms/v1/{PLAN}/batches/01JHFFHQ0P99JPPNQPJDV7JTBP/delivery_report/+33662162466",
        json=fixture_json("recipient_delivered_signed.raw"),
        match=[matchers.header_matcher({"Authorization": f"Bearer {TOKEN}"})],
    )
    [report] = sinch.fetch_reports(message, requests.Session())
    assert report.status == Status.DELIVERED
    assert report.provider_message_id == "01JHFFHQ0P99JPPNQPJDV7JTBP"


@pytest.mark.django_db
@responses.activate
def test_fetch_reports_404_is_empty(sinch):
    message = sent_message()
    responses.get(
        f"{BASE}/xms/v1/{PLAN}/batches/01JHFFHQ0P99JPPNQPJDV7JTBP/delivery_report/+33662162466",
        status=404,
    )
    assert sinch.fetch_reports(message, requests.Session()) == []


@pytest.mark.django_db
@pytest.mark.parametrize("status,error", [(503, RetryableSendError), (401, PermanentSendError)])
@responses.activate
def test_fetch_reports_errors_are_classified(sinch, status, error):
    message = sent_message()
    responses.get(
        f"{BASE}/xms/v1/{PLAN}/batches/01JHFFHQ0P99JPPNQPJDV7JTBP/delivery_report/+33662162466",
        status=status,
    )
    with pytest.raises(error):
        sinch.fetch_reports(message, requests.Session())


@pytest.mark.django_db
@responses.activate
def test_fetch_reports_without_a_batch_id_searches_by_client_reference(sinch):
    message = create_outbound(to="+33662162466", body="Hi", source="api", provider="sinch")
    item = {**fixture_json("recipient_delivered_signed.raw"), "client_reference": str(message.pk)}
    responses.get(
        f"{BASE}/xms/v1/{PLAN}/delivery_reports",
        json={"count": 1, "page": 0, "page_size": 100, "delivery_reports": [item]},
        match=[
            matchers.query_param_matcher(
                {"client_reference": str(message.pk), "page_size": "100"}, strict_match=False
            )
        ],
    )
    [report] = sinch.fetch_reports(message, requests.Session())
    assert report.client_reference == str(message.pk)
    assert "start_date" in responses.calls[0].request.params


# --- a round trip through the emulator ------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "to,final,error_code",
    [
        ("+447700900127", Status.DELIVERED, ""),
        ("+447700900120", Status.FAILED, "0"),  # code 0 with status Failed
        ("+447700900122", Status.DELIVERED, ""),  # duplicated and out of order
    ],
)
def test_round_trip_through_the_emulator(settings, public_url, to, final, error_code):
    from devtools.emulator.base import Emulator
    from messaging.sender import Sender

    # The delay keeps receipts from landing while the sender still writes the 201: the in-memory
    # SQLite test database locks whole tables across threads (PostgreSQL has no such problem,
    # and the receipt-before-201 race is covered by its own test above).
    delay = 0 if connection.vendor == "postgresql" else 0.5
    with Emulator(receipt_delay=delay, providers=_sinch_only()) as emu:
        configure(settings, BASE_URL=emu.url)
        settings.SMS_DEFAULT_PROVIDER = "sinch"
        message = create_outbound(to=to, body="Hello from Herald", source="api", provider="sinch")
        sender = Sender(concurrency=1, batch_size=5)
        try:
            sender.tick()
            assert emu.wait_idle(timeout=15)
        finally:
            sender.pool.shutdown()
        message.refresh_from_db()
        assert message.status == final
        assert message.error_code == error_code
        assert message.provider_message_id and len(message.provider_message_id) == 26
        requests_in = WebhookRequest.objects.filter(provider="sinch", kind="status")
        assert requests_in.count() >= 2
        assert set(requests_in.values_list("authenticated", "state")) == {(True, "processed")}
        assert emu.stats.snapshot()["sends"]["sinch"] == {to: 1}

        # reconciliation against the emulator's recipient report endpoint agrees
        [report] = get_provider("sinch").fetch_reports(message, requests.Session())
        assert report.status == final
        assert report.client_reference == str(message.pk)


def _sinch_only():
    from devtools.emulator.sinch import SinchEmulator

    return {"sinch": SinchEmulator}


@pytest.mark.parametrize(
    "overrides,sms_fields,error,code",
    [
        ({"API_TOKEN": "wrong"}, {}, PermanentSendError, "http-401"),
        ({"SERVICE_PLAN_ID": "other-plan"}, {}, PermanentSendError, "http-401"),
        ({}, {"to": "+44 7700"}, PermanentSendError, "syntax_invalid_parameter_format"),
        ({}, {"body": ""}, PermanentSendError, "syntax_constraint_violation"),
    ],
)
def test_emulator_refuses_like_sinch(settings, overrides, sms_fields, error, code):
    from devtools.emulator.base import Emulator

    with Emulator(receipt_delay=0, providers=_sinch_only()) as emu:
        configure(settings, BASE_URL=emu.url)  # what the emulator checks against
        herald = SinchProvider("sinch", options(BASE_URL=emu.url, **overrides))
        with requests.Session() as session, pytest.raises(error) as caught:
            herald.send(sms(**sms_fields), session)
        assert caught.value.code == code
        assert emu.stats.snapshot()["sends"] == {}


def test_emulator_injected_throttling_is_retryable(settings):
    from devtools.emulator.base import Emulator, Faults

    with Emulator(receipt_delay=0, providers=_sinch_only(), faults=Faults(rate_429=1.0)) as emu:
        provider = configure(settings, BASE_URL=emu.url)
        with requests.Session() as session, pytest.raises(RetryableSendError) as caught:
            provider.send(sms(), session)
        assert caught.value.code == "http-429"


@pytest.mark.django_db
@responses.activate
def test_reconcile_settles_stuck_sinch_messages(sinch):
    from datetime import timedelta

    from django.utils import timezone

    from messaging.services.reconcile import reconcile

    delivered = sent_message()
    dispatched_only = sent_message(batch_id="01FC66621XXXXX119Z8PMV1QPQ", to="+447700900123")
    report_url = f"{BASE}/xms/v1/{PLAN}/batches/{{}}/delivery_report/{{}}"
    responses.get(
        report_url.format("01JHFFHQ0P99JPPNQPJDV7JTBP", "+33662162466"),
        json=fixture_json("recipient_delivered_signed.raw"),
    )
    responses.get(
        report_url.format("01FC66621XXXXX119Z8PMV1QPQ", "+447700900123"),
        json=fixture_json("recipient_dispatched.json"),
    )
    with requests.Session() as session:
        counts = reconcile(session, now=timezone.now() + timedelta(days=30))
    assert counts["errors"] == 0
    delivered.refresh_from_db()
    dispatched_only.refresh_from_db()
    assert delivered.status == Status.DELIVERED
    assert delivered.events.filter(source="reconcile", status="delivered", applied=True).exists()
    assert (dispatched_only.status, dispatched_only.error_code) == (
        Status.UNKNOWN,
        "receipt-timeout",
    )
