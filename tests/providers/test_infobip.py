"""Infobip SMS API provider: send request and response, HTTP errors, webhook authentication
(HTTP Basic and the URL token), delivery-report and inbound parsing, the status table, batches,
ordering and duplicates through the real webhook view, /sms/3/logs reconciliation, and a full
round trip through the emulator over real HTTP."""

import base64
import copy
import json
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import requests
import responses
from responses import matchers

from messaging.models import Message, OptOut, StatusEvent, UnmatchedReport, WebhookRequest
from messaging.providers import get_provider
from messaging.providers.base import (
    AmbiguousSendError,
    OutboundSms,
    PermanentSendError,
    RetryableSendError,
    SendResult,
    WebhookInput,
    WebhookParseError,
)
from messaging.services.messages import create_outbound
from messaging.services.receipts import apply_one
from messaging.status import Status
from tests.sending import record_sent

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "infobip"
BASE_URL = "https://xyz12.api.infobip.com"
OPTIONS = {
    "API_KEY": "test-api-key",
    "BASE_URL": BASE_URL,
    "FROM": "Herald",
    "WEBHOOK_USERNAME": "infobip",
    "WEBHOOK_PASSWORD": "old-password, new-password",
    "WEBHOOK_TOKEN": "token-one,token-two",
    "WEBHOOK_SIGNING": "true",
}
STATUS_URL = "/webhooks/infobip/status/"
INBOUND_URL = "/webhooks/infobip/inbound/"


def fixture(name):
    return json.loads((FIXTURES / name).read_text())


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


GOOD_BASIC = basic("infobip", "new-password")


def configure(settings, **options):
    settings.SMS_PROVIDERS = {
        **settings.SMS_PROVIDERS,
        "infobip": {
            "BACKEND": "messaging.providers.infobip.InfobipProvider",
            "OPTIONS": {**OPTIONS, **options},
            "ENV": {},
        },
    }
    if "infobip" not in settings.SMS_PROVIDERS_ENABLED:
        settings.SMS_PROVIDERS_ENABLED = [*settings.SMS_PROVIDERS_ENABLED, "infobip"]
    return get_provider("infobip")


@pytest.fixture
def infobip(settings):
    return configure(settings)


def outbound(**overrides):
    values = {
        "message_id": "0b7e3f4c-6a55-4b8e-9f49-3d1c2b1a0e11",
        "to": "+41793026727",
        "sender": "InfoSMS",
        "body": "This is a sample message",
        "encoding": "GSM-7",
        "segments": 1,
        "callback_url": "https://herald.example.com/webhooks/infobip/status/",
    }
    return OutboundSms(**{**values, **overrides})


def status_obj(group, group_name, sid, name):
    return {"groupId": group, "groupName": group_name, "id": sid, "name": name,
            "description": f"{name} description"}  # fmt: skip


DELIVERED_TO_OPERATOR = status_obj(3, "DELIVERED", 2, "DELIVERED_TO_OPERATOR")
DELIVERED_TO_HANDSET = status_obj(3, "DELIVERED", 5, "DELIVERED_TO_HANDSET")
UNDELIVERABLE = status_obj(2, "UNDELIVERABLE", 9, "UNDELIVERABLE_NOT_DELIVERED")
NO_ERROR = {"groupId": 0, "groupName": "OK", "id": 0, "name": "NO_ERROR",
            "description": "No Error", "permanent": False}  # fmt: skip


def dlr(message_id, status, *, error=None, done="2026-03-01T10:00:05.000+0000", callback=True):
    """One v3 report built on the IJAVA fixture, for our own message id."""
    item = copy.deepcopy(fixture("dlr_v3.json")["results"][0])
    item.update(messageId=message_id, status=status, error=error or NO_ERROR, doneAt=done)
    if callback:
        item["callbackData"] = message_id
    return item


def winput(payload, query=()):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return WebhookInput(method="POST", url="https://herald.example.com/x", headers={},
                        body=body, query=list(query))  # fmt: skip


def post(client, payload, *, url=STATUS_URL, query="?token=token-one", **headers):
    body = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
    return client.post(url + query, data=body, content_type="application/json", **headers)


def sent_message(to="+447911123457"):
    """An outbound message as the sender leaves it after Infobip accepted it."""
    message = create_outbound(to=to, body="Hello", source="api", provider="infobip")
    Message.objects.filter(pk=message.pk).update(status=Status.SENDING)
    record_sent(message, SendResult([str(message.pk)], provider_status="PENDING_ACCEPTED"))
    message.refresh_from_db()
    return message


# --- send -------------------------------------------------------------------------------------


@responses.activate
def test_send_request_shape_is_exact(infobip):
    responses.post(f"{BASE_URL}/sms/3/messages", json=fixture("send_response_pending.json"))
    sms = outbound()
    result = infobip.send(sms, requests.Session())

    assert len(responses.calls) == 1
    request = responses.calls[0].request
    assert request.method == "POST"
    assert request.url == "https://xyz12.api.infobip.com/sms/3/messages"
    assert request.headers["Authorization"] == "App test-api-key"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Accept"] == "application/json"
    assert json.loads(request.body) == {
        "messages": [
            {
                "sender": "InfoSMS",
                "destinations": [
                    {"to": "41793026727", "messageId": "0b7e3f4c-6a55-4b8e-9f49-3d1c2b1a0e11"}
                ],
                "content": {"text": "This is a sample message"},
                "webhooks": {
                    "delivery": {
                        "url": "https://herald.example.com/webhooks/infobip/status/"
                        "?token=token-one",
                        "intermediateReport": True,
                        "notify": True,
                    },
                    "contentType": "application/json",
                    "callbackData": "0b7e3f4c-6a55-4b8e-9f49-3d1c2b1a0e11",
                },
            }
        ],
        "options": {"includeSmsCountInResponse": True},
    }
    assert result.provider_message_ids == ["2250be2d4219-3af1-78856-aabe-1362af1edfd2"]
    assert result.provider_status == "MESSAGE_ACCEPTED"
    assert result.segments is None  # this fixture has no details


@responses.activate
def test_send_without_token_keeps_callback_url_and_reads_message_count(settings):
    provider = configure(settings, WEBHOOK_TOKEN="", BASE_URL="xyz12.api.infobip.com/")
    responses.post(f"{BASE_URL}/sms/3/messages", json=fixture("send_response_v3_details.json"))
    result = provider.send(outbound(sender=""), requests.Session())

    sent = json.loads(responses.calls[0].request.body)["messages"][0]
    assert sent["webhooks"]["delivery"]["url"] == (
        "https://herald.example.com/webhooks/infobip/status/"
    )
    assert "sender" not in sent  # Infobip's account default applies
    assert result.segments == 2
    assert result.provider_status == "PENDING_ACCEPTED"


@responses.activate
def test_rejected_group_in_a_200_is_permanent(infobip):
    responses.post(f"{BASE_URL}/sms/3/messages", json=fixture("send_response_rejected.json"))
    with pytest.raises(PermanentSendError) as caught:
        infobip.send(outbound(), requests.Session())
    assert caught.value.code == "REJECTED_DESTINATION"
    assert "52" in str(caught.value)
    assert not caught.value.retryable and not caught.value.ambiguous


@responses.activate
def test_retry_after_5xx_reuses_message_id_and_duplicate_means_already_sent(infobip):
    url = f"{BASE_URL}/sms/3/messages"
    responses.post(url, json=fixture("error_500.json"), status=500)
    responses.post(url, json=fixture("send_response_duplicate.json"))
    session = requests.Session()
    with pytest.raises(RetryableSendError):
        infobip.send(outbound(attempt=1), session)
    result = infobip.send(outbound(attempt=2), session)

    ids = [
        json.loads(c.request.body)["messages"][0]["destinations"][0]["messageId"]
        for c in responses.calls
    ]
    assert ids == ["0b7e3f4c-6a55-4b8e-9f49-3d1c2b1a0e11"] * 2
    assert result.provider_message_ids == ["2250be2d4219-3af1-78856-aabe-1362af1edfd2"]
    assert "REJECTED_DUPLICATE_MESSAGE_ID" in result.provider_status


@responses.activate
def test_duplicate_on_a_first_attempt_is_a_real_rejection(infobip):
    responses.post(f"{BASE_URL}/sms/3/messages", json=fixture("send_response_duplicate.json"))
    with pytest.raises(PermanentSendError) as caught:
        infobip.send(outbound(attempt=1), requests.Session())
    assert caught.value.code == "REJECTED_DUPLICATE_MESSAGE_ID"


@pytest.mark.parametrize(
    "status, name, error, code, text",
    [
        (429, "error_429_legacy.json", RetryableSendError, "TOO_MANY_REQUESTS", "Too many"),
        (500, "error_500.json", RetryableSendError, "E500", "Something went wrong"),
        (503, None, RetryableSendError, "503", ""),
        (400, "error_400.json", PermanentSendError, "E400", "content.text: must not be blank"),
        (400, "error_400_legacy_validation.json", PermanentSendError, "BAD_REQUEST",
         "destinations: must not be empty"),
        (401, "error_401_legacy.json", PermanentSendError, "UNAUTHORIZED", "Invalid login"),
        (403, None, PermanentSendError, "403", ""),
    ],
)  # fmt: skip
@responses.activate
def test_http_errors_in_both_body_shapes(infobip, status, name, error, code, text):
    body = fixture(name) if name else None
    responses.post(
        f"{BASE_URL}/sms/3/messages",
        json=body,
        body=None if body else "upstream unavailable",
        status=status,
        headers={"Retry-After": "7"},
    )
    with pytest.raises(error) as caught:
        infobip.send(outbound(), requests.Session())
    assert type(caught.value) is error
    assert caught.value.code == code
    assert text in str(caught.value)
    assert caught.value.retry_after == 7.0


@responses.activate
def test_unreadable_2xx_is_ambiguous_never_resent(infobip):
    responses.post(f"{BASE_URL}/sms/3/messages", body="<html>ok</html>", status=200)
    with pytest.raises(AmbiguousSendError):
        infobip.send(outbound(), requests.Session())


@responses.activate
def test_refused_connection_is_retryable(infobip):
    responses.post(
        f"{BASE_URL}/sms/3/messages", body=requests.ConnectionError("Connection refused")
    )
    with pytest.raises(RetryableSendError):
        infobip.send(outbound(), requests.Session())


# --- status table -----------------------------------------------------------------------------

STATUS_TABLE = [
    # (groupId, groupName, id, name, canonical)
    (1, "PENDING", 3, "PENDING_WAITING_DELIVERY", "sent"),
    (1, "PENDING", 7, "PENDING_ENROUTE", "sent"),
    (1, "PENDING", 26, "PENDING_ACCEPTED", "sent"),
    (1, "PENDING", 26, "MESSAGE_ACCEPTED", "sent"),  # the SDK fixture's name for id 26
    (0, "ACCEPTED", 0, "ACCEPTED", "sent"),
    (2, "UNDELIVERABLE", 4, "UNDELIVERABLE_REJECTED_OPERATOR", "failed"),
    (2, "UNDELIVERABLE", 9, "UNDELIVERABLE_NOT_DELIVERED", "failed"),
    (2, "UNDELIVERABLE", 31, "UNDELIVERABLE_NOT_SENT", "failed"),
    (3, "DELIVERED", 2, "DELIVERED_TO_OPERATOR", "sent"),  # intermediate, not final
    (3, "DELIVERED", 5, "DELIVERED_TO_HANDSET", "delivered"),
    (4, "EXPIRED", 15, "EXPIRED_EXPIRED", "expired"),
    (4, "EXPIRED", 29, "EXPIRED_DLR_UNKNOWN", "unknown"),
    (4, "EXPIRED", 87, "SIGNALS_BLOCKED", "expired"),
] + [
    (5, "REJECTED", sid, name, "rejected")
    for sid, name in [
        (6, "REJECTED_NETWORK"), (8, "REJECTED_PREFIX_MISSING"), (10, "REJECTED_DND"),
        (11, "REJECTED_SOURCE"), (12, "REJECTED_NOT_ENOUGH_CREDITS"), (13, "REJECTED_SENDER"),
        (14, "REJECTED_DESTINATION_BLOCKLISTED"), (17, "REJECTED_PREPAID_PACKAGE_EXPIRED"),
        (18, "REJECTED_DESTINATION_NOT_REGISTERED"), (19, "REJECTED_ROUTE_NOT_AVAILABLE"),
        (20, "REJECTED_FLOODING_FILTER"), (21, "REJECTED_SYSTEM_ERROR"),
        (23, "REJECTED_DUPLICATE_MESSAGE_ID"), (24, "REJECTED_INVALID_UDH"),
        (25, "REJECTED_MESSAGE_TOO_LONG"), (51, "MISSING_TO"), (52, "REJECTED_DESTINATION"),
        (87, "SIGNALS_BLOCKED"), (100, "UNDELIVERABLE_REJECTED_PLATFORM"),
    ]
]  # fmt: skip


@pytest.mark.parametrize("group, group_name, sid, name, expected", STATUS_TABLE)
def test_every_status_in_the_table_is_mapped(infobip, group, group_name, sid, name, expected):
    payload = {"results": [dlr("m-1", status_obj(group, group_name, sid, name))]}
    [report] = infobip.parse_status_webhook(winput(payload))
    assert report.status == Status(expected)
    assert report.provider_status == name


@pytest.mark.parametrize(
    "status, expected",
    [
        # ids decide, not names: a renamed id 5 is still delivered, a mislabelled group is not
        ({"groupId": 3, "groupName": "DELIVERED", "id": 5, "name": "RENAMED"}, "delivered"),
        ({"groupId": 2, "groupName": "DELIVERED", "id": 9, "name": "X"}, "failed"),
        ({"groupId": "3", "id": "2"}, "sent"),  # ids as strings, no names
        ({"groupId": 9, "groupName": "NEW_GROUP", "id": 999, "name": "NEW"}, "unknown"),
        ({"groupName": "Delivered"}, "delivered"),  # no ids at all: the group name
        ({"groupName": "SOMETHING_ELSE"}, "unknown"),
    ],
)
def test_status_is_compared_on_ids(infobip, status, expected):
    [report] = infobip.parse_status_webhook(winput({"results": [dlr("m-1", status)]}))
    assert report.status == Status(expected)
    assert report.provider_status == status.get("name", status.get("groupName", "id 2, groupId 3"))


# --- report and inbound parsing ---------------------------------------------------------------


def test_parse_v3_report_fixture(infobip):
    [report] = infobip.parse_status_webhook(winput((FIXTURES / "dlr_v3.json").read_bytes()))
    assert report.status == Status.DELIVERED
    assert report.provider_status == "DELIVERED_TO_HANDSET"
    assert report.provider_message_id == "MESSAGE-ID-123-xyz"
    assert report.client_reference == "MESSAGE-ID-123-xyz"  # no callbackData: our messageId
    assert (report.error_code, report.error_text) == ("", "")
    assert report.provider_timestamp == datetime(2019, 11, 9, 16, 0, tzinfo=UTC)
    assert (report.price, report.currency) == (Decimal("0.01"), "EUR")
    assert report.segments == 1
    assert report.raw["bulkId"] == "BULK-ID-123-xyz"


def test_parse_v3_report_with_colon_offset(infobip):
    data = (FIXTURES / "dlr_v3_platform.json").read_bytes()
    [report] = infobip.parse_status_webhook(winput(data))
    assert report.provider_timestamp.isoformat() == "2023-08-01T16:10:00+05:30"
    assert report.status == Status.DELIVERED


def test_parse_v2_report_fixture(infobip):
    [report] = infobip.parse_status_webhook(winput((FIXTURES / "dlr_v2.json").read_bytes()))
    assert report.client_reference == "my-callback-data"
    assert report.provider_message_id == "MESSAGE-ID-123-xyz"
    assert report.segments == 1  # smsCount
    assert report.provider_timestamp == datetime(2019, 11, 9, 16, 1, tzinfo=UTC)  # doneAt
    assert report.error_code == ""  # groupName "Ok", id 0


def test_error_object_becomes_code_and_text(infobip):
    error = {"groupId": 1, "groupName": "HANDSET_ERRORS", "id": 27,
             "name": "EC_ABSENT_SUBSCRIBER", "description": "Absent subscriber",
             "permanent": False}  # fmt: skip
    permanent = {**error, "id": 1, "name": "EC_UNKNOWN_SUBSCRIBER",
                 "description": "Unknown subscriber", "permanent": True}  # fmt: skip
    payload = {"results": [dlr("a", UNDELIVERABLE, error=error),
                           dlr("b", UNDELIVERABLE, error=permanent)]}  # fmt: skip
    first, second = infobip.parse_status_webhook(winput(payload))
    assert (first.error_code, first.error_text) == ("27", "EC_ABSENT_SUBSCRIBER: Absent subscriber")
    assert second.error_code == "1"
    assert second.error_text == "EC_UNKNOWN_SUBSCRIBER: Unknown subscriber (permanent)"


def test_sent_at_is_used_without_done_at_and_bad_time_is_dropped(infobip):
    item = dlr("a", DELIVERED_TO_OPERATOR)
    del item["doneAt"]
    other = dlr("b", DELIVERED_TO_OPERATOR, done="yesterday")
    del other["sentAt"]
    first, second = infobip.parse_status_webhook(winput({"results": [item, other]}))
    assert first.provider_timestamp == datetime(2019, 11, 9, 16, 0, tzinfo=UTC)
    assert second.provider_timestamp is None


def test_parse_inbound_fixture(infobip):
    [sms] = infobip.parse_inbound_webhook(winput((FIXTURES / "inbound.json").read_bytes()))
    assert sms.provider_message_id == "817790313235066447"
    assert (sms.from_number, sms.to_number) == ("385916242493", "385921004026")
    assert sms.text == "QUIZ Correct answer is Paris"
    assert sms.parts == 1
    assert sms.received_at == datetime(2016, 10, 6, 9, 28, 39, 220000, tzinfo=UTC)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b"{}",
        b'{"results": {}}',
        b'{"results": ["x"]}',
        json.dumps({"results": [{"status": DELIVERED_TO_HANDSET}]}).encode(),  # no id at all
        json.dumps({"results": [{"messageId": "m-1"}]}).encode(),  # no status
        json.dumps({"results": [{"messageId": "m-1", "status": {"name": "X"}}]}).encode(),
        b"\xff\xfe",
    ],
)
def test_malformed_reports_raise_parse_error(infobip, body):
    with pytest.raises(WebhookParseError):
        infobip.parse_status_webhook(winput(body))


# --- webhook authentication (through the real view) -------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "query, headers",
    [
        ("?token=token-one", {}),
        ("?token=token-two", {}),  # rotation: either token
        ("", {"HTTP_AUTHORIZATION": basic("infobip", "old-password")}),
        ("", {"HTTP_AUTHORIZATION": basic("infobip", "new-password")}),
        ("?token=token-two", {"HTTP_AUTHORIZATION": GOOD_BASIC}),
    ],
)
def test_webhook_accepts_basic_or_token(client, infobip, query, headers):
    response = post(client, fixture("dlr_v3.json"), query=query, **headers)
    assert response.status_code == 200, response.content
    stored = WebhookRequest.objects.get()
    assert stored.authenticated and stored.state == "processed"
    assert stored.headers.get("authorization", "Basic [redacted]") == "Basic [redacted]"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "query, headers, reason",
    [
        ("", {}, "missing credentials"),
        ("?token=wrong", {}, "wrong webhook token"),
        ("?token=", {}, "wrong webhook token"),
        ("", {"HTTP_AUTHORIZATION": basic("infobip", "wrong")}, "wrong HTTP Basic"),
        ("", {"HTTP_AUTHORIZATION": basic("someone", "new-password")}, "wrong HTTP Basic"),
        ("", {"HTTP_AUTHORIZATION": "Basic !!!not-base64"}, "wrong HTTP Basic"),
        ("", {"HTTP_AUTHORIZATION": "Bearer token-one"}, "missing credentials"),
        # a good credential does not excuse a wrong one presented beside it
        ("?token=wrong", {"HTTP_AUTHORIZATION": GOOD_BASIC}, "wrong webhook token"),
        ("?token=token-one", {"HTTP_AUTHORIZATION": basic("x", "y")}, "wrong HTTP Basic"),
    ],
)
def test_webhook_refuses_wrong_or_missing_credentials(client, infobip, query, headers, reason):
    response = post(client, fixture("dlr_v3.json"), query=query, **headers)
    assert response.status_code == 401
    stored = WebhookRequest.objects.get()
    assert (stored.authenticated, stored.state) == (False, "unauthenticated")
    assert reason in stored.auth_error
    assert not StatusEvent.objects.filter(source="webhook").exists()


@pytest.mark.django_db
def test_webhook_refused_when_no_credentials_are_configured(client, settings):
    configure(settings, WEBHOOK_USERNAME="", WEBHOOK_PASSWORD="", WEBHOOK_TOKEN="")
    response = post(client, fixture("dlr_v3.json"), HTTP_AUTHORIZATION=GOOD_BASIC)
    assert response.status_code == 401
    assert "no Infobip webhook credentials configured" in WebhookRequest.objects.get().auth_error


@pytest.mark.django_db
def test_basic_only_configuration_ignores_a_token(client, settings):
    configure(settings, WEBHOOK_TOKEN="")
    assert post(client, fixture("dlr_v3.json"), query="?token=anything").status_code == 401
    assert post(client, fixture("dlr_v3.json"), HTTP_AUTHORIZATION=GOOD_BASIC).status_code == 200


@pytest.mark.django_db
def test_signing_switched_off_skips_authentication(client, settings):
    configure(settings, WEBHOOK_SIGNING="false", WEBHOOK_TOKEN="", WEBHOOK_PASSWORD="")
    response = post(client, fixture("dlr_v3.json"), query="")
    assert response.status_code == 200
    assert WebhookRequest.objects.get().state == "processed"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "[]",
        '{"result": []}',
        '{"results": [42]}',
        json.dumps({"results": [{"messageId": "m-1"}]}),
        json.dumps({"results": [{"messageId": "m-1", "status": "DELIVERED"}]}),
    ],
)
def test_malformed_status_payload_is_400_and_recorded_invalid(client, infobip, body):
    response = post(client, body)
    assert response.status_code == 400
    stored = WebhookRequest.objects.get()
    assert (stored.state, stored.response_status, stored.authenticated) == ("invalid", 400, True)
    assert bytes(stored.body) == body.encode()
    assert stored.error


@pytest.mark.django_db
def test_malformed_inbound_payload_is_400(client, infobip):
    payload = {"results": [{"messageId": "1", "from": "385916242493", "text": "hi"}]}  # no to
    response = post(client, payload, url=INBOUND_URL, query="", HTTP_AUTHORIZATION=GOOD_BASIC)
    assert response.status_code == 400
    assert WebhookRequest.objects.get().state == "invalid"


# --- reports applied to messages --------------------------------------------------------------


@pytest.mark.django_db
def test_batch_of_100_reports_in_one_request(client, infobip):
    messages = [sent_message(f"+4479111234{n:02d}") for n in range(100)]
    payload = {"results": [dlr(str(m.pk), DELIVERED_TO_HANDSET) for m in messages]}
    response = post(client, payload)
    assert response.status_code == 200
    stored = WebhookRequest.objects.get()
    assert (stored.state, stored.report_count) == ("processed", 100)
    assert Message.objects.filter(provider="infobip", status="delivered").count() == 100
    events = StatusEvent.objects.filter(webhook_request=stored)
    assert events.count() == 100
    assert set(events.values_list("message_id", flat=True)) == {m.pk for m in messages}


@pytest.mark.django_db
def test_delivered_to_operator_then_handset(client, infobip):
    message = sent_message()
    mid = str(message.pk)
    early, late = "2026-03-01T10:00:01.000+0000", "2026-03-01T10:00:05.000+0000"
    post(client, {"results": [dlr(mid, DELIVERED_TO_OPERATOR, done=early)]})
    message.refresh_from_db()
    assert message.status == "sent" and message.completed_at is None  # not final
    post(client, {"results": [dlr(mid, DELIVERED_TO_HANDSET, done=late)]})
    message.refresh_from_db()
    assert message.status == "delivered"
    assert message.completed_at == datetime(2026, 3, 1, 10, 0, 5, tzinfo=UTC)
    assert (message.price, message.currency) == (Decimal("0.01"), "EUR")
    webhook = message.events.filter(source="webhook").order_by("id")
    assert list(webhook.values_list("provider_status", "status", "applied")) == [
        ("DELIVERED_TO_OPERATOR", "sent", False),
        ("DELIVERED_TO_HANDSET", "delivered", True),
    ]


@pytest.mark.django_db
def test_out_of_order_and_duplicate_reports(client, infobip):
    message = sent_message()
    mid = str(message.pk)
    handset = dlr(mid, DELIVERED_TO_HANDSET, done="2026-03-01T10:00:05.000+0000")
    operator = dlr(mid, DELIVERED_TO_OPERATOR, done="2026-03-01T10:00:01.000+0000")
    for payload in ({"results": [handset]}, {"results": [operator]}, {"results": [handset]}):
        assert post(client, payload).status_code == 200
    message.refresh_from_db()
    assert message.status == "delivered"
    assert WebhookRequest.objects.filter(state="processed").count() == 3
    webhook = message.events.filter(source="webhook").order_by("id")
    assert list(webhook.values_list("status", "applied")) == [
        ("delivered", True),
        ("sent", False),  # late intermediate report: recorded, not applied
        ("delivered", False),  # the same report again: on the timeline as an ignored duplicate
    ]
    assert "final" in webhook[1].note and "duplicate" in webhook[2].note


@pytest.mark.django_db
def test_duplicate_within_one_batch_counts_once(client, infobip):
    message = sent_message()
    item = dlr(str(message.pk), DELIVERED_TO_HANDSET)
    assert post(client, {"results": [item, item]}).status_code == 200
    events = message.events.filter(source="webhook").order_by("id")
    assert [(e.applied, e.dedupe_key is None) for e in events] == [(True, False), (False, True)]


@pytest.mark.django_db
def test_undeliverable_records_the_error(client, infobip):
    message = sent_message()
    error = {"groupId": 1, "groupName": "HANDSET_ERRORS", "id": 27,
             "name": "EC_ABSENT_SUBSCRIBER", "description": "Absent subscriber",
             "permanent": False}  # fmt: skip
    post(client, {"results": [dlr(str(message.pk), UNDELIVERABLE, error=error)]})
    message.refresh_from_db()
    assert (message.status, message.error_code) == ("failed", "27")
    assert message.error_text == "EC_ABSENT_SUBSCRIBER: Absent subscriber"


@pytest.mark.django_db
def test_expired_dlr_unknown_becomes_unknown(client, infobip):
    message = sent_message()
    expired_unknown = status_obj(4, "EXPIRED", 29, "EXPIRED_DLR_UNKNOWN")
    post(client, {"results": [dlr(str(message.pk), expired_unknown)]})
    message.refresh_from_db()
    assert message.status == "unknown"


@pytest.mark.django_db
def test_report_before_send_response_is_matched_by_our_id(client, infobip):
    message = create_outbound(to="+447911123457", body="Hi", source="api", provider="infobip")
    Message.objects.filter(pk=message.pk).update(status=Status.SENDING)
    post(client, {"results": [dlr(str(message.pk), DELIVERED_TO_HANDSET)]})
    assert UnmatchedReport.objects.filter(client_reference=str(message.pk)).exists()
    record_sent(message, SendResult([str(message.pk)]))
    message.refresh_from_db()
    assert message.status == "delivered"


@pytest.mark.django_db
def test_report_without_callback_data_matches_by_message_id(client, infobip):
    message = sent_message()
    post(client, {"results": [dlr(str(message.pk), DELIVERED_TO_HANDSET, callback=False)]})
    message.refresh_from_db()
    assert message.status == "delivered"


# --- inbound ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_inbound_fixture_is_stored(client, infobip):
    response = post(
        client, fixture("inbound.json"), url=INBOUND_URL, query="", HTTP_AUTHORIZATION=GOOD_BASIC
    )
    assert response.status_code == 200
    inbound = Message.objects.get(direction="inbound")
    assert inbound.provider_message_id == "817790313235066447"
    assert (inbound.from_number, inbound.to_number) == ("+385916242493", "+385921004026")
    assert inbound.body == "QUIZ Correct answer is Paris"
    assert inbound.status == "received"


@pytest.mark.django_db
def test_inbound_stop_opts_the_sender_out(client, infobip):
    payload = fixture("inbound.json")
    payload["results"][0].update(text=" Stop ", cleanText="", keyword="")
    post(client, payload, url=INBOUND_URL, query="", HTTP_AUTHORIZATION=GOOD_BASIC)
    assert OptOut.objects.filter(phone_number="+385916242493").exists()
    # delivered twice (Infobip retries): still one inbound message
    post(client, payload, url=INBOUND_URL, query="", HTTP_AUTHORIZATION=GOOD_BASIC)
    assert Message.objects.filter(direction="inbound").count() == 1


# --- reconciliation ---------------------------------------------------------------------------


@pytest.mark.django_db
@responses.activate
def test_fetch_reports_reads_sms_3_logs(infobip):
    message = sent_message()
    logs = fixture("logs_v3.json")
    logs["results"][0]["messageId"] = str(message.pk)
    responses.get(
        f"{BASE_URL}/sms/3/logs",
        json=logs,
        match=[
            matchers.query_param_matcher({"messageId": str(message.pk)}),
            matchers.header_matcher({"Authorization": "App test-api-key"}),
        ],
    )
    [report] = infobip.fetch_reports(message, requests.Session())
    assert report.status == Status.DELIVERED
    assert report.provider_message_id == report.client_reference == str(message.pk)
    assert report.segments == 1
    assert apply_one("infobip", report, source="reconcile").result == "applied"
    message.refresh_from_db()
    assert message.status == "delivered"
    assert message.events.get(source="reconcile").provider_status == "DELIVERED_TO_HANDSET"


@pytest.mark.django_db
@responses.activate
def test_fetch_reports_empty_and_failing(infobip):
    message = sent_message()
    responses.get(f"{BASE_URL}/sms/3/logs", json={"results": []})
    assert infobip.fetch_reports(message, requests.Session()) == []
    responses.get(f"{BASE_URL}/sms/3/logs", json=fixture("error_500.json"), status=500)
    with pytest.raises(requests.HTTPError):
        infobip.fetch_reports(message, requests.Session())


@pytest.mark.django_db
@responses.activate
def test_fetch_reports_for_an_ambiguous_send_asks_by_our_id(infobip):
    message = create_outbound(to="+447911123457", body="Hi", source="api", provider="infobip")
    Message.objects.filter(pk=message.pk).update(status=Status.UNKNOWN)
    message.refresh_from_db()
    assert message.provider_message_id is None  # the send response was never stored
    responses.get(
        f"{BASE_URL}/sms/3/logs",
        json={"results": []},
        match=[matchers.query_param_matcher({"messageId": str(message.pk)})],
    )
    assert infobip.fetch_reports(message, requests.Session()) == []
    assert len(responses.calls) == 1


@pytest.mark.django_db
@responses.activate
def test_reconcile_settles_a_stuck_message_from_the_logs(infobip):
    from datetime import timedelta

    from django.utils import timezone

    from messaging.services.reconcile import reconcile

    stuck = sent_message()
    Message.objects.filter(pk=stuck.pk).update(sent_at=timezone.now() - timedelta(days=3))
    logs = fixture("logs_v3.json")
    logs["results"][0]["messageId"] = str(stuck.pk)
    responses.get(
        f"{BASE_URL}/sms/3/logs",
        json=logs,
        match=[matchers.query_param_matcher({"messageId": str(stuck.pk)})],
    )
    counts = reconcile(requests.Session())
    stuck.refresh_from_db()
    assert stuck.status == "delivered"
    assert counts["pulled"] == 1 and counts["errors"] == 0


# --- round trip through the emulator ----------------------------------------------------------


def _drain(emu, sender, max_seconds=20):
    """Send everything, then let the emulator post its receipts. The receipt delay keeps the
    sender's writes and the webhook's apart: SQLite's shared-cache test database answers
    "table is locked" at once to concurrent writers instead of waiting."""
    deadline = time.monotonic() + max_seconds
    while time.monotonic() < deadline:
        sender.tick()
        if not Message.objects.filter(status__in=["queued", "sending"]).exists():
            break
        time.sleep(0.05)
    assert emu.wait_idle(timeout=max_seconds)


@pytest.mark.django_db(transaction=True)
def test_round_trip_through_the_emulator(api, public_url, settings):
    from devtools.emulator.base import Emulator
    from messaging.sender import Sender

    with Emulator(receipt_delay=0.5, webhook_base=public_url) as emu:
        configure(settings, BASE_URL=emu.url)
        created = {}
        for digit in "702":
            response = api.post(
                "/api/v1/messages/",
                {"to": f"+44791112345{digit}", "body": "Hello from Herald", "provider": "infobip"},
                format="json",
            )
            assert response.status_code == 202, response.content
            created[digit] = Message.objects.get(pk=response.json()["id"])
        sender = Sender(concurrency=1, batch_size=10)
        try:
            _drain(emu, sender)
        finally:
            sender.pool.shutdown()
        delivered, failed, duplicated = (created[d] for d in "702")
        for message in created.values():
            message.refresh_from_db()
        assert emu.stats.snapshot()["requests"]["infobip"] == 3

        # our id is Infobip's id; DELIVERED_TO_OPERATOR did not finish it, the handset did
        assert delivered.provider_message_id == str(delivered.pk)
        assert delivered.status == "delivered"
        assert list(delivered.events.order_by("id").values_list("status", "applied")) == [
            ("queued", True),
            ("sending", True),
            ("sent", True),
            ("sent", False),  # DELIVERED_TO_OPERATOR
            ("delivered", True),
        ]
        assert (failed.status, failed.error_code) == ("failed", "27")
        assert duplicated.status == "delivered"
        assert list(
            duplicated.events.filter(source="webhook")
            .order_by("id")
            .values_list("status", "applied")
        ) == [("delivered", True), ("sent", False), ("delivered", False)]  # the last: a duplicate
        assert WebhookRequest.objects.filter(authenticated=True, state="processed").count() == 7

        # reconciliation against the emulator's /sms/3/logs
        [report] = get_provider("infobip").fetch_reports(delivered, requests.Session())
        assert (report.status, report.provider_message_id) == ("delivered", str(delivered.pk))


# --- the emulator speaks Infobip's formats ----------------------------------------------------


@pytest.fixture
def emulator(settings):
    from devtools.emulator.base import Emulator, Faults

    with Emulator(receipt_delay=60, webhook_base="http://127.0.0.1:9", faults=Faults()) as emu:
        configure(settings, BASE_URL=emu.url)
        yield emu


def test_emulator_answers_like_infobip(emulator):
    provider = get_provider("infobip")
    session = requests.Session()
    long_text = outbound(message_id="emu-1", body="x" * 200)
    result = provider.send(long_text, session)
    assert result.provider_message_ids == ["emu-1"]
    assert (result.provider_status, result.segments) == ("PENDING_ACCEPTED", 2)
    # a second send with the same messageId: REJECTED_DUPLICATE_MESSAGE_ID
    assert provider.send(outbound(message_id="emu-1", attempt=2), session).provider_message_ids == [
        "emu-1"
    ]
    with pytest.raises(PermanentSendError) as caught:
        provider.send(outbound(message_id="emu-1", attempt=1), session)
    assert caught.value.code == "REJECTED_DUPLICATE_MESSAGE_ID"
    with pytest.raises(PermanentSendError) as caught:
        provider.send(outbound(message_id="emu-2", to="+12"), session)
    assert caught.value.code == "REJECTED_DESTINATION"
    with pytest.raises(PermanentSendError) as caught:
        provider.send(outbound(message_id="emu-3", body=None), session)  # content.text: null
    assert caught.value.code == "E400" and "content.text" in str(caught.value)


def test_emulator_refuses_a_wrong_key_and_injects_429(emulator):
    provider = get_provider("infobip")
    request = provider.build_send_request(outbound())
    response = requests.post(
        request.url, json=request.json, headers={"Authorization": "App wrong"}, timeout=5
    )
    assert response.status_code == 401
    with pytest.raises(PermanentSendError) as caught:
        provider.parse_send_response(response)
    assert caught.value.code == "UNAUTHORIZED"
    emulator.faults.rate_429 = 1.0
    with pytest.raises(RetryableSendError) as caught:
        provider.send(outbound(), requests.Session())
    assert caught.value.code == "TOO_MANY_REQUESTS"
    assert emulator.stats.snapshot()["faults"] == {"infobip:429": 1}


def test_emulator_receipt_and_log_formats(emulator):
    from devtools.emulator.base import Step

    get_provider("infobip").send(outbound(message_id="emu-9"), requests.Session())
    emu = emulator.providers["infobip"]
    sent = emu.lookup("emu-9")
    webhook = emu.receipt(sent, Step("failed", "error", 500), 0)
    assert webhook.url == ("https://herald.example.com/webhooks/infobip/status/?token=token-one")
    # a per-message webhooks.delivery.url: Infobip adds no credentials, only the URL's token
    assert "Authorization" not in webhook.headers
    request = winput(webhook.body, query=[("token", "token-one")])
    provider = get_provider("infobip")
    provider.verify_webhook(request, "status")  # what Herald accepts
    [report] = provider.parse_status_webhook(request)
    assert (report.status, report.error_code) == (Status.FAILED, "27")
    assert report.client_reference == report.provider_message_id == "emu-9"
    assert report.provider_timestamp is not None

    response = requests.get(
        f"{emulator.url}/sms/3/logs",
        params={"messageId": "emu-9"},
        headers={"Authorization": "App test-api-key"},
        timeout=5,
    )
    [entry] = response.json()["results"]
    assert entry["destination"] == "41793026727" and entry["content"]["text"]
    assert entry["status"]["groupName"] == "PENDING"  # no receipt posted yet

    # the account-level URL (a subscription profile, no per-message URL) brings Basic
    sent.callback_url = ""
    profile = emu.receipt(sent, Step("delivered"), 0)
    assert profile.headers["Authorization"] == basic("infobip", "old-password")
    assert profile.url.endswith("/webhooks/infobip/status/?token=token-one")
