"""Provider outages and failover, end to end over real HTTP (issue 5, item 5).

The provider emulator answers 5xx or holds the connection past Herald's timeout; the real
Sender (thread pool, sessions, claim/lease) sends through the real provider modules:
- 5xx: the message backs off (each delay longer than the last), every attempt is counted and
  recorded as events, and after SENDER_MAX_ATTEMPTS it fails;
- a timeout is ambiguous: `unknown`, never resent;
- with SMS_FALLBACK_PROVIDERS, a message whose primary exhausts its attempts is sent by the
  fallback (another emulated provider), the switch recorded as an event, and the fallback's
  signed receipt reaches the live server and delivers it.
"""

import time

import pytest
from django.db import connection
from django.utils import timezone

from devtools.emulator.base import Emulator, Faults
from devtools.emulator.infobip import InfobipEmulator
from devtools.emulator.sinch import SinchEmulator
from messaging.models import Message, StatusEvent
from messaging.sender import Sender
from messaging.services import messages
from messaging.status import Status

pytestmark = pytest.mark.django_db(transaction=True)  # the sender's threads see committed rows


def sinch(base_url):
    return {
        "BACKEND": "messaging.providers.sinch.SinchProvider",
        "OPTIONS": {
            "SERVICE_PLAN_ID": "plan-outage",
            "API_TOKEN": "token-outage",
            "REGION": "eu",
            "FROM": "Herald",
            "WEBHOOK_SECRET": "sinch-secret",
            "BASE_URL": base_url,
            "WEBHOOK_SIGNING": "true",
        },
        "ENV": {},
    }


def infobip(base_url):
    return {
        "BACKEND": "messaging.providers.infobip.InfobipProvider",
        "OPTIONS": {
            "API_KEY": "infobip-key",
            "BASE_URL": base_url,
            "FROM": "Herald",
            "WEBHOOK_USERNAME": "infobip",
            "WEBHOOK_PASSWORD": "infobip-password",
            # per-message delivery reports carry no credentials: the token in the URL
            "WEBHOOK_TOKEN": "infobip-token",
            "WEBHOOK_SIGNING": "true",
        },
        "ENV": {},
    }


def configure(settings, primary_url, fallback_url=None):
    settings.SMS_PROVIDERS = {"sinch": sinch(primary_url)}
    settings.SMS_PROVIDERS_ENABLED = ["sinch"]
    settings.SMS_DEFAULT_PROVIDER = "sinch"
    settings.SMS_FALLBACK_PROVIDERS = []
    if fallback_url:
        settings.SMS_PROVIDERS["infobip"] = infobip(fallback_url)
        settings.SMS_PROVIDERS_ENABLED = ["sinch", "infobip"]
        settings.SMS_FALLBACK_PROVIDERS = ["infobip"]


def queue(to):
    return messages.create_outbound(to=to, body="outage test", source="api", provider="sinch")


@pytest.fixture
def sender():
    sender = Sender(concurrency=4, batch_size=20)
    yield sender
    sender.pool.shutdown()


def make_due(message):
    """Instead of sleeping through the backoff, bring the next attempt forward."""
    Message.objects.filter(pk=message.pk).update(next_attempt_at=timezone.now())


def test_5xx_backs_off_longer_each_time_then_fails(settings, sender):
    settings.SENDER_MAX_ATTEMPTS = 4
    settings.SENDER_BACKOFF_BASE = 1.0
    with Emulator(faults=Faults(rate_5xx=1.0), providers={"sinch": SinchEmulator}) as emu:
        configure(settings, emu.url)
        message = queue("+447700900124")
        delays = []
        for attempt in range(1, 4):
            assert sender.tick() == 1
            message.refresh_from_db()
            assert (message.status, message.attempts) == (Status.QUEUED, attempt)
            assert message.error_code == "http-503"
            retry = StatusEvent.objects.filter(message=message, status=Status.QUEUED).latest("id")
            assert retry.note.startswith(f"attempt {attempt} failed, retrying in")
            delay = (message.next_attempt_at - retry.received_at).total_seconds()
            # equal jitter: attempt n waits between base * 2^(n-2) and base * 2^(n-1)
            assert 2 ** (attempt - 2) - 0.05 <= delay <= 2 ** (attempt - 1) + 0.05, delay
            delays.append(delay)
            assert sender.tick() == 0  # not due yet: nobody sends it early
            make_due(message)
        assert delays == sorted(delays) and delays[0] < delays[-1]

        assert sender.tick() == 1
        message.refresh_from_db()
        assert (message.status, message.attempts) == (Status.FAILED, 4)
        assert message.error_text.startswith("gave up after 4 attempts")

        stats = emu.stats.snapshot()
        assert stats["requests"] == {"sinch": 4}  # one request per attempt, no more
        assert stats["faults"] == {"sinch:503": 4}
        assert stats["sends"] == {}
    trail = list(
        StatusEvent.objects.filter(message=message).order_by("id").values_list("status", flat=True)
    )
    assert trail == ["queued"] + ["sending", "queued"] * 3 + ["sending", "failed"]


def test_a_timeout_is_unknown_and_never_resent(settings, sender):
    settings.SENDER_HTTP_TIMEOUT = 0.3
    faults = Faults(rate_timeout=1.0, timeout_seconds=1.0)
    with Emulator(faults=faults, providers={"sinch": SinchEmulator}) as emu:
        configure(settings, emu.url)
        message = queue("+447700900125")
        assert sender.tick() == 1
        message.refresh_from_db()
        assert (message.status, message.error_code) == (Status.UNKNOWN, "timeout")
        for _ in range(3):
            assert sender.tick() == 0
        assert emu.stats.snapshot()["requests"] == {"sinch": 1}
    message.refresh_from_db()
    assert (message.status, message.attempts) == (Status.UNKNOWN, 1)
    assert StatusEvent.objects.filter(message=message, status=Status.SENDING).count() == 1


def test_mixed_outage_every_attempt_is_one_request_and_timeouts_stay_unknown(settings, sender):
    """30% 503s and 20% timeouts over 30 messages, until nothing is due."""
    settings.SENDER_MAX_ATTEMPTS = 10
    settings.SENDER_BACKOFF_BASE = 0.01
    settings.SENDER_HTTP_TIMEOUT = 0.3
    faults = Faults(rate_5xx=0.3, rate_timeout=0.2, timeout_seconds=1.0)
    with Emulator(faults=faults, seed=7, providers={"sinch": SinchEmulator}) as emu:
        configure(settings, emu.url)
        queued = [queue(f"+4477009{n:05d}") for n in range(30)]
        deadline = time.monotonic() + 60
        while Message.objects.filter(status__in=[Status.QUEUED, Status.SENDING]).exists():
            assert time.monotonic() < deadline
            sender.tick()
            time.sleep(0.02)
        stats = emu.stats.snapshot()

    final = {m.pk: m for m in Message.objects.all()}
    assert {m.status for m in final.values()} <= {Status.SENT, Status.UNKNOWN}
    attempts = StatusEvent.objects.filter(status=Status.SENDING).count()
    assert stats["requests"]["sinch"] == attempts  # no request outside a recorded attempt
    assert sum(final[m.pk].attempts for m in queued) == attempts
    retried = StatusEvent.objects.filter(status=Status.QUEUED, note__contains="retrying in")
    assert retried.count() == stats["faults"]["sinch:503"] > 0
    timeouts = [m for m in final.values() if m.status == Status.UNKNOWN]
    assert len(timeouts) == stats["faults"]["sinch:timeout"] > 0
    for m in timeouts:
        assert m.error_code == "timeout"
        last = StatusEvent.objects.filter(message=m).latest("id")
        assert last.status == Status.UNKNOWN  # nothing after it: never resent
        assert m.to_number not in stats["sends"].get("sinch", {})
    for m in final.values():
        if m.status == Status.SENT:
            assert stats["sends"]["sinch"][m.to_number] == 1


def test_failover_to_the_fallback_provider_end_to_end(settings, sender, public_url):
    settings.SENDER_MAX_ATTEMPTS = 3
    settings.SENDER_BACKOFF_BASE = 0.01
    # SQLite locks the whole database across threads: let the send commit before the receipt.
    delay = 0 if connection.vendor == "postgresql" else 0.5
    down = Emulator(faults=Faults(rate_5xx=1.0), providers={"sinch": SinchEmulator})
    backup = Emulator(receipt_delay=delay, providers={"infobip": InfobipEmulator})
    with down, backup:
        configure(settings, down.url, fallback_url=backup.url)
        message = queue("+447700900126")
        deadline = time.monotonic() + 20
        while message.status != Status.SENT:
            assert time.monotonic() < deadline, message.status
            sender.tick()
            message.refresh_from_db()
            time.sleep(0.02)
        assert backup.wait_idle(timeout=15)
        down_stats, backup_stats = down.stats.snapshot(), backup.stats.snapshot()

    message.refresh_from_db()
    assert message.provider == "infobip"
    assert message.status == Status.DELIVERED  # the fallback's receipt, over real HTTP
    assert message.attempts == 1  # counted afresh on the fallback
    assert down_stats["requests"] == {"sinch": 3} and down_stats["sends"] == {}
    assert backup_stats["sends"] == {"infobip": {"+447700900126": 1}}

    switch = StatusEvent.objects.get(message=message, note__startswith="failover")
    assert switch.note == "failover: sinch exhausted its attempts, switching to infobip"
    assert switch.error_code == "http-503"
    notes = list(
        StatusEvent.objects.filter(message=message, status=Status.SENDING)
        .order_by("id")
        .values_list("note", flat=True)
    )
    assert notes == [
        "attempt 1 via sinch",
        "attempt 2 via sinch",
        "attempt 3 via sinch",
        "attempt 1 via infobip",
    ]
    assert StatusEvent.objects.filter(message=message, source="webhook").exists()
