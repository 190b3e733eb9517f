"""Forged and replayed webhook signatures, for every provider (issue 5, item 6).

For each provider a genuine "delivered" receipt for a sent message is built and signed with the
provider's real scheme; the control test shows it is accepted and changes the message. Each
forgery below starts from that same receipt: a wrong secret, a tampered body under the original
signature, a replay with a stale timestamp (sandbox, Vonage SMS `timestamp`, Vonage Messages JWT
`iat`, Sinch), a signature for another URL (Twilio), wrong Basic credentials or token
(Infobip), a JWT with alg none or RS256 (Vonage Messages). Every one must be refused 401,
recorded as `unauthenticated`, and leave the message's status and events unchanged.
"""

import base64
import hashlib
import json
import time
from urllib.parse import parse_qsl, urlencode

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from django.test import Client

from messaging.models import Message, StatusEvent, WebhookRequest
from messaging.providers import sinch as sinch_module
from messaging.providers.base import SendResult
from messaging.providers.sandbox import sign as sandbox_sign
from messaging.providers.twilio import compute_signature
from messaging.providers.vonage_sms import signature as vonage_sms_signature
from messaging.services.messages import create_outbound
from messaging.status import Status
from tests.sending import record_sent
from tests.test_webhook_fuzz import (
    INFOBIP_PASSWORD,
    INFOBIP_TOKEN,
    INFOBIP_USER,
    PUBLIC,
    SANDBOX_SECRET,
    SINCH_SECRET,
    TWILIO_TOKEN,
    VONAGE_SECRET,
    VONAGE_SMS_DLR,
    configure_all,
    fixture_bytes,
)

pytestmark = pytest.mark.django_db

STALE = 3600  # seconds: far outside every provider's five-minute window
WRONG = "not-the-secret-0123456789-0123456789"
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


@pytest.fixture
def client(settings):
    configure_all(settings)
    return Client(raise_request_exception=False)


def sent_message(provider: str) -> tuple:
    """A message the provider accepted, and the id its receipts will carry."""
    message = create_outbound(to="+447911123457", body="Hello", source="api", provider=provider)
    Message.objects.filter(pk=message.pk).update(status=Status.SENDING)
    # Infobip's message id is ours (we choose it); the others assign their own.
    pid = str(message.pk) if provider == "infobip" else f"{provider}-pid-0001"
    record_sent(message, SendResult(provider_message_ids=[pid]))
    message.refresh_from_db()
    assert message.status == Status.SENT
    return message, pid


# --- genuine receipts, as {body, content_type, query, headers} ----------------------------------


def sandbox_receipt(pid, *, secret=SANDBOX_SECRET, stamp=None, body=None, signed_body=None):
    body = body or json.dumps({"message_id": pid, "status": "delivered", "error_code": "",
                               "timestamp": "2026-11-23T10:00:00+00:00"}).encode()  # fmt: skip
    stamp = str(stamp or int(time.time()))
    signature = sandbox_sign(secret, stamp, signed_body or body)
    headers = {"X-Sandbox-Timestamp": stamp, "X-Sandbox-Signature": signature}
    return dict(body=body, content_type=JSON, headers=headers)


def vonage_sms_params(pid, *, secret=VONAGE_SECRET, stamp=None, method="sha256"):
    params = {**VONAGE_SMS_DLR, "messageId": pid, "timestamp": str(stamp or int(time.time())),
              "nonce": "6c4bc2f7-0c1b-4bd8-b5c4-3a9e2d0b1f10"}  # fmt: skip
    return {**params, "sig": vonage_sms_signature(params, secret, method)}


def vonage_sms_receipt(pid, params=None, **kwargs):
    params = params or vonage_sms_params(pid, **kwargs)
    return dict(body=urlencode(params).encode(), content_type=FORM)


def vonage_messages_body(pid) -> bytes:
    data = json.loads(fixture_bytes("vonage-messages", "status_submitted.json"))
    data.update(message_uuid=pid, status="delivered")
    data.pop("error", None)
    return json.dumps(data).encode()


def vonage_claims(body: bytes, **claims) -> dict:
    return {"iat": int(time.time()), "jti": "a1b2", "iss": "Vonage",
            "payload_hash": hashlib.sha256(body).hexdigest(), "api_key": "abcd1234",
            **claims}  # fmt: skip


def vonage_messages_receipt(pid, *, token=None, body=None, secret=VONAGE_SECRET, **claims):
    body = body or vonage_messages_body(pid)
    token = token or jwt.encode(vonage_claims(body, **claims), secret, algorithm="HS256")
    return dict(body=body, content_type=JSON, headers={"Authorization": f"Bearer {token}"})


def sinch_body(pid) -> bytes:
    data = json.loads(fixture_bytes("sinch", "recipient_delivered_signed.raw"))
    data.update(batch_id=pid)
    return json.dumps(data).encode()


def sinch_receipt(pid, *, secret=SINCH_SECRET, stamp=None, body=None, signed_body=None,
                  algorithm="HmacSHA256"):  # fmt: skip
    body = body or sinch_body(pid)
    stamp, nonce = str(stamp or int(time.time())), "01JHFFHWYY7HSS4FWTMDTQEK8V"
    headers = {
        "X-Sinch-Webhook-Signature": sinch_module.sign(secret, signed_body or body, nonce, stamp),
        "X-Sinch-Webhook-Signature-Nonce": nonce,
        "X-Sinch-Webhook-Signature-Timestamp": stamp,
        "X-Sinch-Webhook-Signature-Algorithm": algorithm,
    }
    return dict(body=body, content_type=JSON, headers=headers)


def infobip_body(pid) -> bytes:
    data = json.loads(fixture_bytes("infobip", "dlr_v3.json"))
    data["results"][0].update(messageId=pid, callbackData=pid)
    return json.dumps(data).encode()


def basic(user, password) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def infobip_receipt(pid, *, token=None, authorization=None):
    headers = {"Authorization": authorization} if authorization else {}
    query = urlencode({"token": token}) if token else ""
    return dict(body=infobip_body(pid), content_type=JSON, query=query, headers=headers)


def twilio_body(pid, status="delivered") -> bytes:
    pairs = parse_qsl(fixture_bytes("twilio", "status_delivered.raw").decode().strip())
    values = {"MessageSid": pid, "SmsSid": pid, "MessageStatus": status, "SmsStatus": status}
    return urlencode([(k, values.get(k, v)) for k, v in pairs]).encode()


def twilio_receipt(pid, *, token=TWILIO_TOKEN, url=None, body=None, signed_body=None, query=""):
    body = body or twilio_body(pid)
    url = url or f"{PUBLIC}/webhooks/twilio/status/" + (f"?{query}" if query else "")
    params = parse_qsl((signed_body or body).decode(), keep_blank_values=True)
    headers = {"X-Twilio-Signature": compute_signature(url, params, token)}
    return dict(body=body, content_type=FORM, query=query, headers=headers)


GENUINE = {
    "sandbox": sandbox_receipt,
    "vonage-sms": vonage_sms_receipt,
    "vonage-messages": vonage_messages_receipt,
    "sinch": sinch_receipt,
    "infobip": lambda pid: infobip_receipt(pid, token=INFOBIP_TOKEN),
    "twilio": twilio_receipt,
}


def post(client, provider, request):
    query = request.get("query", "")
    path = f"/webhooks/{provider}/status/" + (f"?{query}" if query else "")
    meta = {"HTTP_" + k.upper().replace("-", "_"): v for k, v in request.get("headers", {}).items()}
    return client.generic("POST", path, request["body"], content_type=request["content_type"],
                          **meta)  # fmt: skip


@pytest.mark.parametrize("provider", sorted(GENUINE))
def test_genuine_receipt_is_accepted_control(client, provider):
    """The control: without it a forgery test could pass because nothing is ever accepted."""
    message, pid = sent_message(provider)
    response = post(client, provider, GENUINE[provider](pid))
    assert response.status_code == 200, response.content[:300]
    row = WebhookRequest.objects.get()
    assert (row.authenticated, row.state) == (True, WebhookRequest.State.PROCESSED)
    message.refresh_from_db()
    assert message.status == Status.DELIVERED


# --- forgeries ------------------------------------------------------------------------------------


def tampered_json(body: bytes, **changes) -> bytes:
    data = json.loads(body)
    target = data["results"][0] if "results" in data else data
    target.update(changes)
    return json.dumps(data).encode()


def alg_none_token(body: bytes) -> str:
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    claims = json.dumps(vonage_claims(body)).encode()
    return f"{header}.{base64.urlsafe_b64encode(claims).rstrip(b'=').decode()}."


def rs256_token(body: bytes) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(vonage_claims(body), key, algorithm="RS256")


def vonage_sms_tampered(pid):
    params = vonage_sms_params(pid)
    params["status"] = "failed"  # after signing
    return vonage_sms_receipt(pid, params=params)


def vonage_sms_stripped(pid):
    params = vonage_sms_params(pid)
    del params["sig"]
    return vonage_sms_receipt(pid, params=params)


def now() -> int:
    return int(time.time())


FORGERIES = {
    "sandbox": {
        "wrong-secret": lambda pid: sandbox_receipt(pid, secret=WRONG),
        "tampered-body": lambda pid: sandbox_receipt(
            pid, body=tampered_json(sandbox_receipt(pid)["body"], status="failed"),
            signed_body=sandbox_receipt(pid)["body"]),
        "stale-timestamp": lambda pid: sandbox_receipt(pid, stamp=now() - STALE),
        "future-timestamp": lambda pid: sandbox_receipt(pid, stamp=now() + STALE),
        "no-signature": lambda pid: {**sandbox_receipt(pid), "headers": {}},
    },
    "vonage-sms": {
        "wrong-secret": lambda pid: vonage_sms_receipt(pid, secret=WRONG),
        "tampered-body": vonage_sms_tampered,
        "stale-timestamp": lambda pid: vonage_sms_receipt(pid, stamp=now() - STALE),
        "other-method": lambda pid: vonage_sms_receipt(pid, method="md5hash"),
        "no-sig": vonage_sms_stripped,
    },
    "vonage-messages": {
        "wrong-secret": lambda pid: vonage_messages_receipt(pid, secret=WRONG),
        "tampered-body": lambda pid: vonage_messages_receipt(
            pid, body=tampered_json(vonage_messages_body(pid), status="rejected"),
            token=jwt.encode(vonage_claims(vonage_messages_body(pid)), VONAGE_SECRET,
                             algorithm="HS256")),
        "stale-iat": lambda pid: vonage_messages_receipt(pid, iat=now() - STALE),
        "future-iat": lambda pid: vonage_messages_receipt(pid, iat=now() + STALE),
        "alg-none": lambda pid: vonage_messages_receipt(
            pid, token=alg_none_token(vonage_messages_body(pid))),
        "rs256": lambda pid: vonage_messages_receipt(
            pid, token=rs256_token(vonage_messages_body(pid))),
        "no-payload-hash": lambda pid: vonage_messages_receipt(pid, payload_hash=None),
        "not-vonage-issuer": lambda pid: vonage_messages_receipt(pid, iss="Mallory"),
    },
    "sinch": {
        "wrong-secret": lambda pid: sinch_receipt(pid, secret=WRONG),
        "tampered-body": lambda pid: sinch_receipt(
            pid, body=tampered_json(sinch_body(pid), status="Failed"),
            signed_body=sinch_body(pid)),
        "stale-timestamp": lambda pid: sinch_receipt(pid, stamp=now() - STALE),
        "future-timestamp": lambda pid: sinch_receipt(pid, stamp=now() + STALE),
        "other-algorithm": lambda pid: sinch_receipt(pid, algorithm="HmacSHA1"),
    },
    "infobip": {
        "wrong-token": lambda pid: infobip_receipt(pid, token="not-the-token"),
        "wrong-password": lambda pid: infobip_receipt(
            pid, authorization=basic(INFOBIP_USER, "wrong")),
        "wrong-user": lambda pid: infobip_receipt(
            pid, authorization=basic("mallory", INFOBIP_PASSWORD)),
        "good-token-wrong-basic": lambda pid: infobip_receipt(
            pid, token=INFOBIP_TOKEN, authorization=basic(INFOBIP_USER, "wrong")),
        "unreadable-basic": lambda pid: infobip_receipt(pid, authorization="Basic !!!notb64"),
        "no-credentials": lambda pid: infobip_receipt(pid),
    },
    "twilio": {
        "wrong-token": lambda pid: twilio_receipt(pid, token=WRONG),
        "tampered-body": lambda pid: twilio_receipt(
            pid, body=twilio_body(pid, status="failed"), signed_body=twilio_body(pid)),
        "other-host": lambda pid: twilio_receipt(
            pid, url="https://attacker.example/webhooks/twilio/status/"),
        "other-path": lambda pid: twilio_receipt(
            pid, url=f"{PUBLIC}/webhooks/twilio/inbound/"),
        "other-query": lambda pid: {**twilio_receipt(pid, query="ref=a"), "query": "ref=b"},
    },
}  # fmt: skip

CASES = [(provider, case) for provider, cases in FORGERIES.items() for case in cases]


def test_every_provider_has_forgeries():
    assert set(FORGERIES) == set(GENUINE)


@pytest.mark.parametrize(("provider", "case"), CASES, ids=[f"{p}-{c}" for p, c in CASES])
def test_forgery_is_refused_401_and_changes_nothing(client, provider, case):
    message, pid = sent_message(provider)
    events_before = list(StatusEvent.objects.filter(message=message).values_list("id", flat=True))
    response = post(client, provider, FORGERIES[provider][case](pid))
    assert response.status_code == 401, response.content[:300]
    row = WebhookRequest.objects.get()
    assert (row.provider, row.authenticated, row.state, row.response_status) == (
        provider, False, WebhookRequest.State.UNAUTHENTICATED, 401)  # fmt: skip
    assert row.auth_error
    message.refresh_from_db()
    assert message.status == Status.SENT
    assert list(StatusEvent.objects.filter(message=message).values_list("id", flat=True)) == (
        events_before
    )


@pytest.mark.parametrize("provider", ["sandbox", "vonage-messages", "sinch", "twilio"])
def test_replay_of_a_genuine_request_changes_nothing_more(client, provider):
    """A captured request replayed within the window authenticates (the schemes have no nonce
    store) but is recognised as a duplicate: shown on the timeline as an ignored duplicate,
    nothing applied, the status stays."""
    message, pid = sent_message(provider)
    request = GENUINE[provider](pid)
    assert post(client, provider, request).status_code == 200
    events = list(StatusEvent.objects.filter(message=message).values_list("id", flat=True))
    assert post(client, provider, request).status_code == 200
    message.refresh_from_db()
    assert message.status == Status.DELIVERED
    new = StatusEvent.objects.filter(message=message).exclude(id__in=events)
    assert [(e.applied, e.dedupe_key, "duplicate" in e.note) for e in new] == [(False, None, True)]
