"""Vonage Messages API (providers.md section 2): the send request as Vonage expects it, error
classification, the signed-webhook JWT, the status split, inbound and opt-out, and the webhook
URL end to end.

Webhook tokens here are made with the standard library (providers.md Appendix A's algorithm),
not with PyJWT, so the provider's PyJWT-based verifier is checked against an independent
implementation.
"""

import base64
import hashlib
import hmac
import json
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import jwt
import pytest
import requests
import responses
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.db import connection

from devtools.emulator.base import Emulator, Faults
from devtools.emulator.vonage_messages import VonageMessagesEmulator
from messaging.errors import OptedOut
from messaging.models import (
    Message,
    OptOut,
    OptOutChange,
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
    WebhookInput,
    WebhookParseError,
)
from messaging.sender import Sender
from messaging.services.messages import create_outbound
from messaging.services.sending import claim_due
from messaging.status import Status
from tests.sending import send_one

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "vonage-messages"
NAME = "vonage-messages"
SECRET = "vonage-signature-secret-0123456789abcdef"  # >= 32 bytes: no PyJWT key warning
OLD_SECRET = "previous-signature-secret-0123456789abcdef"
APP_ID = "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"
SEND_URL = "https://api.nexmo.com/v1/messages"
STATUS_PATH = f"/webhooks/{NAME}/status/"
INBOUND_PATH = f"/webhooks/{NAME}/inbound/"
UUID_IN_FIXTURES = "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@pytest.fixture(scope="module")
def rsa_key():
    """A throwaway application key pair, generated for this test run."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return key, pem


def configure(settings, **options):
    base = {
        "API_KEY": "abcd1234",
        "API_SECRET": "api-secret-1234",
        "SIGNATURE_SECRET": SECRET,
        "APPLICATION_ID": "",
        "PRIVATE_KEY": "",
        "FROM": "Herald",
        "BASE_URL": "https://api.nexmo.com",
        "WEBHOOK_SIGNING": "true",
    }
    settings.SMS_PROVIDERS = {
        **settings.SMS_PROVIDERS,
        NAME: {
            "BACKEND": "messaging.providers.vonage_messages.VonageMessagesProvider",
            "OPTIONS": {**base, **options},
            "ENV": {},
        },
    }
    settings.SMS_PROVIDERS_ENABLED = [*settings.SMS_PROVIDERS_ENABLED, NAME]
    settings.PUBLIC_BASE_URL = "https://herald.example.com"
    return get_provider(NAME)


@pytest.fixture
def vonage(settings, rsa_key):
    return configure(settings, APPLICATION_ID=APP_ID, PRIVATE_KEY=rsa_key[1])


# --- the webhook JWT, made with the standard library -----------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_token(body: bytes, secret=SECRET, header=None, **claims) -> str:
    """An HS256 token as Vonage signs webhooks (providers.md 2.7)."""
    payload = {
        "iat": int(time.time()),
        "jti": str(uuid.uuid4()),
        "iss": "Vonage",
        "payload_hash": hashlib.sha256(body).hexdigest(),
        "api_key": "abcd1234",
        "application_id": APP_ID,
    }
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    head = _b64(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode())
    signing_input = f"{head}.{_b64(json.dumps(payload).encode())}"
    mac = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


def winput(body: bytes, token=None, path=STATUS_PATH) -> WebhookInput:
    headers = {"content-type": "application/json"}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return WebhookInput("POST", f"https://herald.example.com{path}", headers, body)


def post(client, path, body: bytes, token="sign"):
    extra = {}
    if token == "sign":
        token = make_token(body)
    if token is not None:
        extra["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client.generic("POST", path, body, content_type="application/json", **extra)


def sms(**overrides) -> OutboundSms:
    values = {
        "message_id": "0f6a2c64-3b1e-4a43-9a57-4d1f0f4c1a11",
        "to": "+447700900000",
        "sender": "+447700900001",
        "body": "Hello from Herald",
        "encoding": "GSM-7",
        "segments": 1,
        "callback_url": "https://herald.example.com/webhooks/vonage-messages/status/",
    }
    return OutboundSms(**{**values, **overrides})


# --- send: request shape ---------------------------------------------------------------------


@responses.activate
def test_send_request_shape_with_application_jwt(vonage, rsa_key):
    responses.post(SEND_URL, body=fixture("send_202.json"), status=202)
    before = int(time.time())
    result = vonage.send(sms(), requests.Session())

    assert result.provider_message_ids == ["d8f86df1-dec6-442f-870a-2241be27d721"]
    assert result.provider_status == "submitted"
    call = responses.calls[0].request
    assert (call.method, call.url) == ("POST", SEND_URL)
    assert call.headers["Content-Type"] == "application/json"
    assert call.headers["Accept"] == "application/json"
    assert json.loads(call.body) == {
        "message_type": "text",
        "channel": "sms",
        "to": "447700900000",
        "from": "447700900001",
        "text": "Hello from Herald",
        "client_ref": "0f6a2c64-3b1e-4a43-9a57-4d1f0f4c1a11",
        "webhook_url": "https://herald.example.com/webhooks/vonage-messages/status/",
        "webhook_version": "v1",
        "sms": {"encoding_type": "text"},
    }
    scheme, token = call.headers["Authorization"].split(" ")
    assert scheme == "Bearer"
    assert jwt.get_unverified_header(token) == {"alg": "RS256", "typ": "JWT"}
    claims = jwt.decode(token, rsa_key[0].public_key(), algorithms=["RS256"])
    assert set(claims) == {"application_id", "iat", "jti", "exp"}
    assert claims["application_id"] == APP_ID
    assert before <= claims["iat"] <= int(time.time())
    assert claims["exp"] - claims["iat"] == 900
    assert uuid.UUID(claims["jti"])


@responses.activate
def test_each_request_gets_its_own_jti(vonage):
    responses.post(SEND_URL, body=fixture("send_202.json"), status=202)
    vonage.send(sms(), requests.Session())
    vonage.send(sms(), requests.Session())
    tokens = [c.request.headers["Authorization"].split(" ")[1] for c in responses.calls]
    jtis = {jwt.decode(t, options={"verify_signature": False})["jti"] for t in tokens}
    assert len(jtis) == 2


@responses.activate
def test_basic_auth_without_an_application(settings):
    provider = configure(settings)
    responses.post(SEND_URL, body=fixture("send_202.json"), status=202)
    provider.send(sms(sender="Herald", body="Prix: 10€ ✓", encoding="UCS-2"), requests.Session())
    call = responses.calls[0].request
    expected = base64.b64encode(b"abcd1234:api-secret-1234").decode()
    assert call.headers["Authorization"] == f"Basic {expected}"
    body = json.loads(call.body)
    assert body["from"] == "Herald"  # alphanumeric sender kept as is
    assert body["sms"] == {"encoding_type": "unicode"}
    assert body["text"] == "Prix: 10€ ✓"


@responses.activate
def test_base_url_override_and_private_key_from_a_file(settings, rsa_key, tmp_path):
    key_file = tmp_path / "private.key"
    key_file.write_text(rsa_key[1])
    provider = configure(
        settings,
        APPLICATION_ID=APP_ID,
        PRIVATE_KEY=str(key_file),
        BASE_URL="http://127.0.0.1:9999/",
    )
    responses.post("http://127.0.0.1:9999/v1/messages", body=fixture("send_202.json"), status=202)
    provider.send(sms(), requests.Session())
    token = responses.calls[0].request.headers["Authorization"].split(" ")[1]
    assert jwt.decode(token, rsa_key[0].public_key(), algorithms=["RS256"])


@responses.activate
def test_private_key_with_escaped_newlines(settings, rsa_key):
    one_line = rsa_key[1].replace("\n", "\\n")  # as a one-line environment variable holds it
    provider = configure(settings, APPLICATION_ID=APP_ID, PRIVATE_KEY=one_line)
    responses.post(SEND_URL, body=fixture("send_202.json"), status=202)
    provider.send(sms(), requests.Session())
    token = responses.calls[0].request.headers["Authorization"].split(" ")[1]
    assert jwt.decode(token, rsa_key[0].public_key(), algorithms=["RS256"])


@responses.activate
def test_unusable_private_key_sends_nothing_and_is_retryable(settings):
    secret_text = "-----BEGIN PRIVATE KEY-----\nnot-a-key\n-----END PRIVATE KEY-----"
    provider = configure(settings, APPLICATION_ID=APP_ID, PRIVATE_KEY=secret_text)
    with pytest.raises(RetryableSendError) as caught:
        provider.send(sms(), requests.Session())
    assert caught.value.code == "private-key"
    assert "not-a-key" not in str(caught.value)
    assert len(responses.calls) == 0


# --- send: errors ----------------------------------------------------------------------------

ERRORS = [
    # (status, fixture or raw body, error class, code, retry_after)
    (401, "error_401_unauthorized.json", PermanentSendError, "unathorized", None),
    (402, "error_402_low_balance.json", PermanentSendError, "low-balance", None),
    (403, b'{"type": "https://developer.vonage.com/api-errors#forbidden", "title": "Forbidden"}',
     PermanentSendError, "forbidden", None),
    (404, b'{"type": "https://developer.vonage.com/api-errors#not-found", "title": "Not Found"}',
     PermanentSendError, "not-found", None),
    (422, "error_422_invalid.json", PermanentSendError, "1150", None),
    (429, "error_429_rate_limit.json", RetryableSendError, "1010", 7.0),
    (500, b"<html>Internal Server Error</html>", RetryableSendError, "500", None),
    (503, b"", RetryableSendError, "503", 30.0),
]  # fmt: skip


@pytest.mark.parametrize("status,body,error_class,code,retry_after", ERRORS)
@responses.activate
def test_send_errors_are_classified(vonage, status, body, error_class, code, retry_after):
    raw = fixture(body) if isinstance(body, str) else body
    headers = {"Retry-After": str(int(retry_after))} if retry_after else {}
    responses.post(SEND_URL, body=raw, status=status, headers=headers)
    with pytest.raises(error_class) as caught:
        vonage.send(sms(), requests.Session())
    error = caught.value
    assert type(error) is error_class
    assert error.code == code
    assert error.retry_after == retry_after
    assert not error.opted_out
    assert str(status) in str(error)


@responses.activate
def test_invalid_params_error_keeps_the_problem_document(vonage):
    responses.post(SEND_URL, body=fixture("error_422_invalid.json"), status=422)
    with pytest.raises(PermanentSendError) as caught:
        vonage.send(sms(), requests.Session())
    assert caught.value.raw["invalid_parameters"] == [
        {"name": "messenger.tag", "reason": "invalid value"}
    ]
    assert "Invalid params" in str(caught.value)


@responses.activate
def test_opted_out_error_code_marks_the_number(vonage):
    body = {"type": "https://developer.vonage.com/api-errors/messages#1240", "title": "Illegal"}
    responses.post(SEND_URL, json=body, status=422)
    with pytest.raises(PermanentSendError) as caught:
        vonage.send(sms(), requests.Session())
    assert caught.value.opted_out


@responses.activate
def test_accepted_without_a_uuid_is_ambiguous(vonage):
    responses.post(SEND_URL, body=b"accepted", status=202)
    with pytest.raises(AmbiguousSendError):
        vonage.send(sms(), requests.Session())


@responses.activate
def test_read_timeout_is_ambiguous_and_refused_connection_retryable(vonage):
    responses.post(SEND_URL, body=requests.ReadTimeout("read timed out"))
    with pytest.raises(AmbiguousSendError):
        vonage.send(sms(), requests.Session())
    responses.replace(responses.POST, SEND_URL, body=requests.ConnectTimeout("connect"))
    with pytest.raises(RetryableSendError):
        vonage.send(sms(), requests.Session())


# --- send: through the sending service ------------------------------------------------------


def queue_and_send(to="+447700900000", body="Hello from Herald"):
    message = create_outbound(to=to, body=body, source="api", provider=NAME)
    [claimed] = claim_due(10, "test-owner")
    send_one(claimed, requests.Session(), "test-owner")
    message.refresh_from_db()
    return message


@pytest.mark.django_db
@responses.activate
def test_sender_records_the_uuid_and_our_reference(vonage):
    responses.post(SEND_URL, body=fixture("send_202.json"), status=202)
    message = queue_and_send()
    assert message.status == Status.SENT
    assert message.provider_message_id == "d8f86df1-dec6-442f-870a-2241be27d721"
    sent = json.loads(responses.calls[0].request.body)
    assert sent["client_ref"] == str(message.pk)
    assert sent["from"] == "Herald"
    assert sent["webhook_url"] == "https://herald.example.com/webhooks/vonage-messages/status/"


@pytest.mark.django_db
@responses.activate
def test_sender_rejects_on_validation_error_and_retries_on_429(vonage):
    responses.post(SEND_URL, body=fixture("error_422_invalid.json"), status=422)
    rejected = queue_and_send()
    assert (rejected.status, rejected.error_code) == (Status.REJECTED, "1150")

    responses.replace(
        responses.POST,
        SEND_URL,
        body=fixture("error_429_rate_limit.json"),
        status=429,
        headers={"Retry-After": "120"},
    )
    started = time.time()
    throttled = queue_and_send(to="+447700900002")
    assert (throttled.status, throttled.error_code) == (Status.QUEUED, "1010")
    assert throttled.next_attempt_at.timestamp() >= started + 120  # Retry-After honoured


# --- webhook signature -----------------------------------------------------------------------


def test_signed_webhook_is_accepted(vonage):
    body = fixture("status_submitted.json")
    vonage.verify_webhook(winput(body, make_token(body)), "status")


def test_rotated_secrets_accept_either(settings):
    provider = configure(settings, SIGNATURE_SECRET=f"{SECRET}, {OLD_SECRET}")
    body = fixture("status_submitted.json")
    provider.verify_webhook(winput(body, make_token(body, secret=OLD_SECRET)), "status")
    provider.verify_webhook(winput(body, make_token(body, secret=SECRET)), "status")


def _rs256_token(body, key):
    claims = {"iat": int(time.time()), "payload_hash": hashlib.sha256(body).hexdigest()}
    return jwt.encode(claims, key, algorithm="RS256")


def _tampered_signature(body):
    token = make_token(body)
    head, payload, sig = token.split(".")
    flipped = ("A" if sig[0] != "A" else "B") + sig[1:]
    return f"{head}.{payload}.{flipped}"


def _none_token(body):
    head = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    claims = {"iat": int(time.time()), "payload_hash": hashlib.sha256(body).hexdigest()}
    return f"{head}.{_b64(json.dumps(claims).encode())}."


REJECTED_TOKENS = {
    "wrong secret": lambda body, key: make_token(body, secret="someone-elses-secret-0123456789ab"),
    "tampered signature": lambda body, key: _tampered_signature(body),
    "tampered body": lambda body, key: make_token(body.replace(b"submitted", b"delivered")),
    "stale iat": lambda body, key: make_token(body, iat=int(time.time()) - 301),
    "future iat": lambda body, key: make_token(body, iat=int(time.time()) + 301),
    "no iat": lambda body, key: make_token(body, iat=None),
    "no payload_hash": lambda body, key: make_token(body, payload_hash=None),
    "other issuer": lambda body, key: make_token(body, iss="Mallory"),
    "alg none": lambda body, key: _none_token(body),
    "alg RS256": lambda body, key: _rs256_token(body, key),
    "not a JWT": lambda body, key: "definitely.not.a-jwt",
}


@pytest.mark.parametrize("case", REJECTED_TOKENS)
@pytest.mark.django_db
def test_bad_tokens_are_refused_401_and_recorded(vonage, rsa_key, client, case):
    body = fixture("status_submitted.json")
    token = REJECTED_TOKENS[case](body, rsa_key[0])
    response = post(client, STATUS_PATH, body, token)
    assert response.status_code == 401, case
    stored = WebhookRequest.objects.get()
    assert (stored.state, stored.authenticated) == ("unauthenticated", False)
    assert stored.auth_error
    assert stored.headers["authorization"] == "Bearer [redacted]"
    assert not StatusEvent.objects.filter(source="webhook").exists()


def test_token_within_the_window_is_accepted(vonage):
    body = fixture("status_submitted.json")
    vonage.verify_webhook(winput(body, make_token(body, iat=int(time.time()) - 290)), "status")


@pytest.mark.django_db
def test_unsigned_callback_is_refused_and_recorded(vonage, client):
    # providers.md 2.7: Vonage may send an unsigned callback after an internal error. Herald
    # refuses every unauthenticated request with a 4xx and keeps it as evidence.
    response = post(client, STATUS_PATH, fixture("status_submitted.json"), token=None)
    assert response.status_code == 401
    assert WebhookRequest.objects.get().state == "unauthenticated"


@pytest.mark.django_db
def test_non_bearer_authorization_is_401(vonage, client):
    body = fixture("status_submitted.json")
    response = client.generic(
        "POST", STATUS_PATH, body, content_type="application/json",
        HTTP_AUTHORIZATION="Basic YWJjZDEyMzQ6c2VjcmV0",
    )  # fmt: skip
    assert response.status_code == 401


@pytest.mark.django_db
def test_signing_on_without_a_secret_refuses_with_503(settings, client):
    # our misconfiguration: Vonage retries 5xx, so nothing is lost once the secret is set
    configure(settings, SIGNATURE_SECRET="")
    body = fixture("status_submitted.json")
    assert post(client, STATUS_PATH, body).status_code == 503
    assert WebhookRequest.objects.get().state == "unauthenticated"


@pytest.mark.django_db
def test_signing_switched_off_accepts_unsigned(settings, client):
    configure(settings, WEBHOOK_SIGNING="false")
    response = post(client, STATUS_PATH, fixture("status_submitted.json"), token=None)
    assert response.status_code == 200


def test_appendix_reference_verifier_agrees():
    """The stdlib reference check of providers.md Appendix A accepts our test tokens, so the
    tokens above are shaped as that contract describes."""
    body = fixture("status_submitted.json")
    token = make_token(body)
    h64, p64, s64 = token.split(".")
    pad = lambda s: base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))  # noqa: E731
    claims = json.loads(pad(p64))
    mac = hmac.new(SECRET.encode(), f"{h64}.{p64}".encode(), hashlib.sha256).digest()
    assert json.loads(pad(h64))["alg"] == "HS256"
    assert hmac.compare_digest(mac, pad(s64))
    assert claims["payload_hash"] == hashlib.sha256(body).hexdigest()


# --- status parsing: every status and the rejected split ------------------------------------

STATUS_CASES = [
    # fixture, canonical, provider status, error code, segments
    ("status_submitted.json", Status.SENT, "submitted", "1000", 3),
    ("status_delivered_multisegment.json", Status.DELIVERED, "delivered", "", 2),
    ("status_read.json", Status.DELIVERED, "read", "", None),
    ("status_rejected_expired.json", Status.EXPIRED, "rejected", "1360", None),
    ("status_rejected_unknown.json", Status.UNKNOWN, "rejected", "1330", None),
    ("status_rejected_barred.json", Status.REJECTED, "rejected", "1050", None),
    ("status_rejected_absent.json", Status.FAILED, "rejected", "1190", None),
    ("status_undeliverable.json", Status.FAILED, "undeliverable", "1100", None),
    ("status_failed.json", Status.FAILED, "failed", "", None),
]


@pytest.mark.parametrize("name,status,raw_status,code,segments", STATUS_CASES)
def test_status_fixtures_map(vonage, name, status, raw_status, code, segments):
    [report] = vonage.parse_status_webhook(winput(fixture(name)))
    assert report.status == status
    assert report.provider_status == raw_status
    assert report.error_code == code
    assert report.segments == segments
    assert report.provider_message_id == UUID_IN_FIXTURES
    assert report.raw == json.loads(fixture(name))


def test_status_fields(vonage):
    [report] = vonage.parse_status_webhook(winput(fixture("status_submitted.json")))
    assert report.provider_timestamp == datetime(2020, 1, 1, 14, 0, 3, 10000, tzinfo=UTC)
    assert (report.price, report.currency) == (Decimal("0.0333"), "EUR")
    assert report.error_text.startswith("Throttled")
    [report] = vonage.parse_status_webhook(winput(fixture("status_rejected_barred.json")))
    assert (report.client_reference, report.error_text) == ("abc123", "Number barred")


@pytest.mark.parametrize(
    "code,status",
    [("1360", Status.EXPIRED), ("1330", Status.UNKNOWN), ("1050", Status.REJECTED),
     ("1120", Status.REJECTED), ("1240", Status.REJECTED), ("1180", Status.FAILED),
     ("1331", Status.FAILED), ("9999", Status.FAILED), ("", Status.FAILED)],
)  # fmt: skip
def test_rejected_is_split_by_error_code(vonage, code, status):
    data = {"message_uuid": "u-1", "status": "rejected"}
    if code:
        data["error"] = {"type": f"https://developer.vonage.com/api-errors/messages#{code}",
                         "title": int(code)}  # fmt: skip
    [report] = vonage.parse_status_webhook(winput(json.dumps(data).encode()))
    assert report.status == status


def test_error_code_falls_back_to_the_type_url(vonage):
    data = {
        "message_uuid": "u-1",
        "status": "rejected",
        "error": {"type": "https://developer.vonage.com/api-errors/messages#1360",
                  "title": "TTL was activated"},
    }  # fmt: skip
    [report] = vonage.parse_status_webhook(winput(json.dumps(data).encode()))
    assert (report.status, report.error_code) == (Status.EXPIRED, "1360")
    assert report.error_text == "TTL was activated"


def test_unlisted_status_is_unknown_not_an_error(vonage):
    data = {"message_uuid": "u-1", "status": "buffered", "timestamp": "2020-01-01T14:00:00"}
    [report] = vonage.parse_status_webhook(winput(json.dumps(data).encode()))
    assert report.status == Status.UNKNOWN
    assert report.provider_timestamp.tzinfo is not None  # a zone-less stamp is read as UTC


MALFORMED = {
    "not json": b"message_uuid=1&status=delivered",
    "not utf-8": b'{"status": "\xff"}',
    "array": b'[{"message_uuid": "u-1", "status": "delivered"}]',
    "no uuid": b'{"status": "delivered"}',
    "no status": b'{"message_uuid": "u-1"}',
    "status not a string": b'{"message_uuid": "u-1", "status": 3}',
    "uuid not a string": b'{"message_uuid": {"a": 1}, "status": "delivered"}',
    "error not an object": b'{"message_uuid": "u-1", "status": "rejected", "error": "1360"}',
    "usage not an object": b'{"message_uuid": "u-1", "status": "delivered", "usage": [1]}',
    "bad timestamp": b'{"message_uuid": "u-1", "status": "delivered", "timestamp": "yesterday"}',
    "empty": b"",
}


@pytest.mark.parametrize("case", MALFORMED)
@pytest.mark.django_db
def test_malformed_status_is_400_and_recorded_invalid(vonage, client, case):
    body = MALFORMED[case]
    with pytest.raises(WebhookParseError):
        vonage.parse_status_webhook(winput(body))
    response = post(client, STATUS_PATH, body)
    assert response.status_code == 400, case
    stored = WebhookRequest.objects.get()
    assert (stored.state, stored.authenticated, stored.response_status) == ("invalid", True, 400)
    assert stored.error
    assert bytes(stored.body) == body


@pytest.mark.parametrize(
    "body",
    [b'{"message_uuid": "u", "from": "447700900001", "to": "447700900000"}',
     b'{"message_uuid": "u", "from": "447700900001", "text": "hi"}',
     b'{"from": "447700900001", "to": "447700900000", "text": "hi"}',
     b'{"message_uuid": "u", "from": "447700900001", "to": "447700900000", "text": 5}'],
)  # fmt: skip
@pytest.mark.django_db
def test_malformed_inbound_is_400_and_recorded_invalid(vonage, client, body):
    response = post(client, INBOUND_PATH, body)
    assert response.status_code == 400
    assert WebhookRequest.objects.get().state == "invalid"
    assert not Message.objects.filter(direction="inbound").exists()


# --- receipts applied through the real webhook URL ------------------------------------------


@pytest.fixture
def sent_message(vonage, db):
    with responses.RequestsMock() as mock:
        mock.post(SEND_URL, json={"message_uuid": UUID_IN_FIXTURES}, status=202)
        return queue_and_send()


def receipt(message, status, stamp, error_code=None, **extra) -> bytes:
    data = {
        "message_uuid": UUID_IN_FIXTURES,
        "to": "447700900000",
        "from": "Herald",
        "timestamp": stamp,
        "status": status,
        "channel": "sms",
        "client_ref": str(message.pk),
        **extra,
    }
    if error_code:
        data["error"] = {"type": f"https://developer.nexmo.com/api-errors/messages-olympus#"
                         f"{error_code}", "title": int(error_code), "detail": "x"}  # fmt: skip
    return json.dumps(data).encode()


def webhook_events(message):
    return list(
        message.events.filter(source="webhook")
        .order_by("id")
        .values_list("status", "provider_status", "applied")
    )


@pytest.mark.django_db
def test_submitted_then_delivered(sent_message, client):
    submitted = receipt(sent_message, "submitted", "2025-01-01T10:00:00Z",
                        usage={"currency": "EUR", "price": "0.0333"})  # fmt: skip
    delivered = receipt(sent_message, "delivered", "2025-01-01T10:00:05Z")
    assert post(client, STATUS_PATH, submitted).status_code == 200
    assert post(client, STATUS_PATH, delivered).status_code == 200
    sent_message.refresh_from_db()
    assert sent_message.status == Status.DELIVERED
    assert (sent_message.price, sent_message.currency) == (Decimal("0.0333"), "EUR")
    assert webhook_events(sent_message) == [
        ("sent", "submitted", False),  # already sent by our own send response
        ("delivered", "delivered", True),
    ]
    assert set(WebhookRequest.objects.values_list("state", flat=True)) == {"processed"}


@pytest.mark.django_db
def test_duplicates_and_out_of_order(sent_message, client):
    submitted = receipt(sent_message, "submitted", "2025-01-01T10:00:00Z")
    delivered = receipt(sent_message, "delivered", "2025-01-01T10:00:05Z")
    for body in (delivered, submitted, delivered, submitted):  # late and retried
        assert post(client, STATUS_PATH, body).status_code == 200
    sent_message.refresh_from_db()
    assert sent_message.status == Status.DELIVERED
    assert webhook_events(sent_message) == [
        ("delivered", "delivered", True),
        ("sent", "submitted", False),
        ("delivered", "delivered", False),  # the retries: ignored duplicates
        ("sent", "submitted", False),
    ]
    assert "final" in sent_message.events.filter(source="webhook", status="sent").first().note
    assert WebhookRequest.objects.filter(state="processed").count() == 4


@pytest.mark.django_db
def test_rejected_unknown_yields_to_a_later_definitive_status(sent_message, client):
    post(client, STATUS_PATH, receipt(sent_message, "rejected", "2025-01-01T10:05:00Z", "1330"))
    sent_message.refresh_from_db()
    assert (sent_message.status, sent_message.error_code) == (Status.UNKNOWN, "1330")
    post(client, STATUS_PATH, receipt(sent_message, "delivered", "2025-01-01T10:06:00Z"))
    sent_message.refresh_from_db()
    assert sent_message.status == Status.DELIVERED


@pytest.mark.django_db
def test_expired_is_final(sent_message, client):
    post(client, STATUS_PATH, receipt(sent_message, "rejected", "2025-01-04T10:00:00Z", "1360"))
    post(client, STATUS_PATH, receipt(sent_message, "delivered", "2025-01-04T10:01:00Z"))
    sent_message.refresh_from_db()
    assert (sent_message.status, sent_message.error_code) == (Status.EXPIRED, "1360")
    assert webhook_events(sent_message) == [
        ("expired", "rejected", True),
        ("delivered", "delivered", False),
    ]


@pytest.mark.django_db
@responses.activate
def test_receipt_before_the_send_response_is_matched_by_client_ref(vonage, client):
    message = create_outbound(to="+447700900000", body="race", source="api", provider=NAME)
    [claimed] = claim_due(10, "test-owner")
    answers = []

    def vonage_answers_late(request):
        # The status webhook arrives while our send request is still waiting for its 202.
        client_ref = json.loads(request.body)["client_ref"]
        answers.append(
            post(client, STATUS_PATH, receipt(message, "delivered", "2025-01-01T10:00:05Z"))
        )
        assert client_ref == str(message.pk)
        return 202, {}, json.dumps({"message_uuid": UUID_IN_FIXTURES})

    responses.add_callback(responses.POST, SEND_URL, callback=vonage_answers_late)
    send_one(claimed, requests.Session(), "test-owner")
    assert answers[0].status_code == 200
    kept = UnmatchedReport.objects.get(client_reference=str(message.pk))
    assert kept.matched_at is not None  # kept while `sending`, applied by record_sent
    message.refresh_from_db()
    assert message.status == Status.DELIVERED
    assert message.provider_message_id == UUID_IN_FIXTURES


# --- inbound and opt-out ---------------------------------------------------------------------


def test_inbound_fields(vonage):
    [sms_in] = vonage.parse_inbound_webhook(winput(fixture("inbound_sms.json"), path=INBOUND_PATH))
    assert sms_in.provider_message_id == UUID_IN_FIXTURES
    assert (sms_in.from_number, sms_in.to_number) == ("447700900001", "447700900000")
    assert (sms_in.text, sms_in.parts) == ("Hello From Vonage!", 2)
    assert sms_in.received_at == datetime(2020, 1, 1, 14, 0, tzinfo=UTC)


def test_inbound_parts_from_total_count(vonage):
    body = (
        b'{"message_uuid": "u", "from": "1", "to": "2", "text": "x", "sms": {"total_count": "3"}}'
    )
    [sms_in] = vonage.parse_inbound_webhook(winput(body, path=INBOUND_PATH))
    assert sms_in.parts == 3


@pytest.mark.django_db
def test_inbound_is_stored_once(vonage, client):
    body = fixture("inbound_sms.json")
    assert post(client, INBOUND_PATH, body).status_code == 200
    assert post(client, INBOUND_PATH, body).status_code == 200  # Vonage retry
    inbound = Message.objects.get(direction="inbound")
    assert inbound.provider_message_id == UUID_IN_FIXTURES
    # 447700900xxx is Ofcom's drama range, not a valid number: kept as sent (normalise_loose)
    assert (inbound.from_number, inbound.to_number) == ("447700900001", "447700900000")
    assert (inbound.body, inbound.segments, inbound.status) == ("Hello From Vonage!", 2, "received")
    assert not OptOut.objects.exists()


@pytest.mark.django_db
def test_inbound_stop_opts_the_sender_out(vonage, client):
    assert post(client, INBOUND_PATH, fixture("inbound_stop.json")).status_code == 200
    inbound = Message.objects.get(direction="inbound")
    optout = OptOut.objects.get(phone_number="+447911123456")
    assert optout.source_message == inbound
    change = OptOutChange.objects.get(phone_number="+447911123456")
    assert (change.action, change.keyword, change.source_message) == ("opt_out", "STOP", inbound)

    with pytest.raises(OptedOut):
        create_outbound(to="+447911123456", body="hi", source="api", provider=NAME)


def test_fetch_reports_has_no_api(vonage):
    assert vonage.fetch_reports(None, requests.Session()) is None


# --- the emulator: Herald -> emulated Vonage -> signed receipts -> final status --------------


def _emulator(delay=0.0, **kwargs):
    return Emulator(receipt_delay=delay, providers={NAME: VonageMessagesEmulator}, **kwargs)


def drain(emu, max_seconds=20):
    """Send everything due on one thread, then wait for every receipt to be posted."""
    sender = Sender(concurrency=1, batch_size=20)
    deadline = time.monotonic() + max_seconds
    try:
        while time.monotonic() < deadline:
            sender.tick()
            if not Message.objects.filter(status__in=["queued", "sending"]).exists():
                break
            time.sleep(0.05)
    finally:
        sender.pool.shutdown()
    assert emu.wait_idle(timeout=max_seconds)


def receipt_delay():
    # The in-memory SQLite test database locks whole tables across threads, so receipts wait
    # until the sender has written every send response. PostgreSQL needs no wait (and the
    # receipt-before-202 race has its own test above).
    return 0 if connection.vendor == "postgresql" else 1.5


@pytest.mark.django_db(transaction=True)
def test_round_trip_through_the_emulator(settings, rsa_key, live_server):
    with _emulator(receipt_delay()) as emu:
        configure(settings, APPLICATION_ID=APP_ID, PRIVATE_KEY=rsa_key[1], BASE_URL=emu.url)
        settings.PUBLIC_BASE_URL = live_server.url

        def queue(to, body="Hello from Herald"):
            return create_outbound(to=to, body=body, source="api", provider=NAME)

        failed, expired, shuffled = (
            queue("+447911123450"),
            queue("+447911123451"),
            queue("+447911123452"),
        )
        silent, delivered = queue("+447911123453"), queue("+447911123457")
        multipart = queue("+447911123458", body="Привет, мир! " * 8)
        drain(emu)

    for message in (failed, expired, shuffled, silent, delivered, multipart):
        message.refresh_from_db()
        assert uuid.UUID(message.provider_message_id)
    assert (failed.status, failed.error_code) == (Status.FAILED, "1230")
    assert (expired.status, expired.error_code) == (Status.EXPIRED, "1360")
    assert silent.status == Status.SENT
    assert (delivered.status, delivered.price, delivered.currency) == (
        Status.DELIVERED,
        Decimal("0.0333"),
        "EUR",
    )
    # digit 2: delivered, a late submitted, then the same delivered again (a retry)
    assert shuffled.status == Status.DELIVERED
    assert webhook_events(shuffled) == [
        ("delivered", "delivered", True),
        ("sent", "submitted", False),
        ("delivered", "delivered", False),  # the retry: an ignored duplicate
    ]
    assert multipart.status == Status.DELIVERED
    final = multipart.events.get(source="webhook", status="delivered")
    assert final.raw_payload["sms"]["total_count"] == "2"
    assert len(final.raw_payload["sms"]["segments"]) == 2
    # every receipt arrived signed, was stored, authenticated and processed
    requests_ = WebhookRequest.objects.filter(provider=NAME)
    assert requests_.count() == 2 + 2 + 3 + 0 + 2 + 2
    assert set(requests_.values_list("authenticated", "state")) == {(True, "processed")}
    assert emu.stats.snapshot()["sends"][NAME]["+447911123457"] == 1


@pytest.mark.django_db(transaction=True)
def test_emulated_inbound_stop(settings, live_server):
    settings.PUBLIC_BASE_URL = live_server.url
    configure(settings)
    settings.PUBLIC_BASE_URL = live_server.url
    with _emulator() as emu:
        webhook = emu.providers[NAME].inbound(
            sender="+447911123456", to="447700900000", text="stop"
        )
        response = requests.post(
            webhook.url, data=webhook.body, headers=webhook.headers, timeout=10
        )
    assert response.status_code == 200
    assert webhook.url == f"{live_server.url}{INBOUND_PATH}"
    inbound = Message.objects.get(direction="inbound")
    assert OptOut.objects.get(phone_number="+447911123456").source_message == inbound


@pytest.mark.django_db
def test_emulator_authenticates_like_vonage(settings, rsa_key):
    with _emulator() as emu:
        provider = configure(
            settings, APPLICATION_ID=APP_ID, PRIVATE_KEY=rsa_key[1], BASE_URL=emu.url
        )
        assert provider.send(sms(), requests.Session()).provider_message_ids

        stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        forged = jwt.encode(
            {"application_id": APP_ID, "iat": int(time.time()), "jti": "x",
             "exp": int(time.time()) + 60},
            stranger, algorithm="RS256",
        )  # fmt: skip
        reply = requests.post(
            f"{emu.url}/v1/messages",
            json={"message_type": "text"},
            headers={"Authorization": f"Bearer {forged}"},
            timeout=10,
        )
        assert reply.status_code == 401
        assert reply.headers["Content-Type"] == "application/problem+json"

        wrong = base64.b64encode(b"abcd1234:wrong-secret").decode()
        reply = requests.post(
            f"{emu.url}/v1/messages",
            json={"message_type": "text"},
            headers={"Authorization": f"Basic {wrong}"},
            timeout=10,
        )
        assert reply.status_code == 401
        assert reply.json()["title"] == "You did not provide correct credentials."
        ok = configure(settings, BASE_URL=emu.url)
        assert ok.send(sms(), requests.Session()).provider_message_ids

        with pytest.raises(PermanentSendError) as caught:
            ok.send(sms(to="+12"), requests.Session())
        assert caught.value.code == "1150"


@pytest.mark.django_db
def test_emulator_faults_are_vonage_problems(settings):
    with _emulator(faults=Faults(rate_429=1.0)) as emu:
        provider = configure(settings, BASE_URL=emu.url)
        with pytest.raises(RetryableSendError) as caught:
            provider.send(sms(), requests.Session())
    assert caught.value.code == "1010"
