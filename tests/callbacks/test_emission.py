"""Outbox rows are written in the transaction of the change they report, at every place the
code applies a status change, and only for clients (or messages) with a callback URL."""

import json

import pytest
from django.db import transaction
from django.utils import timezone

from messaging import applier
from messaging.models import Callback, Message, OptOutChange
from messaging.providers.base import (
    AmbiguousSendError,
    DeliveryReport,
    InboundSms,
    PermanentSendError,
    RetryableSendError,
    SendResult,
)
from messaging.providers.sandbox import SandboxProvider
from messaging.services import callbacks, messages, optouts, reconcile
from messaging.services.inbound import record_inbound
from messaging.services.receipts import apply_one as apply_report
from messaging.services.sending import claim_due, recover_expired_leases
from messaging.status import Status
from tests.callbacks.conftest import make_client
from tests.sending import record_sent, send_one
from tests.test_webhooks import sandbox_headers

pytestmark = pytest.mark.django_db

URL = "https://hooks.example.com/herald"


@pytest.fixture(autouse=True)
def _public_dns(monkeypatch):
    """hooks.example.com resolves to a public address (no DNS in tests: the one seam)."""
    import socket

    real = socket.getaddrinfo

    def fake(host, port, *args, **kwargs):
        if host == "hooks.example.com":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr("messaging.callback_http.socket.getaddrinfo", fake)


def events(message=None, **filters):
    rows = Callback.objects.filter(**filters).order_by("id")
    if message is not None:
        rows = rows.filter(message=message)
    return list(rows)


def statuses(message):
    return [(c.sequence, c.payload["data"]["status"]) for c in events(message)]


def outbound(client, **kwargs):
    return messages.create_outbound(to="+447700900123", body="hi", source="api", client=client,
                                    **kwargs)  # fmt: skip


def test_the_whole_life_of_a_message_is_numbered_in_order():
    client, _ = make_client("acme", URL)
    message = outbound(client, client_reference="order-7", metadata={"k": "v"})
    assert events(message) == []  # creation answers the API call itself: no event
    [claimed] = claim_due(10, "w")
    record_sent(claimed, SendResult(["p-1"]))
    apply_report("sandbox", DeliveryReport(Status.DELIVERED, "DELIVRD", provider_message_id="p-1"))
    assert statuses(message) == [(1, "sending"), (2, "sent"), (3, "delivered")]
    first = events(message)[0]
    assert first.event_type == "message.status" and first.url == URL
    assert first.event_id.startswith("evt_") and first.payload["id"] == first.event_id
    data = events(message)[-1].payload["data"]
    assert data["client_reference"] == "order-7" and data["metadata"] == {"k": "v"}
    assert (data["provider"], data["provider_message_id"]) == ("sandbox", "p-1")
    assert data["message_id"] == str(message.pk) and data["to"] == "+447700900123"
    json.dumps(first.payload)  # stored as it is sent


def test_nothing_for_a_client_without_a_url_and_a_message_url_overrides():
    plain, _ = make_client("plain", "")
    outbound(plain)
    client, _ = make_client("acme", URL)
    own = outbound(client, callback_url="https://hooks.example.com/other")
    claim_due(10, "w")
    assert Callback.objects.count() == 1
    assert events(own)[0].url == "https://hooks.example.com/other"


def test_a_message_url_needs_a_signing_secret():
    from messaging.errors import CallbackNotConfigured

    plain, _ = make_client("plain", "")
    with pytest.raises(CallbackNotConfigured):
        outbound(plain, callback_url=URL)


def test_a_rolled_back_change_leaves_no_callback():
    client, _ = make_client("acme", URL)
    outbound(client)
    with pytest.raises(RuntimeError), transaction.atomic():
        claim_due(10, "w")
        assert Callback.objects.count() == 1
        raise RuntimeError("crash before commit")
    assert Callback.objects.count() == 0
    assert Message.objects.get().status == Status.QUEUED


def test_ignored_reports_and_duplicates_make_no_callback():
    client, _ = make_client("acme", URL)
    message = outbound(client)
    [claimed] = claim_due(10, "w")
    record_sent(claimed, SendResult(["p-1"]))
    report = DeliveryReport(Status.DELIVERED, "DELIVRD", provider_message_id="p-1")
    apply_report("sandbox", report)
    apply_report("sandbox", report)  # duplicate
    apply_report(
        "sandbox", DeliveryReport(Status.SENT, "ACCEPTD", provider_message_id="p-1")
    )  # late, ignored
    assert [s for _, s in statuses(message)] == ["sending", "sent", "delivered"]


@pytest.fixture
def provider(monkeypatch):
    outcomes = []

    def send(self, sms, session):
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(SandboxProvider, "send", send)
    return outcomes


def test_retry_failure_rejection_and_unknown_from_the_sender(provider, settings):
    settings.SENDER_MAX_ATTEMPTS = 2
    settings.SMS_FALLBACK_PROVIDERS = []
    client, _ = make_client("acme", URL)
    retried = outbound(client)
    provider += [RetryableSendError("busy", code="503"), RetryableSendError("busy", code="503")]
    send_one(claim_due(1, "w")[0], None, "w")
    Message.objects.filter(pk=retried.pk).update(next_attempt_at=timezone.now())
    send_one(claim_due(1, "w")[0], None, "w")
    assert [s for _, s in statuses(retried)] == ["sending", "queued", "sending", "failed"]
    assert events(retried)[1].payload["data"]["error_code"] == "503"

    refused = outbound(client)
    provider.append(PermanentSendError("bad number", code="invalid"))
    send_one(claim_due(1, "w")[0], None, "w")
    assert [s for _, s in statuses(refused)] == ["sending", "rejected"]

    ambiguous = outbound(client)
    provider.append(AmbiguousSendError("timeout", code="timeout"))
    send_one(claim_due(1, "w")[0], None, "w")
    assert [s for _, s in statuses(ambiguous)] == ["sending", "unknown"]


def test_expired_lease_becomes_unknown_with_a_callback():
    client, _ = make_client("acme", URL)
    message = outbound(client)
    claim_due(1, "w")
    Message.objects.filter(pk=message.pk).update(lease_until=timezone.now())
    assert recover_expired_leases(now=timezone.now() + timezone.timedelta(seconds=1)) == 1
    assert [s for _, s in statuses(message)] == ["sending", "unknown"]


def test_cancel_and_reconcile_timeout():
    client, _ = make_client("acme", URL)
    cancelled = messages.cancel(outbound(client), reason="changed my mind")
    assert [s for _, s in statuses(cancelled)] == ["cancelled"]
    assert events(cancelled)[0].payload["data"]["error_code"] == "cancelled"

    stuck = outbound(client)
    record_sent(claim_due(1, "w")[0], SendResult(["p-9"]))
    reconcile.mark_unknown(stuck, "no final receipt")
    assert [s for _, s in statuses(stuck)] == ["sending", "sent", "unknown"]


def test_the_applier_batch_emits_every_applied_change_in_one_go(client):
    acme, _ = make_client("acme", URL)
    message = outbound(acme)
    record_sent(claim_due(1, "w")[0], SendResult(["p-5"]))
    for status in ("delivered", "sent"):  # the late `sent` is ignored
        body = json.dumps({"message_id": "p-5", "status": status, "error_code": "",
                           "timestamp": "2026-11-23T10:00:00+00:00"}).encode()  # fmt: skip
        answer = client.post(
            "/webhooks/sandbox/status/",
            body,
            content_type="application/json",
            headers=sandbox_headers(body),
        )
        assert answer.status_code == 200
    assert [s for _, s in statuses(message)] == ["sending", "sent", "delivered"]


def test_applier_fast_path_numbers_two_changes_of_one_batch(settings, client):
    settings.WEBHOOK_APPLY_INLINE = False
    acme, _ = make_client("acme", URL)
    message = outbound(acme)
    record_sent(claim_due(1, "w")[0], SendResult(["p-6"]))
    for status, ts in (("unknown", "10:00:00"), ("delivered", "10:00:01")):
        body = json.dumps({"message_id": "p-6", "status": status, "error_code": "",
                           "timestamp": f"2026-11-23T{ts}+00:00"}).encode()  # fmt: skip
        answer = client.post(
            "/webhooks/sandbox/status/",
            body,
            content_type="application/json",
            headers=sandbox_headers(body),
        )
        assert answer.status_code == 200
    assert applier.drain().reports == 2  # one batch, both applied: numbered in order
    assert statuses(message) == [(1, "sending"), (2, "sent"), (3, "unknown"), (4, "delivered")]


def test_inbound_and_the_opt_out_it_causes():
    acme, _ = make_client("acme", URL)
    sms = InboundSms("in-1", "+447700900555", "+447700900000", "STOP")
    inbound, created = record_inbound("sandbox", sms)
    assert created and not Callback.objects.exists()  # no client owns the number
    Message.objects.filter(pk=inbound.pk).update(client=acme)
    optouts.opt_in("+447700900555")
    inbound.refresh_from_db()
    with transaction.atomic():
        callbacks.emit_inbound(inbound)
        optouts.opt_out("+447700900555", keyword="STOP", source_message=inbound)
    [received] = events(event_type="message.inbound")
    assert received.payload["data"]["body"] == "STOP" and received.sequence == 1
    [changed] = events(event_type="optout.changed")
    assert changed.payload["data"] == {
        "phone_number": "+447700900555", "action": OptOutChange.Action.OPT_OUT,
        "opted_out": True, "keyword": "STOP", "reason": "", "source_message_id": str(inbound.pk),
    }  # fmt: skip
    optouts.opt_out("+447700900555", source_message=inbound)  # no change: no event
    assert len(events(event_type="optout.changed")) == 1
