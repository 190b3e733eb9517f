"""Provider quirks, each on a real payload from tests/fixtures (issue 12, item 4).

The payloads are parsed by the provider's own parser (webhooks.parse, as the view and the applier
do) and applied by the one apply service (services.receipts.apply).
"""

import json
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlencode

import pytest
from django.utils import timezone

from messaging.models import Client, Message, MessagePart, OptOut, StatusEvent
from messaging.providers.base import DeliveryReport, SendResult, WebhookInput
from messaging.services import receipts, reconcile, webhooks
from messaging.services.sending import Accepted, record_accepted
from messaging.status import Status
from tests.test_webhook_fuzz import PUBLIC, configure_all, fixture_bytes

pytestmark = pytest.mark.django_db

FORM, JSON = "application/x-www-form-urlencoded", "application/json"


@pytest.fixture(autouse=True)
def providers_on(settings):
    configure_all(settings)


def parse(provider, body: bytes, content_type: str, query: str = "") -> list:
    url = f"{PUBLIC}/webhooks/{provider}/status/" + (f"?{query}" if query else "")
    winput = WebhookInput(method="POST", url=url, headers={"content-type": content_type},
                          body=body, query=parse_qsl(query))  # fmt: skip
    return webhooks.parse(provider, "status", winput)


def apply(provider, reports):
    return receipts.apply([receipts.Incoming(provider, r) for r in reports])


def sent_message(provider, pid, status=Status.SENT, to="+447911123457", **fields):
    message = Message.objects.create(client=Client.objects.default(), to_number=to, body="x",
                                     provider=provider, provider_message_id=pid, status=status,
                                     **fields)  # fmt: skip
    MessagePart.objects.create(message=message, index=0, provider=provider,
                               provider_message_id=pid)  # fmt: skip
    return message


def form_with(name, **changes) -> bytes:
    provider, fixture = name.split("/")
    params = dict(parse_qsl(fixture_bytes(provider, fixture).decode(), keep_blank_values=True))
    params.update(changes)
    return urlencode(params).encode()


def json_with(name, **changes) -> bytes:
    provider, fixture = name.split("/")
    data = json.loads(fixture_bytes(provider, fixture))
    if "results" in data:  # Infobip: the first report of the batch
        data["results"][0].update(changes)
    else:
        data.update(changes)
    return json.dumps(data).encode()


# --- a status the provider does not document --------------------------------------------------

TWILIO_SID = "SMa1b2c3d4e5f60718293a4b5c6d7e8f90"
UNDOCUMENTED = {
    "vonage-sms": lambda: (
        form_with("vonage-sms/dlr-post.form", status="mystery"), FORM, "14000000F9DBBBBB"),
    "twilio": lambda: (
        form_with("twilio/status_sent.raw", MessageStatus="mystery", SmsStatus="mystery"),
        FORM, TWILIO_SID),
    "infobip": lambda: (
        json_with("infobip/dlr_v3.json",
                  status={"groupId": 42, "groupName": "NEW", "id": 99, "name": "NEW_THING"}),
        JSON, "MESSAGE-ID-123-xyz"),
    "sinch": lambda: (
        json_with("sinch/recipient_dispatched.json", status="Teleported"), JSON,
        "01FC66621XXXXX119Z8PMV1QPQ"),
    "vonage-messages": lambda: (
        json_with("vonage-messages/status_submitted.json", status="beamed"), JSON,
        "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"),
}  # fmt: skip


@pytest.mark.parametrize("provider", sorted(UNDOCUMENTED))
def test_an_undocumented_status_is_recorded_not_applied(provider):
    body, content_type, pid = UNDOCUMENTED[provider]()
    query = "token=token-one" if provider == "infobip" else ""
    [report] = parse(provider, body, content_type, query)
    assert not report.documented
    message = sent_message(provider, pid)
    done = apply(provider, [report])
    message.refresh_from_db()
    assert message.status == Status.SENT  # not closed as `unknown`
    assert message.completed_at is None
    event = StatusEvent.objects.get(message=message)
    assert (event.applied, event.provider_status) == (False, report.provider_status)
    assert "not a status" in event.note and provider in event.note
    assert done.counts["ignored"] == 1 and not done.changes


def test_a_documented_unknown_still_applies():
    [report] = parse("vonage-sms", form_with("vonage-sms/dlr-post.form", status="unknown"), FORM)
    assert report.documented
    message = sent_message("vonage-sms", "14000000F9DBBBBB")
    done = apply("vonage-sms", [report])
    message.refresh_from_db()
    assert message.status == Status.UNKNOWN
    assert [(c.old, c.new) for c in done.changes] == [(Status.SENT, Status.UNKNOWN)]


# --- Twilio 21610 in a status callback --------------------------------------------------------


def test_twilio_21610_in_a_status_callback_opts_the_number_out():
    body = form_with("twilio/status_undelivered.raw", ErrorCode="21610")
    [report] = parse("twilio", body, FORM)
    assert report.opted_out
    message = sent_message("twilio", TWILIO_SID, to="+14155550100")
    apply("twilio", [report])
    message.refresh_from_db()
    assert message.status in (Status.FAILED, Status.REJECTED)
    assert message.error_code == "21610"
    optout = OptOut.objects.get(phone_number="+14155550100")
    assert optout.source_message_id == message.pk
    # the same callback again adds nothing
    apply("twilio", parse("twilio", body, FORM))
    assert OptOut.objects.count() == 1


def test_other_twilio_errors_do_not_opt_out():
    [report] = parse("twilio", fixture_bytes("twilio", "status_undelivered.raw"), FORM)
    assert not report.opted_out
    sent_message("twilio", TWILIO_SID, to="+14155550100")
    apply("twilio", [report])
    assert not OptOut.objects.exists()


# --- an error code with a non-failure status ---------------------------------------------------


def test_vonage_messages_delivered_with_error_1000_leaves_no_error_on_the_message():
    # status_submitted.json carries error 1000 "Throttled"; Vonage sends it with `delivered` too
    body = json_with("vonage-messages/status_submitted.json", status="delivered")
    [report] = parse("vonage-messages", body, JSON)
    assert (report.status, report.error_code) == (Status.DELIVERED, "1000")
    message = sent_message("vonage-messages", "aaaaaaaa-bbbb-cccc-dddd-0123456789ab")
    apply("vonage-messages", [report])
    message.refresh_from_db()
    assert (message.status, message.error_code, message.error_text) == (Status.DELIVERED, "", "")
    event = StatusEvent.objects.get(message=message)
    assert event.error_code == "1000" and "Throttled" in event.error_text  # the timeline keeps it


def test_a_receipt_timeout_does_not_stay_on_a_message_delivered_later():
    message = sent_message("vonage-sms", "14000000F9DBBBBB")
    reconcile.mark_unknown(message, "no final receipt after 2 days")
    message.refresh_from_db()
    assert (message.status, message.error_code) == (Status.UNKNOWN, "receipt-timeout")
    apply("vonage-sms", parse("vonage-sms", fixture_bytes("vonage-sms", "dlr-post.form"), FORM))
    message.refresh_from_db()
    assert (message.status, message.error_code, message.error_text) == (Status.DELIVERED, "", "")
    timeline = list(message.events.order_by("id").values_list("status", "error_code"))
    assert timeline == [(Status.UNKNOWN, "receipt-timeout"), (Status.DELIVERED, "")]


def test_a_failure_keeps_its_error():
    [report] = parse("twilio", fixture_bytes("twilio", "status_undelivered.raw"), FORM)
    message = sent_message("twilio", TWILIO_SID)
    apply("twilio", [report])
    message.refresh_from_db()
    assert message.error_code == "30003" and message.status == Status.FAILED


# --- sent_at -----------------------------------------------------------------------------------


def sending_message(provider="sandbox"):
    return Message.objects.create(client=Client.objects.default(), to_number="+447911123457",
                                  body="x", provider=provider, status=Status.SENDING)  # fmt: skip


def test_sent_at_is_when_the_provider_accepted_not_when_it_was_recorded():
    message = sending_message()
    accepted_at = timezone.now() - timedelta(seconds=3)  # the recorder ran 3 s later
    record_accepted([Accepted(message, SendResult(["sbx-1"]), accepted_at)])
    message.refresh_from_db()
    assert (message.status, message.sent_at) == (Status.SENT, accepted_at)


def test_sent_at_is_never_after_a_receipt_that_beat_the_send_response():
    message = sending_message()
    accepted_at = timezone.now()
    delivered_at = accepted_at - timedelta(milliseconds=300)  # the provider's clock, or skew
    receipt = DeliveryReport(Status.DELIVERED, "delivered", client_reference=str(message.pk),
                             provider_timestamp=delivered_at)  # fmt: skip
    receipts.apply_one("sandbox", receipt)  # matched by our reference alone: applied
    record_accepted([Accepted(message, SendResult(["sbx-2"]), accepted_at)])
    message.refresh_from_db()
    assert message.status == Status.DELIVERED
    assert message.sent_at == delivered_at <= message.completed_at  # latency never negative


def test_attempt_measures_acceptance_in_the_sending_thread(settings):
    from messaging.services.sending import attempt

    message = sending_message()
    before = timezone.now()
    outcome = attempt(message, session=None, owner="test")
    after = timezone.now()
    assert isinstance(outcome, Accepted)
    assert before <= outcome.accepted_at <= after


def test_a_duplicate_says_which_message_it_matched():
    message = sent_message("vonage-sms", "14000000F9DBBBBB")
    body = fixture_bytes("vonage-sms", "dlr-post.form")
    apply("vonage-sms", parse("vonage-sms", body, FORM))
    done = apply("vonage-sms", parse("vonage-sms", body, FORM))
    assert done.counts["duplicate"] == 1
    assert done.outcomes[0].message_id == message.pk
    dup = message.events.order_by("id").last()
    assert (dup.applied, dup.dedupe_key) == (False, None) and "duplicate" in dup.note
    assert datetime.now(UTC) >= dup.received_at
