"""Twilio Programmable Messaging: send request shape, error classification, status map, the
X-Twilio-Signature check (providers.md vectors, ports, proxies, rotation, tampering), the
webhook view end to end, inbound STOP, reconciliation fetch, and a round trip through the
emulator over real HTTP."""

import base64
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
from responses import matchers

from messaging.models import (
    Message,
    OptOut,
    OptOutChange,
    Source,
    StatusEvent,
    UnmatchedReport,
    WebhookRequest,
)
from messaging.providers import get_provider
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
from messaging.providers.twilio import (
    EMPTY_TWIML,
    TwilioProvider,
    body_sha256,
    compute_signature,
    parse_raw_dlr_done_date,
)
from messaging.services.messages import create_outbound
from messaging.services.sending import claim_due
from messaging.status import Status
from tests.sending import record_sent, send_one

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "twilio"
ACCOUNT = "AC0123456789abcdef0123456789abcdef"
TOKEN = "twilio-auth-token-1"
SM = "SMa1b2c3d4e5f60718293a4b5c6d7e8f90"  # the sid in the recorded fixtures
PUBLIC = "https://herald.example.com"
API = "https://api.twilio.com"
MESSAGES_URL = f"{API}/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
STATUS_PATH = "/webhooks/twilio/status/"
INBOUND_PATH = "/webhooks/twilio/inbound/"
FORM = "application/x-www-form-urlencoded"


def fixture_bytes(name) -> bytes:
    return (FIXTURES / name).read_bytes()


def fixture_json(name):
    return json.loads(fixture_bytes(name))


def reference_signature(url: str, params: dict, token: str) -> str:
    """providers.md appendix A, verbatim: an oracle independent of the provider module."""
    s = url
    for name in sorted(set(params)):
        vals = params[name] if isinstance(params[name], list) else [params[name]]
        for v in sorted(set(vals)):
            s += name + v
    return base64.b64encode(
        hmac.new(token.encode(), s.encode("utf-8"), hashlib.sha1).digest()
    ).decode()


def sign(url: str, body: bytes, token: str = TOKEN) -> str:
    """Sign a form body as Twilio does; undecodable bytes read the way Django's QueryDict reads
    them (replaced), which is what a Twilio-signed request decodes to on our side."""
    params: dict = {}
    for name, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        params.setdefault(name, []).append(value)
    return reference_signature(url, params, token)


def configure(settings, **options):
    """Enable the twilio provider with these OPTIONS (over the defaults)."""
    settings.SMS_PROVIDERS = {
        **settings.SMS_PROVIDERS,
        "twilio": {
            "BACKEND": "messaging.providers.twilio.TwilioProvider",
            "OPTIONS": {
                "ACCOUNT_SID": ACCOUNT,
                "AUTH_TOKEN": TOKEN,
                "FROM": "+14155550199",
                "MESSAGING_SERVICE_SID": "",
                "BASE_URL": API,
                "WEBHOOK_SIGNING": "true",
                **options,
            },
            "ENV": {},
        },
    }
    if "twilio" not in settings.SMS_PROVIDERS_ENABLED:
        settings.SMS_PROVIDERS_ENABLED = [*settings.SMS_PROVIDERS_ENABLED, "twilio"]
    return get_provider("twilio")


@pytest.fixture
def twilio(settings):
    settings.PUBLIC_BASE_URL = PUBLIC
    return configure(settings)


def sms(**overrides) -> OutboundSms:
    fields = dict(
        message_id="5b0f6a55-3c55-4b8e-9a55-1d2a3b4c5d6e",
        to="+14155550100",
        sender="+14155550199",
        body="Hello from Herald",
        encoding="GSM-7",
        segments=1,
        callback_url=f"{PUBLIC}{STATUS_PATH}",
    )
    fields.update(overrides)
    return OutboundSms(**fields)


def winput(url, body=b"", headers=None, method="POST"):
    query = parse_qsl(url.partition("?")[2], keep_blank_values=True)
    return WebhookInput(
        method=method,
        url=url,
        headers={"content-type": FORM, **(headers or {})},
        body=body,
        query=query,
    )


def claimed(to="+14155550100", body="Hello from Herald", owner="test-sender") -> Message:
    """A queued twilio message, claimed by `owner` as the sender would (status `sending`)."""
    message = create_outbound(to=to, body=body, source=Source.API, provider="twilio")
    (claimed_message,) = [m for m in claim_due(100, owner) if m.pk == message.pk]
    return claimed_message


def sent_message(sid=SM, to="+14155550100") -> Message:
    message = claimed(to=to)
    record_sent(message, SendResult([sid], provider_status="queued"))
    message.refresh_from_db()
    assert message.status == Status.SENT
    return message


# --- signature algorithm: the providers.md / twilio-python vectors --------------------------


VECTORS = fixture_json("signature_vectors.json")


def test_signature_vector_single_values():
    assert (
        compute_signature(VECTORS["url"], VECTORS["params"], VECTORS["token"])
        == (VECTORS["expected"])
    )


def test_signature_vector_multi_value_sorted_and_deduplicated():
    pairs = [tuple(p) for p in VECTORS["multi_value_params"]]
    assert (
        compute_signature(VECTORS["url"], pairs, VECTORS["token"])
        == (VECTORS["multi_value_expected"])
    )
    # the same as a dict of lists, and a repeated identical value changes nothing (set())
    as_dict = {"Sid": "CA123", "SidAccount": "AC123", "Digits": ["5678", "1234", "1234"]}
    assert (
        compute_signature(VECTORS["url"], as_dict, VECTORS["token"])
        == (VECTORS["multi_value_expected"])
    )


def test_body_hash_vector():
    assert body_sha256(VECTORS["json_body"].encode()) == VECTORS["json_body_sha256"]


def vector_provider():
    return TwilioProvider("twilio", {"ACCOUNT_SID": ACCOUNT, "AUTH_TOKEN": VECTORS["token"]})


def vector_input(url, signature, pairs=None):
    body = urlencode(pairs if pairs is not None else list(VECTORS["params"].items())).encode()
    return winput(url, body, {"x-twilio-signature": signature})


@pytest.mark.parametrize(
    "url_change, key",
    [
        (lambda u: u, "expected"),
        # Twilio signed with the default port although our URL has none ...
        (lambda u: u, "https_with_443_expected"),
        (lambda u: u.replace("https", "http"), "http_with_80_expected"),
        # ... or without a port although the URL has one (any port is stripped)
        (lambda u: u.replace(".com", ".com:1234"), "expected"),
        (lambda u: u.replace(".com", ".com:1234").replace("https", "http"),
         "http_with_1234_expected"),
    ],
)  # fmt: skip
def test_vectors_accepted_with_and_without_port(url_change, key):
    vector_provider().verify_webhook(
        vector_input(url_change(VECTORS["url"]), VECTORS[key]), "status"
    )


def test_multi_value_vector_accepted_on_the_wire():
    pairs = [tuple(p) for p in VECTORS["multi_value_params"]]
    vector_provider().verify_webhook(
        vector_input(VECTORS["url"], VECTORS["multi_value_expected"], pairs), "status"
    )


def test_json_body_with_body_sha256_vector():
    url = f"{VECTORS['url']}&bodySHA256={VECTORS['json_body_sha256']}"
    body = VECTORS["json_body"].encode()
    headers = {
        "content-type": "application/json",
        "x-twilio-signature": "a9nBmqA0ju/hNViExpshrM61xv4=",
    }
    provider = vector_provider()
    provider.verify_webhook(winput(url, body, headers), "status")
    with pytest.raises(WebhookAuthError, match="bodySHA256"):
        provider.verify_webhook(winput(url, body.replace(b"true", b"false"), headers), "status")


@pytest.mark.parametrize(
    "mutate",
    [
        lambda i: vector_input(i.url.replace("foo=1", "foo=2"), VECTORS["expected"]),
        lambda i: vector_input(i.url, VECTORS["expected"], [*VECTORS["params"].items(), ("X", "")]),
        lambda i: vector_input(i.url, "RSOYDt4T1cUTdK1PDd93/VVr8B9="),
        lambda i: vector_input(i.url, ""),
        lambda i: vector_input(i.url.replace("https", "http"), VECTORS["expected"]),
    ],
    ids=["url", "extra-param", "signature", "missing", "scheme"],
)
def test_vector_tampering_rejected(mutate):
    good = vector_input(VECTORS["url"], VECTORS["expected"])
    vector_provider().verify_webhook(good, "status")
    with pytest.raises(WebhookAuthError):
        vector_provider().verify_webhook(mutate(good), "status")


def test_signature_on_a_get_covers_the_url_only():
    url = VECTORS["url"]
    signature = compute_signature(url, {}, VECTORS["token"])
    vector_provider().verify_webhook(
        winput(url, b"", {"x-twilio-signature": signature}, method="GET"), "inbound"
    )


def test_signing_switched_off_accepts_unsigned():
    provider = TwilioProvider("twilio", {"AUTH_TOKEN": "x", "WEBHOOK_SIGNING": "false"})
    provider.verify_webhook(winput(VECTORS["url"], b"a=1"), "status")


def test_no_token_configured_refuses():
    with pytest.raises(WebhookAuthError, match="AUTH_TOKEN"):
        TwilioProvider("twilio", {"AUTH_TOKEN": ""}).verify_webhook(
            vector_input(VECTORS["url"], VECTORS["expected"]), "status"
        )


# --- send request and response ------------------------------------------------------------


@responses.activate
def test_send_request_shape(twilio):
    callback = f"{PUBLIC}{STATUS_PATH}?ref=5b0f6a55-3c55-4b8e-9a55-1d2a3b4c5d6e"
    expected_body = urlencode(
        [
            ("To", "+14155550100"),
            ("From", "+14155550199"),
            ("Body", "Hello from Herald"),
            ("StatusCallback", callback),
        ]
    )
    basic = base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()
    responses.post(
        MESSAGES_URL,
        json=fixture_json("send_201.json"),
        status=201,
        match=[
            matchers.header_matcher(
                {
                    "Authorization": f"Basic {basic}",
                    "Content-Type": FORM,
                    "Accept": "application/json",
                }
            ),
        ],
    )
    result = twilio.send(sms(), requests.Session())
    sent = responses.calls[0].request
    assert sent.method == "POST"
    assert sent.url == MESSAGES_URL
    assert sent.body == expected_body
    assert result.provider_message_ids == [SM]
    assert result.provider_status == "queued"
    assert result.segments == 1
    assert result.price is None and result.currency == ""


@responses.activate
def test_send_through_a_messaging_service(settings):
    settings.PUBLIC_BASE_URL = PUBLIC
    provider = configure(settings, MESSAGING_SERVICE_SID="MG" + "f" * 32)
    responses.post(MESSAGES_URL, json=fixture_json("send_201_messaging_service.json"), status=201)
    result = provider.send(sms(), requests.Session())
    form = dict(parse_qsl(responses.calls[0].request.body))
    # the configured default FROM is left to the service's sender pool ...
    assert "From" not in form
    assert form["MessagingServiceSid"] == "MG" + "f" * 32
    assert result.provider_status == "accepted"
    assert result.segments is None  # num_segments "0": not known yet
    # ... while a sender the message itself names is passed on
    provider.send(sms(sender="HERALD"), requests.Session())
    assert dict(parse_qsl(responses.calls[1].request.body))["From"] == "HERALD"


def test_send_without_any_sender_is_refused(settings):
    provider = configure(settings, FROM="")
    with pytest.raises(PermanentSendError) as info:
        provider.build_send_request(sms(sender=""))
    assert info.value.code == "21603"


def test_status_callback_keeps_an_existing_query(twilio):
    request = twilio.build_send_request(sms(callback_url=f"{PUBLIC}{STATUS_PATH}?x=1"))
    assert request.data["StatusCallback"] == (
        f"{PUBLIC}{STATUS_PATH}?x=1&ref=5b0f6a55-3c55-4b8e-9a55-1d2a3b4c5d6e"
    )


@responses.activate
def test_price_is_reported_as_a_positive_amount(twilio):
    data = {**fixture_json("send_201.json"), "price": "-0.01580", "num_segments": "2"}
    responses.post(MESSAGES_URL, json=data, status=201)
    result = twilio.send(sms(), requests.Session())
    assert (result.price, result.currency, result.segments) == (Decimal("0.01580"), "USD", 2)


@pytest.mark.parametrize(
    "status, fixture, kind, code, opted_out",
    [
        (429, "error_20429.json", RetryableSendError, "20429", False),
        (500, "error_20500.json", RetryableSendError, "20500", False),
        (400, "error_21211.json", PermanentSendError, "21211", False),
        (401, "error_20003.json", PermanentSendError, "20003", False),
        (400, "error_21610.json", PermanentSendError, "21610", True),
        (400, "error_rfc9457.json", PermanentSendError, "21211", False),
    ],
)
@responses.activate
def test_send_errors_classified(twilio, status, fixture, kind, code, opted_out):
    responses.post(
        MESSAGES_URL, json=fixture_json(fixture), status=status, headers={"Retry-After": "7"}
    )
    with pytest.raises(kind) as info:
        twilio.send(sms(), requests.Session())
    error = info.value
    assert type(error) is kind
    assert error.code == code
    assert error.opted_out is opted_out
    if kind is RetryableSendError:
        assert error.retry_after == 7.0
    if fixture == "error_rfc9457.json":
        assert "is not a valid phone number" in str(error)


@responses.activate
def test_20429_is_retryable_whatever_the_http_status(twilio):
    responses.post(MESSAGES_URL, json={"code": 20429, "message": "Too Many Requests"}, status=400)
    with pytest.raises(RetryableSendError):
        twilio.send(sms(), requests.Session())


@responses.activate
def test_gateway_error_without_json_is_retryable(twilio):
    responses.post(MESSAGES_URL, body="<html>Bad Gateway</html>", status=502)
    with pytest.raises(RetryableSendError) as info:
        twilio.send(sms(), requests.Session())
    assert info.value.code == "http-502"


@responses.activate
def test_2xx_without_a_sid_is_ambiguous(twilio):
    responses.post(MESSAGES_URL, body="not json", status=201)
    with pytest.raises(AmbiguousSendError):
        twilio.send(sms(), requests.Session())


@pytest.mark.django_db
@responses.activate
def test_send_one_records_the_sid(twilio):
    responses.post(MESSAGES_URL, json=fixture_json("send_201.json"), status=201)
    message = claimed()
    assert send_one(message, requests.Session(), "test-sender") == Status.SENT
    message.refresh_from_db()
    assert message.provider_message_id == SM
    ref = dict(parse_qsl(responses.calls[0].request.body))["StatusCallback"]
    assert ref == f"{PUBLIC}{STATUS_PATH}?ref={message.pk}"


@pytest.mark.django_db
@responses.activate
def test_21610_adds_the_number_to_the_opt_out_list(twilio):
    responses.post(MESSAGES_URL, json=fixture_json("error_21610.json"), status=400)
    message = claimed(to="+14155550100")
    assert send_one(message, requests.Session(), "test-sender") == Status.REJECTED
    message.refresh_from_db()
    assert (message.status, message.error_code) == ("rejected", "21610")
    assert OptOut.objects.filter(phone_number="+14155550100").exists()
    change = OptOutChange.objects.get(phone_number="+14155550100")
    assert "21610" in change.reason
    assert len(responses.calls) == 1  # not retried


# --- status callbacks: parsing and the status map ------------------------------------------


EXPECTED_STATUS = {
    "queued": Status.SENT,
    "accepted": Status.SENT,
    "scheduled": Status.SENT,
    "sending": Status.SENT,
    "sent": Status.SENT,
    "delivered": Status.DELIVERED,
    "read": Status.DELIVERED,
    "partially_delivered": Status.DELIVERED,
    "undelivered": Status.FAILED,
    "failed": Status.REJECTED,
    "canceled": Status.REJECTED,
    "receiving": Status.UNKNOWN,  # inbound-only statuses are not outbound progress
    "something-new": Status.UNKNOWN,
}


def status_input(status, extra=(), ref="ref-1", status_field="MessageStatus"):
    pairs = [("MessageSid", SM), (status_field, status), ("To", "+14155550100"), *extra]
    return winput(f"{PUBLIC}{STATUS_PATH}?ref={ref}", urlencode(pairs).encode())


@pytest.mark.parametrize("status, canonical", EXPECTED_STATUS.items())
def test_every_status_mapped(twilio, status, canonical):
    (report,) = twilio.parse_status_webhook(status_input(status))
    assert report.status == canonical
    assert report.provider_status == status


def test_sms_status_is_read_when_message_status_is_absent(twilio):
    (report,) = twilio.parse_status_webhook(status_input("delivered", status_field="SmsStatus"))
    assert report.status == Status.DELIVERED


def test_every_twilio_status_enum_value_is_covered():
    """TPY MessageInstance.Status (providers.md 5.4): every outbound one is in the map."""
    enum = {"queued", "sending", "sent", "failed", "delivered", "undelivered", "receiving",
            "received", "accepted", "scheduled", "read", "partially_delivered",
            "canceled"}  # fmt: skip
    assert enum - set(TwilioProvider.STATUS_MAP) == {"receiving", "received"}


def test_partially_delivered_is_flagged(twilio):
    (report,) = twilio.parse_status_webhook(status_input("partially_delivered"))
    assert report.status == Status.DELIVERED
    assert "partially delivered" in report.error_text
    assert "group MMS" in report.error_text


def test_validity_period_expiry_is_expired(twilio):
    (report,) = twilio.parse_status_webhook(status_input("failed", [("ErrorCode", "30036")]))
    assert (report.status, report.error_code) == (Status.EXPIRED, "30036")


def test_delivered_fixture_fields(twilio):
    url = f"{PUBLIC}{STATUS_PATH}?ref=5b0f6a55-3c55-4b8e-9a55-1d2a3b4c5d6e"
    (report,) = twilio.parse_status_webhook(winput(url, fixture_bytes("status_undelivered.raw")))
    assert report.provider_message_id == SM
    assert report.client_reference == "5b0f6a55-3c55-4b8e-9a55-1d2a3b4c5d6e"
    assert report.status == Status.FAILED
    assert (report.error_code, report.error_text) == ("30003", "Unreachable destination handset")
    assert report.provider_timestamp == datetime(2023, 2, 14, 15, 31, tzinfo=UTC)
    assert report.raw["AccountSid"] == ACCOUNT


def test_raw_dlr_done_date_is_utc_minutes_and_tolerant():
    assert parse_raw_dlr_done_date("2302141530") == datetime(2023, 2, 14, 15, 30, tzinfo=UTC)
    assert parse_raw_dlr_done_date("") is None
    assert parse_raw_dlr_done_date("23-02-14") is None


@pytest.mark.parametrize(
    "body",
    [
        fixture_bytes("status_missing_sid.raw"),
        fixture_bytes("status_invalid_utf8.raw"),
        b"MessageSid=SM1&Body=%FF",  # percent-encoded invalid UTF-8
        urlencode([("MessageSid", SM)]).encode(),  # no MessageStatus
    ],
    ids=["missing-sid", "invalid-utf8", "escaped-invalid-utf8", "missing-status"],
)
def test_malformed_status_callbacks_raise_parse_error(twilio, body):
    with pytest.raises(WebhookParseError):
        twilio.parse_status_webhook(winput(f"{PUBLIC}{STATUS_PATH}", body))


def test_inbound_fields(twilio):
    (sms_in,) = twilio.parse_inbound_webhook(
        winput(f"{PUBLIC}{INBOUND_PATH}", fixture_bytes("inbound_stop.raw"))
    )
    assert sms_in.provider_message_id == "SM" + "1" * 32
    assert (sms_in.from_number, sms_in.to_number) == ("+14155550123", "+14155550199")
    assert (sms_in.text, sms_in.parts) == (" Stop ", 1)


def test_inbound_without_from_is_malformed(twilio):
    with pytest.raises(WebhookParseError):
        twilio.parse_inbound_webhook(winput(f"{PUBLIC}{INBOUND_PATH}", b"MessageSid=SM1&To=%2B1"))


def test_acks(twilio):
    assert twilio.webhook_ack("inbound") == (200, EMPTY_TWIML, "text/xml")
    assert EMPTY_TWIML == b'<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
    assert twilio.webhook_ack("status")[0] == 200


# --- the webhook view (Django test client) --------------------------------------------------


def post(client, path, body, signature, **headers):
    return client.post(
        path, data=body, content_type=FORM, headers={"X-Twilio-Signature": signature, **headers}
    )


def signed_post(client, path, body, *, url_base=PUBLIC, token=TOKEN, **headers):
    return post(client, path, body, sign(url_base + path, body, token), **headers)


@pytest.mark.django_db
def test_signed_callback_applied(client, twilio):
    message = sent_message()
    path = f"{STATUS_PATH}?ref={message.pk}"
    response = signed_post(client, path, fixture_bytes("status_delivered.raw"))
    assert response.status_code == 200
    stored = WebhookRequest.objects.get()
    assert (stored.authenticated, stored.state) == (True, "processed")
    assert stored.query_string == f"ref={message.pk}"
    message.refresh_from_db()
    assert message.status == Status.DELIVERED
    event = message.events.get(source="webhook")
    assert event.provider_timestamp == datetime(2023, 2, 14, 15, 30, tzinfo=UTC)


@pytest.mark.django_db
@pytest.mark.parametrize("signed_base", ["https://herald.example.com:443", PUBLIC])
def test_signature_with_and_without_default_port(client, settings, signed_base):
    settings.PUBLIC_BASE_URL = PUBLIC
    configure(settings)
    response = signed_post(
        client, f"{STATUS_PATH}?ref=r", fixture_bytes("status_sent.raw"), url_base=signed_base
    )
    assert response.status_code == 200


@pytest.mark.django_db
def test_public_url_with_a_port_accepts_a_signature_without_it(client, settings):
    settings.PUBLIC_BASE_URL = "https://herald.example.com:8443"
    configure(settings)
    response = signed_post(client, STATUS_PATH, fixture_bytes("status_sent.raw"), url_base=PUBLIC)
    assert response.status_code == 200


@pytest.mark.django_db
def test_behind_a_proxy_x_forwarded_proto_and_host(client, settings):
    settings.PUBLIC_BASE_URL = "http://10.0.0.5:8000"  # not what Twilio called
    configure(settings)
    body = fixture_bytes("status_sent.raw")
    path = f"{STATUS_PATH}?ref=r"
    signature = sign(f"https://sms.example.org{path}", body)
    plain = post(client, path, body, signature)
    assert plain.status_code == 401
    forwarded = post(
        client, path, body, signature,
        **{"X-Forwarded-Proto": "https", "X-Forwarded-Host": "sms.example.org"},
    )  # fmt: skip
    assert forwarded.status_code == 200
    via_host = post(
        client, path, body, signature, **{"X-Forwarded-Proto": "https", "Host": "sms.example.org"}
    )
    assert via_host.status_code == 200
    states = list(WebhookRequest.objects.order_by("id").values_list("authenticated", flat=True))
    assert states == [False, True, True]


@pytest.mark.django_db
def test_rotated_tokens_both_accepted(client, settings):
    settings.PUBLIC_BASE_URL = PUBLIC
    configure(settings, AUTH_TOKEN=f"new-token, {TOKEN}")
    body = fixture_bytes("status_sent.raw")
    assert signed_post(client, STATUS_PATH, body, token=TOKEN).status_code == 200
    assert signed_post(client, STATUS_PATH, body, token="new-token").status_code == 200
    assert signed_post(client, STATUS_PATH, body, token="retired").status_code == 401


@pytest.mark.django_db
@pytest.mark.parametrize("tamper", ["param", "url", "signature", "missing"])
def test_tampered_requests_rejected_and_recorded(client, twilio, tamper):
    message = sent_message()
    body = fixture_bytes("status_delivered.raw")
    path = f"{STATUS_PATH}?ref={message.pk}"
    signature = sign(PUBLIC + path, body)
    if tamper == "param":
        body = body.replace(b"MessageStatus=delivered", b"MessageStatus=undelivered")
    elif tamper == "url":
        path = f"{STATUS_PATH}?ref=00000000-0000-0000-0000-000000000000"
    elif tamper == "signature":
        signature = signature[:-2] + ("A=" if signature[-2] != "A" else "B=")
    else:
        signature = ""
    response = post(client, path, body, signature)
    assert response.status_code == 401
    stored = WebhookRequest.objects.get()
    assert (stored.authenticated, stored.state) == (False, "unauthenticated")
    assert stored.headers.get("x-twilio-signature", "") == signature
    message.refresh_from_db()
    assert message.status == Status.SENT
    assert not message.events.filter(source="webhook").exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "fixture_or_body",
    [
        "status_invalid_utf8.raw",
        "status_missing_sid.raw",
        b"MessageSid=SM1&MessageStatus=delivered&Body=%C3%28",
        b"",
    ],
    ids=["invalid-utf8", "missing-sid", "escaped-invalid-utf8", "empty"],
)
def test_malformed_but_signed_is_400_and_recorded_invalid(client, twilio, fixture_or_body):
    body = fixture_bytes(fixture_or_body) if isinstance(fixture_or_body, str) else fixture_or_body
    response = signed_post(client, STATUS_PATH, body)
    assert response.status_code == 400
    stored = WebhookRequest.objects.get()
    assert (stored.authenticated, stored.state, stored.response_status) == (True, "invalid", 400)
    assert bytes(stored.body) == body
    assert stored.error
    assert not StatusEvent.objects.filter(source="webhook").exists()


@pytest.mark.django_db
def test_duplicates_and_out_of_order(client, twilio):
    message = sent_message()
    path = f"{STATUS_PATH}?ref={message.pk}"
    delivered = fixture_bytes("status_delivered.raw")
    for body in (delivered, fixture_bytes("status_sent.raw"), delivered):
        assert signed_post(client, path, body).status_code == 200
    message.refresh_from_db()
    assert message.status == Status.DELIVERED
    events = message.events.filter(source="webhook").order_by("id")
    assert list(events.values_list("status", "provider_status", "applied")) == [
        ("delivered", "delivered", True),
        ("sent", "sent", False),  # late intermediate report: recorded, changes nothing
        ("delivered", "delivered", False),  # the retry: shown as an ignored duplicate
    ]
    assert WebhookRequest.objects.filter(state="processed").count() == 3


@pytest.mark.django_db
def test_undelivered_then_late_delivered_keeps_the_first_final(client, twilio):
    message = sent_message()
    path = f"{STATUS_PATH}?ref={message.pk}"
    signed_post(client, path, fixture_bytes("status_undelivered.raw"))
    signed_post(client, path, fixture_bytes("status_delivered.raw"))
    message.refresh_from_db()
    assert (message.status, message.error_code) == (Status.FAILED, "30003")


@pytest.mark.django_db
def test_callback_before_the_send_response_is_matched_by_ref(client, twilio):
    message = claimed()  # `sending`: the send response is not stored yet
    path = f"{STATUS_PATH}?ref={message.pk}"
    assert signed_post(client, path, fixture_bytes("status_delivered.raw")).status_code == 200
    kept = UnmatchedReport.objects.get()
    assert kept.client_reference == str(message.pk)
    record_sent(message, SendResult([SM], provider_status="queued"))
    message.refresh_from_db()
    assert message.status == Status.DELIVERED
    kept.refresh_from_db()
    assert kept.matched_at is not None


@pytest.mark.django_db
def test_inbound_stop_opts_out_and_answers_empty_twiml(client, twilio):
    body = fixture_bytes("inbound_stop.raw")
    response = signed_post(client, INBOUND_PATH, body)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/xml")
    assert response.content == EMPTY_TWIML
    inbound = Message.objects.get(direction="inbound")
    assert (inbound.provider_message_id, inbound.from_number, inbound.body) == (
        "SM" + "1" * 32,
        "+14155550123",
        " Stop ",
    )
    optout = OptOut.objects.get(phone_number="+14155550123")
    assert optout.keyword == "STOP"
    # the same webhook again (a Twilio retry) stores nothing new
    assert signed_post(client, INBOUND_PATH, body).status_code == 200
    assert Message.objects.filter(direction="inbound").count() == 1
    # START takes the number off the list
    start = body.replace(b"Body=+Stop+", b"Body=start").replace(b"1111", b"2222")
    assert signed_post(client, INBOUND_PATH, start).status_code == 200
    assert not OptOut.objects.filter(phone_number="+14155550123").exists()


@pytest.mark.django_db
def test_inbound_with_a_bad_signature_is_refused(client, twilio):
    body = fixture_bytes("inbound_stop.raw")
    response = signed_post(client, INBOUND_PATH, body, token="wrong")
    assert response.status_code == 401
    assert not OptOut.objects.exists()


# --- reconciliation -------------------------------------------------------------------------


def fetch_url(sid=SM):
    return f"{API}/2010-04-01/Accounts/{ACCOUNT}/Messages/{sid}.json"


@pytest.mark.django_db
@responses.activate
def test_fetch_reports_maps_status_and_error(twilio):
    message = sent_message()
    basic = base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()
    responses.get(
        fetch_url(),
        json=fixture_json("fetch_undelivered.json"),
        match=[matchers.header_matcher({"Authorization": f"Basic {basic}"})],
    )
    (report,) = twilio.fetch_reports(message, requests.Session())
    assert responses.calls[0].request.method == "GET"
    assert (report.status, report.provider_status) == (Status.FAILED, "undelivered")
    assert (report.error_code, report.error_text) == ("30003", "Unreachable destination handset")
    assert report.provider_message_id == SM
    assert report.client_reference == str(message.pk)
    assert report.price == Decimal("0.00790")


@pytest.mark.django_db
@responses.activate
def test_fetch_reports_delivered_with_segments(twilio):
    message = sent_message()
    responses.get(fetch_url(), json=fixture_json("fetch_delivered.json"))
    (report,) = twilio.fetch_reports(message, requests.Session())
    assert (report.status, report.segments, report.currency) == (Status.DELIVERED, 2, "USD")


@pytest.mark.django_db
@responses.activate
@pytest.mark.parametrize(
    "status, fixture, kind",
    [(404, "error_20404.json", PermanentSendError), (500, "error_20500.json", RetryableSendError)],
)
def test_fetch_reports_errors(twilio, status, fixture, kind):
    message = sent_message()
    responses.get(fetch_url(), json=fixture_json(fixture), status=status)
    with pytest.raises(kind):
        twilio.fetch_reports(message, requests.Session())


@pytest.mark.django_db
def test_fetch_reports_without_a_sid_asks_nothing(twilio):
    message = claimed()
    with responses.RequestsMock():  # any HTTP call would fail the test
        assert twilio.fetch_reports(message, requests.Session()) == []


# --- round trip through the emulator over real HTTP ----------------------------------------


def run_sender(concurrency, max_seconds=20):
    from messaging.sender import Sender

    sender = Sender(concurrency=concurrency, batch_size=20)
    deadline = time.monotonic() + max_seconds
    try:
        while time.monotonic() < deadline:
            sender.tick()
            if not Message.objects.filter(status__in=["queued", "sending"]).exists():
                return
            time.sleep(0.05)
    finally:
        sender.pool.shutdown()


@pytest.mark.django_db(transaction=True)
def test_round_trip_through_the_emulator(api, public_url, settings):
    from devtools.emulator.base import Emulator
    from devtools.emulator.twilio import TwilioEmulator

    # SQLite takes one writer at a time (and the in-memory test database fails, rather than
    # waits, on a lock held by another thread): there the sends finish before the callbacks
    # start, one sender thread at a time. On PostgreSQL everything overlaps, callbacks racing
    # the send responses included.
    postgres = connection.vendor == "postgresql"
    delay, concurrency = (0, 4) if postgres else (1.0, 1)
    with Emulator(receipt_delay=delay, providers={"twilio": TwilioEmulator}) as emu:
        provider = configure(settings, BASE_URL=emu.url)
        emulated = emu.providers["twilio"]
        emulated.unsubscribed.add("+14155550108")

        def send(to):
            response = api.post(
                "/api/v1/messages/",
                {"to": to, "body": "Hello from Herald", "provider": "twilio"},
                format="json",
            )
            assert response.status_code == 202, response.content
            return Message.objects.get(pk=response.json()["id"])

        by_digit = {d: send(f"+1415555010{d}") for d in "701238"}
        run_sender(concurrency)
        assert emu.wait_idle(timeout=20)

        for message in by_digit.values():
            message.refresh_from_db()
        delivered = by_digit["7"]
        assert delivered.status == Status.DELIVERED
        assert delivered.provider_message_id.startswith("SM")
        assert (by_digit["0"].status, by_digit["0"].error_code) == (Status.FAILED, "30003")
        assert (by_digit["1"].status, by_digit["1"].error_code) == (Status.EXPIRED, "30036")
        assert by_digit["2"].status == Status.DELIVERED
        assert by_digit["3"].status == Status.SENT  # no callback at all
        assert (by_digit["8"].status, by_digit["8"].error_code) == (Status.REJECTED, "21610")
        assert OptOut.objects.filter(phone_number="+14155550108").exists()

        # every callback was signed over the exact StatusCallback URL and accepted
        hooks = WebhookRequest.objects.filter(provider="twilio")
        assert hooks.count() == 2 + 2 + 2 + 3
        assert set(hooks.values_list("authenticated", "state")) == {(True, "processed")}
        assert all(q.startswith("ref=") for q in hooks.values_list("query_string", flat=True))
        # duplicated and out of order: three posts, two distinct events, delivered kept
        duplicated = by_digit["2"].events.filter(source="webhook").order_by("id")
        assert list(duplicated.values_list("status", "applied")) == [
            ("delivered", True),
            ("sent", False),
            ("delivered", False),  # the exact duplicate, shown as ignored
        ]

        # reconciliation against the emulator's fetch endpoint
        session = requests.Session()
        (fetched,) = provider.fetch_reports(delivered, session)
        assert (fetched.status, fetched.provider_message_id) == (
            Status.DELIVERED,
            delivered.provider_message_id,
        )
        (pending,) = provider.fetch_reports(by_digit["3"], session)
        assert (pending.status, pending.provider_status) == (Status.SENT, "queued")

        # an inbound STOP, signed as Twilio signs it, answered with empty TwiML
        hook = emulated.inbound(from_number="+14155550177", to_number="+14155550199", body="STOP")
        answer = requests.post(hook.url, data=hook.body, headers=hook.headers, timeout=10)
        assert (answer.status_code, answer.content) == (200, EMPTY_TWIML)
        assert OptOut.objects.filter(phone_number="+14155550177").exists()

        stats = requests.get(f"{emu.url}/_emulator/stats", timeout=5).json()
        assert stats["sends"]["twilio"]["+14155550107"] == 1
        assert stats["webhooks_failed"] == {}
        # Close the emulator's keep-alive connection to the live server while it still runs:
        # otherwise its request thread closes the shared test database connection after the
        # live server has gone (an unhandled thread exception at teardown).
        emu._session.close()


def test_emulator_answers_twilio_errors(settings):
    from devtools.emulator.base import Emulator, Faults
    from devtools.emulator.twilio import TwilioEmulator

    settings.PUBLIC_BASE_URL = PUBLIC
    with Emulator(receipt_delay=60, providers={"twilio": TwilioEmulator}) as emu:
        provider = configure(settings, BASE_URL=emu.url)
        url = f"{emu.url}/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
        good = {"To": "+14155550100", "From": "+14155550199", "Body": "hi"}

        def code(data, auth=(ACCOUNT, TOKEN)):
            response = requests.post(url, data=data, auth=auth, timeout=5)
            return response.status_code, response.json()["code"]

        assert code(good, auth=(ACCOUNT, "wrong")) == (401, 20003)
        assert code({**good, "To": "12345"}) == (400, 21211)
        assert code({"To": "+14155550100", "Body": "hi"}) == (400, 21603)
        assert code({**good, "Body": ""}) == (400, 21602)
        assert code({**good, "Body": "x" * 1601}) == (400, 21617)
        missing = requests.get(
            url.replace(".json", "/SMnope.json"), auth=(ACCOUNT, TOKEN), timeout=5
        )
        assert (missing.status_code, missing.json()["code"]) == (404, 20404)

        # injected throttling comes back in Twilio's format and is retried by the provider
        emu.faults = Faults(rate_429=1.0)
        with pytest.raises(RetryableSendError) as info:
            provider.send(sms(), requests.Session())
        assert info.value.code == "20429"
