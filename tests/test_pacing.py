"""Shared send pacing: slots 1/rate apart whoever asks, no burst after idle, and the sender's
limiter a set headroom under each provider's limit; a throttled send leaves a gap."""

import threading
import time

import pytest
from django.db import connection

from messaging import sender
from messaging.providers.base import RetryableSendError
from messaging.providers.sandbox import SandboxProvider
from messaging.services import messages
from messaging.services.pacing import reserve_slot
from messaging.services.sending import claim_due
from tests.sending import send_one

pytestmark = pytest.mark.django_db(transaction=True)


def test_slots_are_spaced_and_never_in_the_past():
    first = reserve_slot("p", rate=10, now=1000.0)
    assert first == pytest.approx(1000.0)
    assert reserve_slot("p", rate=10, now=1000.0) == pytest.approx(1000.1)
    assert reserve_slot("p", rate=10, now=1000.05) == pytest.approx(1000.2)
    # idle for a while: the next slot is now, not a backlog of past slots to burst through
    assert reserve_slot("p", rate=10, now=2000.0) == pytest.approx(2000.0)
    assert reserve_slot("other", rate=10, now=2000.0) == pytest.approx(2000.0)


def test_concurrent_reservations_are_exactly_one_interval_apart():
    slots, lock = [], threading.Lock()

    def take():
        try:
            for _ in range(25):
                slot = reserve_slot("shared", rate=50, now=5000.0)
                with lock:
                    slots.append(slot)
        finally:
            connection.close()

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    slots.sort()
    assert len(slots) == 100
    gaps = [b - a for a, b in zip(slots, slots[1:], strict=False)]
    assert min(gaps) == pytest.approx(0.02) and max(gaps) == pytest.approx(0.02)


@pytest.mark.parametrize(("headroom", "paced"), [(0.05, 95.0), (0.0, 100.0)])
def test_the_limiter_paces_the_headroom_under_the_providers_limit(
    settings, monkeypatch, headroom, paced
):
    settings.SENDER_RATE_HEADROOM = headroom
    settings.SMS_PROVIDERS = {**settings.SMS_PROVIDERS, "limited": {"RATE_LIMIT": 100}}
    asked = []
    monkeypatch.setattr(sender, "wait_for_slot", lambda provider, rate: asked.append(rate))
    limiter = sender.RateLimiter()
    limiter.wait("limited")
    limiter.wait("sandbox")  # no RATE_LIMIT: not paced at all
    assert asked == [pytest.approx(paced)]


@pytest.mark.parametrize(("throttled", "gap"), [(True, 1), (False, 0)])
def test_a_throttled_send_leaves_one_slot_unused_for_every_sender(
    settings, monkeypatch, throttled, gap
):
    settings.SENDER_RATE_HEADROOM = 0
    sandbox = settings.SMS_PROVIDERS["sandbox"]
    settings.SMS_PROVIDERS = {**settings.SMS_PROVIDERS, "sandbox": {**sandbox, "RATE_LIMIT": 1}}

    def too_fast(self, sms, session):
        raise RetryableSendError("HTTP 429", code="429", throttled=throttled)

    monkeypatch.setattr(SandboxProvider, "send", too_fast)
    messages.create_outbound(to="+447911123457", body="hello", source="api")
    [claimed] = claim_due(1, "test")
    start = time.time()
    # (absolute tolerances: relative to a unix time, pytest.approx would allow half an hour)
    assert reserve_slot("sandbox", rate=1, now=start) == pytest.approx(start, abs=1e-3)
    assert send_one(claimed, session=None, owner="test") == "queued"  # retried later
    # the next sender's slot: one second on, or two when the throttled send left a gap
    assert reserve_slot("sandbox", rate=1, now=start) == pytest.approx(start + 1 + gap, abs=1e-3)
