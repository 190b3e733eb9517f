"""Failover never double-sends (issue 16, item 3): a routed message moves to another provider
only after an answer proving the first did not take it; anything ambiguous stays `unknown`.
Outbound HTTP at one seam (`responses`)."""

import json
from pathlib import Path

import pytest
import requests
import responses

from messaging.models import Message, ProviderHealth, StatusEvent
from messaging.services import messages, sending
from messaging.status import Status
from tests.sending import send_one
from tests.test_failover import infobip, sinch

pytestmark = pytest.mark.django_db

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SINCH = "http://sinch.test/xms/v1/plan-outage/batches"
INFOBIP = "http://infobip.test/sms/3/messages"
GB = "+447700900123"


def fixture(path):
    return json.loads((FIXTURES / path).read_text())


@pytest.fixture
def routed(settings):
    settings.SMS_PROVIDERS = {"sinch": sinch("http://sinch.test"),
                              "infobip": infobip("http://infobip.test")}  # fmt: skip
    settings.SMS_PROVIDERS_ENABLED = ["sinch", "infobip"]
    settings.SMS_DEFAULT_PROVIDER = "sinch"
    settings.SMS_FALLBACK_PROVIDERS = []
    settings.SMS_ROUTES = "GB: sinch 100, infobip 0"  # infobip: the standby
    settings.SENDER_MAX_ATTEMPTS = 6
    settings.ROUTING_HEALTH_FLUSH_SECONDS = 3600
    return settings


def send_next():
    [claimed] = sending.claim_due(10, "owner")
    return send_one(claimed, requests.Session(), "owner")


def accepted_by_infobip():
    responses.post(INFOBIP, status=200, json=fixture("infobip/send_response_pending.json"))


@responses.activate
@pytest.mark.parametrize("status", [503, 429])
def test_a_refusal_moves_it_at_once_and_it_is_sent_once(routed, status):
    responses.post(SINCH, status=status, json={"code": "unavailable", "text": "down"})
    accepted_by_infobip()
    message = messages.create_outbound(to=GB, body="hi", source="api")
    assert message.provider == "sinch"
    assert send_next() == Status.QUEUED
    message.refresh_from_db()
    assert (message.provider, message.attempts) == ("infobip", 1)  # attempts count on
    assert message.next_attempt_at <= message.updated_at  # due now, not after a backoff
    switch = StatusEvent.objects.get(message=message, note__startswith="failover")
    assert switch.note.startswith("failover: sinch did not accept it (")
    assert switch.raw_payload["route"]["chosen"] == "infobip"
    assert switch.raw_payload["route"]["excluded"] == [
        {"provider": "sinch", "reason": "did not accept this message"}
    ]
    assert send_next() == Status.SENT
    assert [c.request.url for c in responses.calls] == [SINCH, INFOBIP]


@responses.activate
def test_connection_refused_moves_it(routed):
    responses.post(SINCH, body=requests.ConnectionError("NewConnectionError: Connection refused"))
    accepted_by_infobip()
    message = messages.create_outbound(to=GB, body="hi", source="api")
    assert send_next() == Status.QUEUED
    assert send_next() == Status.SENT
    message.refresh_from_db()
    assert message.provider == "infobip"


@responses.activate
@pytest.mark.parametrize("status", [500, 502, 504])
def test_an_error_that_may_follow_acceptance_stays_on_the_provider(routed, status):
    responses.post(SINCH, status=status, json={"code": "internal", "text": "oops"})
    message = messages.create_outbound(to=GB, body="hi", source="api")
    assert send_next() == Status.QUEUED
    message.refresh_from_db()
    assert message.provider == "sinch"  # retried later on the same provider, as before
    assert not StatusEvent.objects.filter(message=message, note__startswith="failover").exists()
    assert StatusEvent.objects.filter(message=message, note__contains="retrying in").exists()


@responses.activate
def test_a_timeout_stays_unknown(routed):
    responses.post(SINCH, body=requests.ReadTimeout("read timed out"))
    message = messages.create_outbound(to=GB, body="hi", source="api")
    assert send_next() == Status.UNKNOWN
    message.refresh_from_db()
    assert (message.provider, message.status, message.error_code) == ("sinch", "unknown", "timeout")
    assert not sending.claim_due(10, "owner")  # never resent, through no provider
    assert len(responses.calls) == 1


@responses.activate
def test_a_permanent_refusal_is_final(routed):
    responses.post(SINCH, status=400, json=fixture("sinch/error_400.json"))
    messages.create_outbound(to=GB, body="hi", source="api")
    assert send_next() == Status.REJECTED
    assert len(responses.calls) == 1


@responses.activate
def test_a_named_provider_is_never_moved(routed):
    responses.post(SINCH, status=503, json={"code": "unavailable", "text": "down"})
    message = messages.create_outbound(to=GB, body="hi", source="api", provider="sinch")
    assert send_next() == Status.QUEUED
    message.refresh_from_db()
    assert message.provider == "sinch"
    assert StatusEvent.objects.filter(message=message, note__contains="retrying in").exists()


@responses.activate
def test_no_other_available_provider_retries_on_the_same(routed):
    from django.utils import timezone

    ProviderHealth.objects.create(provider="infobip", state="open", state_since=timezone.now())
    responses.post(SINCH, status=503, json={"code": "unavailable", "text": "down"})
    message = messages.create_outbound(to=GB, body="hi", source="api")
    assert send_next() == Status.QUEUED
    message.refresh_from_db()
    assert message.provider == "sinch"
    assert StatusEvent.objects.filter(message=message, note__contains="retrying in").exists()


@responses.activate
def test_both_down_ends_after_the_attempts_with_no_double_send(routed):
    routed.SENDER_MAX_ATTEMPTS = 4
    responses.post(SINCH, status=503, json={"code": "unavailable", "text": "down"})
    responses.post(INFOBIP, status=503, json=fixture("infobip/error_500.json"))
    message = messages.create_outbound(to=GB, body="hi", source="api")
    statuses = []
    for _ in range(4):
        Message.objects.filter(pk=message.pk).update(next_attempt_at=message.created_at)
        statuses.append(send_next())
    assert statuses == [Status.QUEUED] * 3 + [Status.FAILED]
    assert [c.request.url for c in responses.calls] == [SINCH, INFOBIP, SINCH, INFOBIP]
