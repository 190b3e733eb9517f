"""Vonage SMS API: send request shape, response classification, signatures with the published
test vectors, receipts in all three webhook formats, per-part roll-up, inbound opt-out, and a
full round trip through the emulator over real HTTP (providers.md section 1)."""

import hashlib
import hmac
import json
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import pytest
import requests
import responses
from django.db import connection

from messaging.models import Message, OptOut, StatusEvent, UnmatchedReport, WebhookRequest
from messaging.providers import get_provider
from messaging.providers.base import (
    AmbiguousSendError,
    OutboundSms,
    PermanentSendError,
    RetryableSendError,
    WebhookAuthError,
    WebhookInput,
)
from messaging.providers.vonage_sms import VonageSmsProvider, signature
from messaging.services.messages import create_outbound
from messaging.services.sending import claim_due
from messaging.status import Status
from tests.sending import send_one

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "vonage-sms"
STATUS_URL = "/webhooks/vonage-sms/status/"
INBOUND_URL = "/webhooks/vonage-sms/inbound/"
SEND_URL = "https://rest.nexmo.com/sms/json"
BASE_OPTIONS = {
    "API_KEY": "abcd1234",
    "API_SECRET": "api-secret-1",
    "SIGNATURE_SECRET": "",
    "SIGNATURE_METHOD": "sha256",
    "FROM": "Herald",
    "BASE_URL": "https://rest.nexmo.com",
    "WEBHOOK_SIGNING": "true",
}
SIGNING_SECRET = "webhook-signing-secret"
NOW = 1_700_000_000  # pinned unix time for signed payloads

pytestmark = pytest.mark.django_db


# --- shared helpers ---------------------------------------------------------------------------


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def configure(settings, **options) -> VonageSmsProvider:
    """Enable vonage-sms with BASE_OPTIONS overridden by `options`; return the provider."""
    settings.SMS_PROVIDERS = {
        **settings.SMS_PROVIDERS,
        "vonage-sms": {
            "BACKEND": "messaging.providers.vonage_sms.VonageSmsProvider",
            "OPTIONS": {**BASE_OPTIONS, **options},
            "ENV": {},
        },
    }
    settings.SMS_PROVIDERS_ENABLED = [
        *[p for p in settings.SMS_PROVIDERS_ENABLED if p != "vonage-sms"],
        "vonage-sms",
    ]
    return get_provider("vonage-sms")


def ref_sig(params: dict, secret: str, method: str) -> str:
    """providers.md appendix A, kept apart from the provider's code so each checks the other."""
    p = {k: v for k, v in params.items() if k != "sig"}
    s = "".join(f"&{k}=" + str(p[k]).replace("&", "_").replace("=", "_") for k in sorted(p))
    if method == "md5hash":
        return hashlib.md5((s + secret).encode("utf-8")).hexdigest()
    return hmac.new(secret.encode("utf-8"), s.encode("utf-8"), getattr(hashlib, method)).hexdigest()


def signed(params: dict, secret=SIGNING_SECRET, method="sha256", stamp=NOW) -> dict:
    params = {**params, "timestamp": str(stamp), "nonce": "6c4bc2f7-0c1b-4bd8-b5c4-3a9e2d0b1f10"}
    return {**params, "sig": ref_sig(params, secret, method)}


def dlr(message_id: str, status: str, *, client_ref="", err="0", when="2025-01-02 03:04:05"):
    params = {
        "msisdn": "447911123459",
        "to": "Herald",
        "network-code": "23410",
        "messageId": message_id,
        "price": "0.04120000",
        "status": status,
        "scts": "2501020304",
        "err-code": err,
        "api-key": "abcd1234",
        "message-timestamp": when,
    }
    if client_ref:
        params["client-ref"] = client_ref
    return params


def post_json(client, url, params):
    return client.generic("POST", url, json.dumps(params).encode(), "application/json")


def post_form(client, url, body: bytes):
    return client.generic("POST", url, body, "application/x-www-form-urlencoded; charset=UTF-8")


@pytest.fixture
def pinned(monkeypatch):
    """Pin the provider's clock (for signed requests and the webhook timestamp window)."""

    def pin(now=NOW):
        monkeypatch.setattr(VonageSmsProvider, "now", staticmethod(lambda: float(now)))

    pin()
    return pin


@pytest.fixture
def mocked():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


def sms(**overrides) -> OutboundSms:
    values = {
        "message_id": "0b6f2c3e-6a51-4c5e-9d2a-0a7c4c1e9f11",
        "to": "+447911123459",
        "sender": "Herald",
        "body": "Hello & welcome = friend",
        "encoding": "GSM-7",
        "segments": 1,
        "callback_url": "https://herald.example/webhooks/vonage-sms/status/",
    }
    return OutboundSms(**{**values, **overrides})


def send(provider, mocked, body, *, status=200, headers=None, content_type="application/json"):
    mocked.add(
        responses.POST, SEND_URL, body=body, status=status, headers=headers or {},
        content_type=content_type,
    )  # fmt: skip
    return provider.send(sms(), requests.Session())


# --- send: request shape ----------------------------------------------------------------------


def test_send_request_with_api_secret(settings, mocked):
    provider = configure(settings)
    result = send(provider, mocked, fixture("send_sms.json"))
    request = mocked.calls[0].request
    assert request.method == "POST"
    assert request.url == SEND_URL
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.headers["Accept"] == "application/json"
    assert "Authorization" not in request.headers
    assert request.body == (
        "api_key=abcd1234&from=Herald&to=447911123459&text=Hello+%26+welcome+%3D+friend"
        "&type=text&client-ref=0b6f2c3e-6a51-4c5e-9d2a-0a7c4c1e9f11&status-report-req=1"
        "&callback=https%3A%2F%2Fherald.example%2Fwebhooks%2Fvonage-sms%2Fstatus%2F"
        "&api_secret=api-secret-1"
    )
    assert result.provider_message_ids == ["3295d748-4e14-4681-af78-166dca3c5aab"]
    assert result.price == Decimal("0.04120000")
    assert result.currency == ""
    assert result.segments == 1
    assert result.provider_status == "0"


@pytest.mark.parametrize("method", ["md5hash", "md5", "sha1", "sha256", "sha512"])
def test_send_request_signed_has_sig_and_no_api_secret(settings, mocked, pinned, method):
    provider = configure(settings, SIGNATURE_SECRET="send-secret,older", SIGNATURE_METHOD=method)
    send(provider, mocked, fixture("send_sms.json"))
    form = dict(parse_qsl(mocked.calls[0].request.body, keep_blank_values=True))
    assert "api_secret" not in form
    assert form["api_key"] == "abcd1234"
    assert form["timestamp"] == str(NOW)
    # the first secret of the rotation list signs, over every field including api_key
    assert form["sig"] == ref_sig(form, "send-secret", method)
    assert list(form) == [
        "api_key", "from", "to", "text", "type", "client-ref", "status-report-req", "callback",
        "timestamp", "sig",
    ]  # fmt: skip


def test_send_signature_matches_vonage_php_vector():
    params = {
        "api_key": "fake_api_key", "to": "14155550100", "from": "AcmeInc",
        "text": "Test From Nexmo", "type": "text", "timestamp": "1540924779",
    }  # fmt: skip
    expected = "9FEC5EF6D0F2B3D2BB7558B6E4042569823CAB9EA0DD30503472B7B304601975"
    assert signature(params, "71efab63122f1d179f51c46bac838fb5", "sha256") == expected.lower()


def test_send_unicode_number_sender_and_long_callback(settings, mocked):
    provider = configure(settings)
    mocked.add(responses.POST, SEND_URL, body=fixture("send_sms.json"))
    long_callback = "https://herald.example/" + "x" * 80 + "/webhooks/vonage-sms/status/"
    provider.send(
        sms(body="Привет", encoding="UCS-2", sender="+447700900001", callback_url=long_callback),
        requests.Session(),
    )
    form = dict(parse_qsl(mocked.calls[0].request.body))
    assert form["type"] == "unicode"
    assert form["from"] == "447700900001"
    assert form["text"] == "Привет"
    assert "callback" not in form  # over 100 characters: the dashboard default applies


def test_send_empty_sender_uses_configured_from(settings, mocked):
    provider = configure(settings, FROM="+447700900002")
    mocked.add(responses.POST, SEND_URL, body=fixture("send_sms.json"))
    provider.send(sms(sender=""), requests.Session())
    assert dict(parse_qsl(mocked.calls[0].request.body))["from"] == "447700900002"


def test_base_url_override(settings, mocked):
    provider = configure(settings, BASE_URL="http://127.0.0.1:9999/")
    mocked.add(responses.POST, "http://127.0.0.1:9999/sms/json", body=fixture("send_sms.json"))
    provider.send(sms(), requests.Session())
    assert mocked.calls[0].request.url == "http://127.0.0.1:9999/sms/json"


# --- send: responses --------------------------------------------------------------------------


def test_multipart_response_one_id_per_part_in_order(settings, mocked):
    provider = configure(settings)
    result = send(provider, mocked, fixture("send_long_sms.json"))
    assert result.provider_message_ids == [
        "62dfdf68-6c7c-479a-a190-5c52f798a787",
        "72ff9536-62d6-455a-9f0b-65f3c265b423",
    ]
    assert result.segments == 2
    assert result.price == Decimal("0.08240000")
    assert result.raw["message-count"] == "2"


def test_partial_failure_is_sent_with_the_accepted_ids(settings, mocked):
    provider = configure(settings)
    result = send(provider, mocked, fixture("send_sms_partial_error.json"))
    assert result.provider_message_ids == ["3295d748-4e14-4681-af78-166dca3c5aab"]
    assert result.provider_status == "partial: 1/2 parts refused (1)"
    assert result.price == Decimal("0.04120000")
    assert result.segments == 2


# Every code of providers.md 1.4: True = retryable.
SEND_CODES = {
    "1": True, "2": False, "3": False, "4": False, "5": True, "6": False, "7": False,
    "8": False, "9": False, "10": True, "11": False, "12": False, "14": False, "15": False,
    "22": False, "23": False, "29": False, "32": False, "33": False,
}  # fmt: skip


@pytest.mark.parametrize(("code", "retryable"), sorted(SEND_CODES.items()))
def test_every_send_status_code_classified(settings, mocked, code, retryable):
    provider = configure(settings)
    body = {"message-count": "1", "messages": [{"status": code, "error-text": "Nope"}]}
    with pytest.raises((RetryableSendError, PermanentSendError)) as caught:
        send(provider, mocked, json.dumps(body))
    assert isinstance(caught.value, RetryableSendError) is retryable
    assert caught.value.code == code
    assert caught.value.raw == body
    if not retryable:
        assert caught.value.status == Status.REJECTED


def test_error_fixture_is_permanent(settings, mocked):
    provider = configure(settings)
    with pytest.raises(PermanentSendError) as caught:
        send(provider, mocked, fixture("send_sms_error.json"))
    assert caught.value.code == "7"
    assert "Number barred." in str(caught.value)


@pytest.mark.parametrize(("wait_ms", "seconds"), [("250", 1), ("2500", 2.5)])
def test_throttle_wait_hint_becomes_retry_after(settings, mocked, wait_ms, seconds):
    provider = configure(settings)
    text = f"Throughput Rate Exceeded - please wait [ {wait_ms} ] and retry"
    body = {"message-count": "1", "messages": [{"status": "1", "error-text": text}]}
    with pytest.raises(RetryableSendError) as caught:
        send(provider, mocked, json.dumps(body))
    assert caught.value.retry_after == seconds


def test_all_parts_refused_with_a_permanent_code_is_permanent(settings, mocked):
    provider = configure(settings)
    body = {"message-count": "2", "messages": [{"status": "1"}, {"status": "6"}]}
    with pytest.raises(PermanentSendError) as caught:
        send(provider, mocked, json.dumps(body))
    assert caught.value.code == "6"


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_http_429_and_5xx_are_retryable(settings, mocked, status):
    provider = configure(settings)
    with pytest.raises(RetryableSendError) as caught:
        send(provider, mocked, "busy", status=status, headers={"Retry-After": "7"},
             content_type="text/plain")  # fmt: skip
    assert caught.value.code == f"http-{status}"
    assert caught.value.retry_after == 7.0


@pytest.mark.parametrize(
    "body",
    [
        {"error-code": "401", "error-code-label": "authentication failed"},
        {"type": "https://developer.nexmo.com/api-errors", "title": "Bad Request", "detail": "x"},
    ],
)
def test_other_error_shapes_are_permanent(settings, mocked, body):
    provider = configure(settings)
    with pytest.raises(PermanentSendError):
        send(provider, mocked, json.dumps(body), status=401)


def test_error_code_shape_with_200(settings, mocked):
    provider = configure(settings)
    with pytest.raises(PermanentSendError) as caught:
        send(provider, mocked, json.dumps({"error-code": "401", "error-code-label": "bad key"}))
    assert caught.value.code == "401"


@pytest.mark.parametrize("body", ["<html>oops</html>", json.dumps({"messages": []})])
def test_unreadable_2xx_is_ambiguous_never_resent(settings, mocked, body):
    provider = configure(settings)
    with pytest.raises(AmbiguousSendError):
        send(provider, mocked, body)


def test_read_timeout_is_ambiguous(settings, mocked):
    provider = configure(settings)
    mocked.add(responses.POST, SEND_URL, body=requests.ReadTimeout("read timed out"))
    with pytest.raises(AmbiguousSendError):
        provider.send(sms(), requests.Session())


# --- signatures -------------------------------------------------------------------------------


def winput(body: bytes, content_type="application/x-www-form-urlencoded", method="POST"):
    return WebhookInput(
        method=method, url="http://testserver" + STATUS_URL,
        headers={"content-type": content_type}, body=body,
    )  # fmt: skip


@pytest.mark.parametrize("method", ["md5hash", "md5", "sha1"])
def test_vonage_php_vectors_accepted_through_the_inbound_url(settings, client, monkeypatch, method):
    configure(settings, SIGNATURE_SECRET="my_secret_key_for_testing", SIGNATURE_METHOD=method)
    monkeypatch.setattr(VonageSmsProvider, "now", staticmethod(lambda: 1385047698.0))
    response = post_form(client, INBOUND_URL, fixture(f"inbound-signed-{method}.form"))
    assert response.status_code == 200, response.content
    stored = WebhookRequest.objects.get()
    assert (stored.authenticated, stored.state) == (True, "processed")
    message = Message.objects.get(direction="inbound")
    assert (message.provider_message_id, message.body) == ("020000001B0FE827", "Test again")


@pytest.mark.parametrize("method", ["md5hash", "md5", "sha1"])
def test_vonage_php_vectors_accepted_as_get_query(settings, client, monkeypatch, method):
    configure(settings, SIGNATURE_SECRET="my_secret_key_for_testing", SIGNATURE_METHOD=method)
    monkeypatch.setattr(VonageSmsProvider, "now", staticmethod(lambda: 1385047698.0))
    query = fixture(f"inbound-signed-{method}.form").decode()
    response = client.get(f"{INBOUND_URL}?{query}")
    assert response.status_code == 200, response.content


@pytest.mark.parametrize("method", ["sha256", "md5", "sha512"])
def test_python_sdk_vectors_accepted(settings, monkeypatch, method):
    provider = configure(settings, SIGNATURE_SECRET="signature_secret", SIGNATURE_METHOD=method)
    monkeypatch.setattr(VonageSmsProvider, "now", staticmethod(lambda: 1234567890.0))
    body = fixture(f"params-signed-{method}.json")
    provider.verify_webhook(winput(body, "application/json"), "status")  # no error
    tampered = body.replace(b"value2", b"value3")
    with pytest.raises(WebhookAuthError, match="mismatch"):
        provider.verify_webhook(winput(tampered, "application/json"), "status")


def test_signature_comparison_ignores_hex_case(settings, pinned):
    provider = configure(settings, SIGNATURE_SECRET=SIGNING_SECRET)
    params = signed(dlr("part-1", "delivered"))
    params["sig"] = params["sig"].upper()
    provider.verify_webhook(winput(json.dumps(params).encode(), "application/json"), "status")


def test_rotated_secret_list_accepts_old_and_new(settings, client, pinned):
    configure(settings, SIGNATURE_SECRET=f"brand-new-secret, {SIGNING_SECRET}")
    response = post_json(client, STATUS_URL, signed(dlr("part-1", "delivered")))
    assert response.status_code == 200
    response = post_json(
        client, STATUS_URL, signed(dlr("part-2", "delivered"), secret="brand-new-secret")
    )
    assert response.status_code == 200


def _tamper_body(params):
    return {**params, "status": "failed"}


def _tamper_sig(params):
    return {**params, "sig": ref_sig(params, "wrong-secret", "sha256")}


def _drop_sig(params):
    return {k: v for k, v in params.items() if k != "sig"}


def _stale(params):
    return signed(dlr("part-1", "delivered"), stamp=NOW - 301)


def _future(params):
    return signed(dlr("part-1", "delivered"), stamp=NOW + 301)


def _bad_stamp(params):
    bad = {**dlr("part-1", "delivered"), "timestamp": "yesterday", "nonce": "n"}
    return {**bad, "sig": ref_sig(bad, SIGNING_SECRET, "sha256")}


@pytest.mark.parametrize(
    "tamper", [_tamper_body, _tamper_sig, _drop_sig, _stale, _future, _bad_stamp]
)
def test_tampered_or_stale_receipts_rejected_and_recorded(settings, client, pinned, tamper):
    configure(settings, SIGNATURE_SECRET=SIGNING_SECRET)
    response = post_json(client, STATUS_URL, tamper(signed(dlr("part-1", "delivered"))))
    assert response.status_code == 401
    stored = WebhookRequest.objects.get()
    assert (stored.authenticated, stored.state, stored.response_status) == (
        False, "unauthenticated", 401,
    )  # fmt: skip
    assert not StatusEvent.objects.exists() and not UnmatchedReport.objects.exists()


def test_window_edges_accepted(settings, client, pinned):
    configure(settings, SIGNATURE_SECRET=SIGNING_SECRET)
    for n, stamp in enumerate([NOW - 300, NOW + 300]):
        params = signed(dlr(f"part-{n}", "delivered"), stamp=stamp)
        assert post_json(client, STATUS_URL, params).status_code == 200


def test_tampered_form_and_get_receipts_rejected(settings, client, pinned):
    configure(settings, SIGNATURE_SECRET=SIGNING_SECRET)
    params = signed(dlr("part-1", "delivered"))
    good = urlencode(params)
    assert post_form(client, STATUS_URL, good.encode()).status_code == 200
    assert client.get(f"{STATUS_URL}?{good}").status_code == 200
    bad = urlencode({**params, "err-code": "5"})
    assert post_form(client, STATUS_URL, bad.encode()).status_code == 401
    assert client.get(f"{STATUS_URL}?{bad}").status_code == 401


def test_signing_on_without_secret_refuses(settings, client):
    configure(settings, SIGNATURE_SECRET="")
    response = post_json(client, STATUS_URL, dlr("part-1", "delivered"))
    # our misconfiguration, not the caller's: 503 so Vonage retries once it is fixed
    assert response.status_code == 503
    stored = WebhookRequest.objects.get()
    assert stored.state == "unauthenticated"
    assert "VONAGE_SIGNATURE_SECRET" in stored.auth_error


def test_signing_off_skips_verification(settings, client):
    configure(settings, SIGNATURE_SECRET="", WEBHOOK_SIGNING="false")
    response = post_json(client, STATUS_URL, dlr("part-1", "delivered"))
    assert response.status_code == 200
    assert WebhookRequest.objects.get().authenticated is True


def test_unreadable_body_with_signing_on_is_unauthenticated(settings, client):
    configure(settings, SIGNATURE_SECRET=SIGNING_SECRET)
    response = client.generic("POST", STATUS_URL, b"{not json", "application/json")
    assert response.status_code == 401


# --- receipts: parsing ------------------------------------------------------------------------


def test_get_receipt_fixture_parsed(settings):
    provider = configure(settings, WEBHOOK_SIGNING="false")
    query = fixture("dlr-get.query").decode()
    request = WebhookInput(
        method="GET", url=f"http://testserver{STATUS_URL}?{query}", headers={}, body=b"",
        query=parse_qsl(query, keep_blank_values=True),
    )  # fmt: skip
    [report] = provider.parse_status_webhook(request)
    assert report.status == Status.DELIVERED
    assert report.provider_status == "delivered"
    assert report.provider_message_id == "14000000F9DBBBBB"
    assert report.client_reference == "my-ref"
    assert report.error_code == ""  # err-code 0: no error
    assert report.price == Decimal("0.00845000")
    assert report.currency == ""
    # scts 1234567890 is not a real date: message-timestamp (UTC) is used
    assert report.provider_timestamp == datetime(2020, 7, 17, 2, 34, 35, tzinfo=UTC)
    assert report.raw["msisdn"] == "14845552121"  # the recipient
    assert report.raw["to"] == "16105553939"  # our sender


def test_form_receipt_fixture_parsed(settings):
    provider = configure(settings, WEBHOOK_SIGNING="false")
    [report] = provider.parse_status_webhook(winput(fixture("dlr-post.form")))
    assert (report.status, report.provider_message_id) == (Status.DELIVERED, "14000000F9DBBBBB")
    assert report.client_reference == ""
    assert report.provider_timestamp == datetime(2020, 7, 17, 2, 35, 15, tzinfo=UTC)


def test_json_receipt_fixtures_parsed(settings):
    provider = configure(settings, WEBHOOK_SIGNING="false")
    [report] = provider.parse_status_webhook(
        winput(fixture("dlr-post-json.json"), "application/json")
    )
    assert (report.status, report.provider_message_id) == (Status.DELIVERED, "14000000F9DBBBBB")
    assert report.provider_timestamp == datetime(2020, 7, 17, 2, 35, 1, tzinfo=UTC)
    [docs] = provider.parse_status_webhook(winput(fixture("dlr-docs.json"), "application/json"))
    assert docs.provider_message_id == "0B00000127FDBC63"
    assert docs.price == Decimal("0.03330000")
    assert docs.provider_timestamp == datetime(2018, 10, 25, 12, 10, 29, tzinfo=UTC)


def test_scts_used_when_message_timestamp_missing(settings):
    provider = configure(settings, WEBHOOK_SIGNING="false")
    params = {k: v for k, v in dlr("p", "delivered").items() if k != "message-timestamp"}
    [report] = provider.parse_status_webhook(
        winput(json.dumps(params).encode(), "application/json")
    )
    assert report.provider_timestamp == datetime(2025, 1, 2, 3, 4, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("accepted", Status.SENT),
        ("buffered", Status.SENT),
        ("delivered", Status.DELIVERED),
        ("expired", Status.EXPIRED),
        ("failed", Status.FAILED),
        ("rejected", Status.REJECTED),
        ("unknown", Status.UNKNOWN),
        ("something-new", Status.UNKNOWN),  # unmapped: unknown, never an exception
    ],
)
def test_every_receipt_status_mapped(settings, raw, canonical):
    provider = configure(settings, WEBHOOK_SIGNING="false")
    body = json.dumps(dlr("p", raw, err="2")).encode()
    [report] = provider.parse_status_webhook(winput(body, "application/json"))
    assert (report.status, report.provider_status) == (canonical, raw)
    assert (report.error_code, report.error_text) == ("2", "Absent subscriber - temporary")


def test_fetch_reports_is_none(settings):
    provider = configure(settings)
    assert provider.fetch_reports(None, requests.Session()) is None


# --- malformed payloads through the real URL ---------------------------------------------------


MALFORMED = [
    ("application/json", b"{not json"),
    ("application/json", b'["a", "list"]'),
    ("application/json", json.dumps({"status": "delivered"}).encode()),  # no messageId
    ("application/json", json.dumps({"messageId": "x"}).encode()),  # no status
    ("application/json", json.dumps({"messageId": {"a": 1}, "status": "delivered"}).encode()),
    ("application/x-www-form-urlencoded", b"messageId=%FF%FE&status=delivered"),
    ("application/x-www-form-urlencoded", b""),
]


@pytest.mark.parametrize(("content_type", "body"), MALFORMED)
def test_malformed_receipts_answer_400_and_are_recorded(settings, client, content_type, body):
    configure(settings, WEBHOOK_SIGNING="false")
    response = client.generic("POST", STATUS_URL, body, content_type)
    assert response.status_code == 400
    stored = WebhookRequest.objects.get()
    assert (stored.state, stored.response_status) == ("invalid", 400)
    assert bytes(stored.body) == body


def test_signed_but_malformed_receipt_is_400(settings, client, pinned):
    configure(settings, SIGNATURE_SECRET=SIGNING_SECRET)
    params = signed({"status": "delivered", "api-key": "abcd1234"})  # no messageId
    response = post_json(client, STATUS_URL, params)
    assert response.status_code == 400
    assert WebhookRequest.objects.get().state == "invalid"


@pytest.mark.parametrize("body", [b"text=hi&to=447700900000", b"msisdn=447911123456&text=hi"])
def test_malformed_inbound_is_400(settings, client, body):
    configure(settings, WEBHOOK_SIGNING="false")
    response = post_form(client, INBOUND_URL, body)
    assert response.status_code == 400
    assert WebhookRequest.objects.get().state == "invalid"


# --- receipts applied: per-part roll-up, duplicates, order ------------------------------------


LONG_IDS = ["62dfdf68-6c7c-479a-a190-5c52f798a787", "72ff9536-62d6-455a-9f0b-65f3c265b423"]


def sent_two_parts(settings, mocked) -> Message:
    """A two-part message sent through send_one with the multipart fixture as the response."""
    configure(settings, SIGNATURE_SECRET=SIGNING_SECRET)
    message = create_outbound(
        to="+447911123459", body="x" * 200, source="api", provider="vonage-sms"
    )
    assert message.segments == 2
    [claimed] = claim_due(10, "test-owner")
    mocked.add(responses.POST, SEND_URL, body=fixture("send_long_sms.json"))
    assert send_one(claimed, requests.Session(), "test-owner") == Status.SENT
    assert list(message.parts.values_list("provider_message_id", flat=True)) == LONG_IDS
    return message


def post_dlr(client, message_id, status, **kwargs):
    response = post_json(client, STATUS_URL, signed(dlr(message_id, status, **kwargs)))
    assert response.status_code == 200, response.content
    return response


def webhook_events(message):
    return list(
        message.events.filter(source="webhook")
        .order_by("id")
        .values_list("part_id", "status", "applied")
    )


def test_multipart_delivered_only_when_both_parts_delivered(settings, client, mocked, pinned):
    message = sent_two_parts(settings, mocked)
    post_dlr(client, LONG_IDS[0], "accepted")
    post_dlr(client, LONG_IDS[0], "delivered")
    message.refresh_from_db()
    assert message.status == Status.SENT  # one part delivered is not the message delivered
    post_dlr(client, LONG_IDS[1], "delivered")
    message.refresh_from_db()
    assert message.status == Status.DELIVERED
    assert set(message.parts.values_list("status", flat=True)) == {"delivered"}
    assert webhook_events(message) == [
        (LONG_IDS[0], "sent", False),
        (LONG_IDS[0], "delivered", False),
        (LONG_IDS[1], "delivered", True),
    ]
    assert message.events.last().note.startswith("part 2/2 delivered")


def test_multipart_any_part_failed_is_failed(settings, client, mocked, pinned):
    message = sent_two_parts(settings, mocked)
    post_dlr(client, LONG_IDS[0], "delivered")
    post_dlr(client, LONG_IDS[1], "failed", err="8")
    message.refresh_from_db()
    assert (message.status, message.error_code, message.error_text) == (
        Status.FAILED, "8", "Network error",
    )  # fmt: skip
    # a late `delivered` for the failed part changes nothing
    post_dlr(client, LONG_IDS[1], "delivered", when="2025-01-02 03:09:00")
    message.refresh_from_db()
    assert message.status == Status.FAILED
    assert webhook_events(message)[-1] == (LONG_IDS[1], "delivered", False)


def test_duplicate_and_out_of_order_receipts(settings, client, mocked, pinned):
    message = sent_two_parts(settings, mocked)
    post_dlr(client, LONG_IDS[1], "delivered", when="2025-01-02 03:05:00")
    post_dlr(client, LONG_IDS[1], "accepted", when="2025-01-02 03:04:00")  # late, older
    post_dlr(client, LONG_IDS[1], "delivered", when="2025-01-02 03:05:00")  # Vonage's retry
    post_dlr(client, LONG_IDS[0], "delivered")
    post_dlr(client, LONG_IDS[0], "delivered")
    message.refresh_from_db()
    assert message.status == Status.DELIVERED
    assert webhook_events(message) == [
        (LONG_IDS[1], "delivered", False),
        (LONG_IDS[1], "sent", False),
        (LONG_IDS[1], "delivered", False),  # Vonage's retry: an ignored duplicate
        (LONG_IDS[0], "delivered", True),
        (LONG_IDS[0], "delivered", False),
    ]
    assert WebhookRequest.objects.filter(state="processed").count() == 5
    statuses = list(message.events.order_by("id").values_list("status", flat=True))
    assert statuses == ["queued", "sending", "sent", "delivered", "sent", "delivered",
                        "delivered", "delivered"]  # fmt: skip


def test_receipts_before_the_send_response_are_kept_then_applied(settings, client, mocked, pinned):
    configure(settings, SIGNATURE_SECRET=SIGNING_SECRET)
    message = create_outbound(
        to="+447911123459", body="x" * 200, source="api", provider="vonage-sms"
    )
    [claimed] = claim_due(10, "test-owner")
    for part_id in LONG_IDS:  # both receipts beat the send response
        post_dlr(client, part_id, "delivered", client_ref=str(message.pk))
    assert UnmatchedReport.objects.filter(matched_at__isnull=True).count() == 2
    mocked.add(responses.POST, SEND_URL, body=fixture("send_long_sms.json"))
    send_one(claimed, requests.Session(), "test-owner")
    message.refresh_from_db()
    assert message.status == Status.DELIVERED
    assert not UnmatchedReport.objects.filter(matched_at__isnull=True).exists()


def test_partial_send_failure_records_sent_with_accepted_part(settings, mocked):
    configure(settings)
    message = create_outbound(
        to="+447911123459", body="x" * 200, source="api", provider="vonage-sms"
    )
    [claimed] = claim_due(10, "test-owner")
    mocked.add(responses.POST, SEND_URL, body=fixture("send_sms_partial_error.json"))
    assert send_one(claimed, requests.Session(), "test-owner") == Status.REJECTED
    message.refresh_from_db()
    assert message.attempts == 1  # the accepted part was not sent again
    assert claim_due(10, "test-owner") == []
    # part 1 accepted, part 2 refused (status 1, Throttled): an incomplete text is `rejected`
    assert list(message.parts.values_list("status", "error_code")) == [
        ("sent", ""),
        ("rejected", "1"),
    ]
    assert (message.status, message.error_code) == (Status.REJECTED, "1")
    event = message.events.get(status="sent")
    assert event.provider_status == "partial: 1/2 parts refused (1)"
    assert event.raw_payload["messages"][1]["error-text"] == "Throttled"


def test_refused_send_is_rejected_with_vonage_code(settings, mocked):
    configure(settings)
    message = create_outbound(to="+447911123459", body="hi", source="api", provider="vonage-sms")
    [claimed] = claim_due(10, "test-owner")
    mocked.add(responses.POST, SEND_URL, body=fixture("send_sms_error.json"))
    assert send_one(claimed, requests.Session(), "test-owner") == Status.REJECTED
    message.refresh_from_db()
    assert (message.status, message.error_code) == (Status.REJECTED, "7")


# --- inbound ----------------------------------------------------------------------------------


def test_inbound_concatenated_part_stored(settings, client):
    configure(settings, WEBHOOK_SIGNING="false")
    response = post_form(client, INBOUND_URL, fixture("inbound-long.form"))
    assert response.status_code == 200
    message = Message.objects.get(direction="inbound")
    assert message.provider_message_id == "02000000DA7C52E7"
    assert message.from_number == "+14845552121"  # inbound: msisdn is the sender
    assert message.to_number == "+16105553939"
    assert message.segments == 4  # concat-total
    assert message.body.startswith("y for a non-functionality-adding upgrading")
    assert message.completed_at == datetime(2020, 7, 1, 15, 53, 25, tzinfo=UTC)


@pytest.mark.parametrize("text", ["STOP", " Stop ", "unsubscribe", "S T O P"])
def test_inbound_stop_opts_out_and_start_opts_in(settings, client, pinned, text):
    configure(settings, SIGNATURE_SECRET=SIGNING_SECRET)
    base = {"msisdn": "447911123456", "to": "447700900000", "type": "text",
            "message-timestamp": "2025-01-02 03:04:05", "api-key": "abcd1234"}  # fmt: skip
    stop = signed({**base, "messageId": "0A0000001", "text": text, "keyword": "STOP"})
    assert post_form(client, INBOUND_URL, urlencode(stop).encode()).status_code == 200
    optout = OptOut.objects.get(phone_number="+447911123456")
    assert optout.source_message.provider_message_id == "0A0000001"
    start = signed({**base, "messageId": "0A0000002", "text": "start", "keyword": "START"})
    assert post_form(client, INBOUND_URL, urlencode(start).encode()).status_code == 200
    assert not OptOut.objects.filter(phone_number="+447911123456").exists()


def test_inbound_duplicate_stored_once(settings, client):
    configure(settings, WEBHOOK_SIGNING="false")
    for _ in range(2):
        assert post_form(client, INBOUND_URL, fixture("inbound-long.form")).status_code == 200
    assert Message.objects.filter(direction="inbound").count() == 1


# --- full round trip through the emulator -----------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("webhook_format", ["POST-JSON", "POST", "GET"])
def test_round_trip_through_the_emulator(settings, api, public_url, webhook_format):
    from devtools.emulator.base import Emulator
    from messaging.sender import Sender

    # On PostgreSQL receipts are posted at once, so they race the send response as they can in
    # production. SQLite's shared in-memory test database answers "table is locked" instead of
    # waiting when two threads write at once, so there the receipts wait for the sends.
    on_sqlite = connection.vendor == "sqlite"
    delay, concurrency = (0.5, 1) if on_sqlite else (0, 2)
    with Emulator(receipt_delay=delay) as emu:
        emu.providers["vonage-sms"].webhook_format = webhook_format
        configure(
            settings, BASE_URL=emu.url, SIGNATURE_SECRET="emu-secret-new,emu-secret-old",
            SIGNATURE_METHOD="sha512",
        )  # fmt: skip
        ids = {}
        for to, body in [
            ("+447911123459", "x" * 200),  # delivered, two parts
            ("+447911123450", "Hello"),  # failed
            ("+447911123452", "Hello again"),  # delivered, late accepted, duplicate
        ]:
            response = api.post(
                "/api/v1/messages/", {"to": to, "body": body, "provider": "vonage-sms"},
                format="json",
            )  # fmt: skip
            assert response.status_code == 202, response.content
            ids[to] = response.json()["id"]
        sender = Sender(concurrency=concurrency, batch_size=10)
        try:
            sender.tick()
        finally:
            sender.pool.shutdown()
        assert emu.wait_idle(timeout=20)
        deadline = time.monotonic() + 5  # the last webhook may still be committing
        while time.monotonic() < deadline:
            if not Message.objects.filter(pk__in=ids.values(), status="sent").exists():
                break
            time.sleep(0.05)
        stats = emu.stats.snapshot()

    long = Message.objects.get(pk=ids["+447911123459"])
    assert long.status == Status.DELIVERED
    assert long.parts.count() == 2
    assert set(long.parts.values_list("status", flat=True)) == {"delivered"}
    assert long.price == Decimal("0.08240000")
    failed = Message.objects.get(pk=ids["+447911123450"])
    assert (failed.status, failed.error_code) == (Status.FAILED, "8")
    dup = Message.objects.get(pk=ids["+447911123452"])
    assert dup.status == Status.DELIVERED
    assert list(
        dup.events.filter(source="webhook").order_by("id").values_list("status", "applied")
    ) == [("delivered", True), ("sent", False), ("delivered", False)]  # the last: a duplicate
    # 2 parts x 2 receipts + 2 + 3 posted, every one authenticated and processed
    assert stats["webhooks_posted"]["vonage-sms"] == 9
    assert not stats.get("webhooks_failed", {}).get("vonage-sms")
    requests_ = WebhookRequest.objects.filter(provider="vonage-sms")
    assert requests_.count() == 9
    assert set(requests_.values_list("authenticated", "state", "method")) == {
        (True, "processed", "GET" if webhook_format == "GET" else "POST")
    }


# --- the emulator answers like the real API ---------------------------------------------------


@pytest.fixture
def emulator(settings):
    from devtools.emulator.base import Emulator
    from devtools.emulator.vonage_sms import VonageSmsEmulator

    with Emulator(receipt_delay=60, providers={"vonage-sms": VonageSmsEmulator}) as emu:
        yield emu


@pytest.mark.parametrize(
    ("options", "code"),
    [
        ({"API_SECRET": "wrong", "SIGNATURE_SECRET": ""}, "4"),
        ({"SIGNATURE_SECRET": "not-the-one"}, "14"),
    ],
)
def test_emulator_refuses_bad_credentials_in_vonage_format(settings, emulator, options, code):
    # the emulator checks against what settings hold: api-secret-1 and emu-signing
    configure(settings, SIGNATURE_SECRET="emu-signing")
    ours = {**settings.SMS_PROVIDERS["vonage-sms"]["OPTIONS"], **options, "BASE_URL": emulator.url}
    with pytest.raises(PermanentSendError) as caught:
        VonageSmsProvider("vonage-sms", ours).send(sms(), requests.Session())
    assert caught.value.code == code


def test_emulator_refuses_secret_and_signature_together(settings, emulator):
    configure(settings, SIGNATURE_SECRET="emu-signing", BASE_URL=emulator.url)
    form = {"api_key": "abcd1234", "api_secret": "api-secret-1", "from": "Herald",
            "to": "447911123459", "text": "hi", "timestamp": str(int(time.time()))}  # fmt: skip
    form["sig"] = ref_sig(form, "emu-signing", "sha256")
    reply = requests.post(f"{emulator.url}/sms/json", data=form, timeout=5).json()
    assert reply["messages"][0]["status"] == "32"


def test_emulator_multipart_ids_and_throttle(settings, emulator):
    provider = configure(settings, SIGNATURE_SECRET="emu-signing", BASE_URL=emulator.url)
    result = provider.send(sms(body="y" * 161, segments=2), requests.Session())
    assert len(result.provider_message_ids) == 2 == result.segments
    assert result.price == Decimal("0.08240000")
    emulator.faults.rate_429 = 1.0  # the SMS API throttles with status 1 and a wait hint
    with pytest.raises(RetryableSendError) as caught:
        provider.send(sms(), requests.Session())
    assert (caught.value.code, caught.value.retry_after) == ("1", 1)
    emulator.faults.rate_429, emulator.faults.rate_5xx = 0.0, 1.0
    with pytest.raises(RetryableSendError) as caught:
        provider.send(sms(), requests.Session())
    assert caught.value.code == "http-503"


def test_unsupported_signature_method_refused_before_sending(settings, mocked):
    provider = configure(settings, SIGNATURE_SECRET="s", SIGNATURE_METHOD="sha3")
    with pytest.raises(PermanentSendError) as caught:
        provider.send(sms(), requests.Session())
    assert caught.value.code == "bad-signature-method"
    assert not mocked.calls


def test_unsupported_signature_method_on_webhooks_is_our_503(settings, client, pinned):
    configure(settings, SIGNATURE_SECRET=SIGNING_SECRET, SIGNATURE_METHOD="sha3")
    response = post_json(client, STATUS_URL, signed(dlr("p", "delivered")))
    assert response.status_code == 503
