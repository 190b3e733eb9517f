"""The sender's outcomes with a scripted provider: sent, retry with backoff, permanent refusal,
ambiguous -> unknown (never resent), failover, opt-outs, and the run_sender command."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from messaging.models import Message, OptOut, StatusEvent
from messaging.providers.base import (
    AmbiguousSendError,
    PermanentSendError,
    RetryableSendError,
    SendResult,
)
from messaging.providers.sandbox import SandboxProvider
from messaging.services import messages
from messaging.services.sending import backoff_seconds, claim_due
from tests.sending import send_one

pytestmark = pytest.mark.django_db


@pytest.fixture
def script(monkeypatch):
    """Make the sandbox provider's send return or raise what the test says, and count calls."""
    calls = []
    outcomes = []

    def send(self, sms, session):
        calls.append((self.name, sms))
        outcome = outcomes.pop(0) if len(outcomes) > 1 else outcomes[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(SandboxProvider, "send", send)
    return outcomes, calls


def queue(to="+447911123457", **kwargs):
    return messages.create_outbound(to=to, body="hello", source="api", **kwargs)


def attempt(message):
    [claimed] = claim_due(10, "test")
    assert claimed.pk == message.pk
    status = send_one(claimed, session=None, owner="test")
    message.refresh_from_db()
    return status


def test_sent_records_ids_price_and_parts(script):
    outcomes, calls = script
    outcomes.append(SendResult(["a", "b"], provider_status="0", segments=2, price=0.08))
    message = queue()
    assert attempt(message) == "sent"
    assert message.provider_message_id == "a"
    assert list(message.parts.values_list("provider_message_id", flat=True)) == ["a", "b"]
    assert (message.segments, float(message.price)) == (2, 0.08)
    assert message.sent_at and message.lease_owner == ""
    sms = calls[0][1]
    assert sms.message_id == str(message.pk) and sms.to == "+447911123457"
    assert sms.callback_url.endswith("/webhooks/sandbox/status/")


def test_retryable_error_backs_off_then_succeeds(script, settings):
    outcomes, calls = script
    outcomes += [RetryableSendError("busy", code="429", retry_after=30), SendResult(["x"])]
    message = queue()
    assert attempt(message) == "queued"
    assert message.next_attempt_at >= timezone.now() + timedelta(seconds=29)  # Retry-After
    assert claim_due(10, "test") == []  # not due yet
    Message.objects.filter(pk=message.pk).update(next_attempt_at=timezone.now())
    assert attempt(message) == "sent"
    assert message.attempts == 2 and len(calls) == 2


def test_permanent_error_is_final(script):
    outcomes, calls = script
    outcomes.append(PermanentSendError("number barred", code="7"))
    message = queue()
    assert attempt(message) == "rejected"
    assert (message.error_code, message.error_text) == ("7", "number barred")
    assert claim_due(10, "test") == []


def test_ambiguous_send_is_unknown_and_never_resent(script):
    outcomes, calls = script
    outcomes.append(AmbiguousSendError("read timeout", code="timeout"))
    message = queue()
    assert attempt(message) == "unknown"
    assert claim_due(10, "test") == [] and len(calls) == 1
    assert message.events.filter(status="unknown", source="sender").exists()


def test_a_provider_bug_is_treated_as_ambiguous(script):
    outcomes, _ = script
    outcomes.append(KeyError("oops"))
    message = queue()
    assert attempt(message) == "unknown"
    assert message.error_code == "internal-error"


def test_gives_up_after_max_attempts(script, settings):
    settings.SENDER_MAX_ATTEMPTS = 2
    outcomes, calls = script
    outcomes.append(RetryableSendError("down", code="503"))
    message = queue()
    assert attempt(message) == "queued"
    Message.objects.filter(pk=message.pk).update(next_attempt_at=timezone.now())
    assert attempt(message) == "failed"
    assert "gave up after 2 attempts" in message.error_text


def test_failover_to_the_next_provider(script, settings):
    settings.SENDER_MAX_ATTEMPTS = 1
    settings.SMS_PROVIDERS = {**settings.SMS_PROVIDERS, "backup": settings.SMS_PROVIDERS["sandbox"]}
    settings.SMS_PROVIDERS_ENABLED = ["sandbox", "backup"]
    settings.SMS_FALLBACK_PROVIDERS = ["backup"]
    outcomes, calls = script
    outcomes += [RetryableSendError("down", code="503"), SendResult(["b-1"])]
    message = queue()
    assert attempt(message) == "queued"
    assert (message.provider, message.attempts) == ("backup", 0)
    switch = message.events.get(note__startswith="failover")
    assert "sandbox" in switch.note and "backup" in switch.note
    assert attempt(message) == "sent"
    assert [name for name, _ in calls] == ["sandbox", "backup"]


def test_provider_opt_out_error_adds_the_number(script):
    outcomes, _ = script
    outcomes.append(PermanentSendError("unsubscribed", code="21610", opted_out=True))
    message = queue()
    assert attempt(message) == "rejected"
    assert OptOut.objects.filter(phone_number="+447911123457").exists()


def test_sender_refuses_opted_out_numbers(script):
    outcomes, calls = script
    outcomes.append(SendResult(["x"]))
    message = queue()
    OptOut.objects.create(phone_number=message.to_number)  # opted out after queueing
    assert attempt(message) == "rejected"
    assert message.error_code == "opted-out" and calls == []


def test_cancelled_lease_is_not_overwritten(script):
    """If the lease was taken away (expired and recovered), a late outcome does not regress."""
    outcomes, _ = script
    outcomes.append(PermanentSendError("late", code="x"))
    message = queue()
    [claimed] = claim_due(1, "test")
    Message.objects.filter(pk=message.pk).update(status="unknown", lease_owner="")
    send_one(claimed, session=None, owner="test")
    message.refresh_from_db()
    assert message.status == "unknown"


def test_backoff_grows_with_jitter_and_cap(settings):
    settings.SENDER_BACKOFF_BASE, settings.SENDER_BACKOFF_CAP = 2, 60
    for attempt_no, full in [(1, 2), (2, 4), (3, 8), (10, 60)]:
        delays = [backoff_seconds(attempt_no) for _ in range(50)]
        assert all(full / 2 <= d <= full for d in delays)
        assert len(set(delays)) > 1  # jittered
    assert backoff_seconds(1, retry_after=120) == 120


@pytest.mark.django_db(transaction=True)
def test_run_sender_once_sends_what_is_due(script, monkeypatch):
    outcomes, calls = script
    ids = iter(range(100))
    monkeypatch.setattr(SandboxProvider, "send", lambda self, sms, s: SendResult([next(ids)]))
    due = [queue() for _ in range(3)]
    later = queue(send_at=timezone.now() + timedelta(hours=1))
    out = StringIO()
    call_command("run_sender", "--once", stdout=out)
    assert "3 message(s)" in out.getvalue()
    assert {Message.objects.get(pk=m.pk).status for m in due} == {"sent"}
    assert Message.objects.get(pk=later.pk).status == "queued"
    assert StatusEvent.objects.filter(status="sending").count() == 3


def test_a_reused_provider_id_does_not_break_the_record(script):
    outcomes, _ = script
    outcomes.append(SendResult(["same-id"]))
    first, second = queue(), queue()
    [a, b] = claim_due(10, "test")
    assert send_one(a, session=None, owner="test") == "sent"
    assert send_one(b, session=None, owner="test") == "sent"
    first.refresh_from_db(), second.refresh_from_db()
    assert {first.provider_message_id, second.provider_message_id} == {"same-id", None}


def test_partial_send_rolls_up_to_rejected_and_is_not_resent(script):
    outcomes, calls = script
    outcomes.append(SendResult(["p1"], refused_parts=[("1", "Throttled")]))
    message = queue()
    assert attempt(message) in ("sent", "rejected")
    message.refresh_from_db()
    assert message.status == "rejected"
    assert message.error_text.startswith("1 of 2 parts refused")
    assert list(message.parts.order_by("index").values_list("status", flat=True)) == [
        "sent",
        "rejected",
    ]
    assert claim_due(10, "test") == [] and len(calls) == 1
