"""Provider health shared through the database: counters, circuits, probes, demotion, the
routing page (issue 16, item 2)."""

import time
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from messaging.models import (
    Message,
    ProviderHealth,
    ProviderHealthEvent,
    ProviderSendBucket,
    StatusEvent,
)
from messaging.providers.base import AmbiguousSendError, PermanentSendError, RetryableSendError
from messaging.services import messages, provider_health, sending
from messaging.status import Status

pytestmark = pytest.mark.django_db

GB = "+447700900123"


def retryable(code="http-503", status=503):
    exc = RetryableSendError("down", code=code)
    exc.http_status = status
    return exc


def count(provider, ok=0, errors=0):
    for _ in range(ok):
        provider_health.note(provider, "ok")
    for _ in range(errors):
        provider_health.note_error(provider, retryable())


@pytest.fixture
def quick(four_providers):
    s = four_providers
    s.ROUTING_HEALTH_FLUSH_SECONDS = 3600  # flush only when the test says so
    s.ROUTING_CIRCUIT_MIN_REQUESTS = 10
    s.ROUTING_CIRCUIT_ERROR_RATE = 0.5
    s.ROUTING_CIRCUIT_OPEN_SECONDS = 30
    s.ROUTING_PROBE_INTERVAL_SECONDS = 2
    s.ROUTING_PROBES_TO_CLOSE = 3
    s.ROUTING_RECEIPT_EVALUATE_SECONDS = 3600
    # both intervals start now: no flush or receipt evaluation the test does not ask for
    provider_health._clock.update(flushed=time.monotonic(), receipts=time.monotonic())
    return s


def test_outcomes_are_classified():
    assert provider_health.outcome_of(retryable()) == "http_5xx"
    assert provider_health.outcome_of(retryable("connect", None)) == "refused"
    assert provider_health.outcome_of(AmbiguousSendError("x", code="timeout")) == "timeouts"
    assert provider_health.outcome_of(RetryableSendError("x", throttled=True)) == "throttled"
    assert provider_health.outcome_of(PermanentSendError("x", code="bad-number")) == "rejected"


def test_counters_are_one_upserted_row_per_provider_and_slice(quick, django_assert_max_num_queries):
    count("sinch", ok=5, errors=3)
    count("infobip", ok=2)
    provider_health.flush()
    count("sinch", ok=1)
    provider_health.flush()
    rows = {b.provider: b for b in ProviderSendBucket.objects.all()}
    assert len(rows) in (2, 3)  # a flush may straddle a slice boundary
    sinch = ProviderSendBucket.objects.filter(provider="sinch")
    assert sum(b.ok for b in sinch) == 6 and sum(b.http_5xx for b in sinch) == 3
    assert rows["infobip"].ok == 2


def test_errors_over_the_threshold_open_the_circuit_with_an_audited_event(quick):
    count("sinch", ok=6, errors=3)  # 9 requests: under the minimum
    provider_health.flush()
    assert not ProviderHealth.objects.filter(provider="sinch", state="open").exists()
    count("sinch", ok=0, errors=4)  # 7 of 13 failed
    provider_health.flush()
    health = ProviderHealth.objects.get(provider="sinch")
    assert health.state == "open"
    [event] = ProviderHealthEvent.objects.all()
    assert (event.provider, event.kind) == ("sinch", "open")
    assert event.reason.startswith("7 of 13 sends failed (54%)")
    assert event.figures["http_5xx"] == 7 and event.figures["ok"] == 6


def test_open_half_open_probes_close(quick):
    now = timezone.now()
    ProviderHealth.objects.create(provider="sinch", state="open", state_since=now)
    assert not provider_health.claim_probe("sinch", now=now + timedelta(seconds=29))
    later = now + timedelta(seconds=31)
    assert provider_health.claim_probe("sinch", now=later)  # becomes half-open: one probe
    assert not provider_health.claim_probe("sinch", now=later + timedelta(seconds=1))
    assert provider_health.claim_probe("sinch", now=later + timedelta(seconds=2.1))
    assert ProviderHealth.objects.get(pk="sinch").state == "half_open"
    count("sinch", ok=2)
    provider_health.flush()
    assert ProviderHealth.objects.get(pk="sinch").state == "half_open"
    count("sinch", ok=1)
    provider_health.flush()
    assert ProviderHealth.objects.get(pk="sinch").state == "closed"
    kinds = list(ProviderHealthEvent.objects.order_by("id").values_list("kind", flat=True))
    assert kinds == ["half_open", "close"]
    # the outage's counters do not reopen it: the window starts at the close
    count("sinch", ok=1)
    provider_health.flush()
    assert ProviderHealth.objects.get(pk="sinch").state == "closed"


def test_a_failed_probe_reopens(quick):
    since = timezone.now() - timedelta(seconds=60)
    ProviderHealth.objects.create(provider="sinch", state="open", state_since=since)
    assert provider_health.claim_probe("sinch")
    count("sinch", errors=1)
    provider_health.flush()
    health = ProviderHealth.objects.get(pk="sinch")
    assert health.state == "open" and health.effective_state() == "open"
    assert ProviderHealthEvent.objects.latest("id").reason == "a probe failed (1 errors)"


def _sent(provider, n, *, delivered_after=None, status=Status.DELIVERED, age=600):
    now = timezone.now()
    for i in range(n):
        m = messages.create_outbound(to=f"+4477009{i:05d}", body="x", source="api",
                                     provider=provider)  # fmt: skip
        sent_at = now - timedelta(seconds=age)
        done = sent_at + timedelta(seconds=delivered_after) if delivered_after is not None else None
        Message.objects.filter(pk=m.pk).update(status=status, sent_at=sent_at, completed_at=done)


def test_slow_receipts_demote_and_recovery_restores(quick):
    quick.ROUTING_RECEIPT_MIN_SAMPLE = 20
    quick.ROUTING_DEMOTE_LATENCY_P95 = 120
    _sent("sinch", 18, delivered_after=10)
    _sent("sinch", 4, delivered_after=400)  # 4 of 22 slow: p95 is 400 s
    provider_health.evaluate_receipts()
    health = ProviderHealth.objects.get(pk="sinch")
    assert health.demoted and health.latency_p95 == 400 and health.delivery_rate == 1.0
    event = ProviderHealthEvent.objects.get(kind="demote")
    assert event.reason == "latency p95 400s > 120s"
    # the next evaluation with fast receipts restores it
    Message.objects.filter(provider="sinch").update(
        completed_at=timezone.now() - timedelta(seconds=590)
    )
    ProviderHealth.objects.filter(pk="sinch").update(receipts_checked_at=None)
    provider_health.evaluate_receipts()
    assert not ProviderHealth.objects.get(pk="sinch").demoted
    assert ProviderHealthEvent.objects.filter(kind="restore").count() == 1


def test_a_low_delivery_rate_demotes(quick):
    quick.ROUTING_RECEIPT_MIN_SAMPLE = 20
    _sent("infobip", 15, delivered_after=5)
    _sent("infobip", 10, status=Status.FAILED)
    provider_health.evaluate_receipts()
    health = ProviderHealth.objects.get(pk="infobip")
    assert health.demoted and health.delivery_rate == 0.6
    assert ProviderHealthEvent.objects.get(kind="demote").reason == "delivery rate 60% < 80%"


def test_snapshot_for_metrics(quick):
    count("sinch", ok=4, errors=1)
    provider_health.flush()
    ProviderHealth.objects.filter(pk="sinch").update(demoted=True)
    by_name = {row["provider"]: row for row in provider_health.snapshot()}
    assert set(by_name) == {"sandbox", "sinch", "infobip", "vonage-sms"}
    sinch = by_name["sinch"]
    assert sinch["state"] == "closed" and sinch["demoted"] and sinch["weight_factor"] == 0.1
    assert sinch["last_hour"] == {"ok": 4, "http_5xx": 1, "timeouts": 0, "refused": 0,
                                  "throttled": 0, "rejected": 0}  # fmt: skip
    assert by_name["infobip"]["last_hour"]["ok"] == 0


def test_claim_moves_routed_messages_off_an_open_circuit(quick):
    quick.SMS_ROUTES = "GB: sinch 70, infobip 30"
    routed = messages.create_outbound(to=GB, body="x", source="api")
    Message.objects.filter(pk=routed.pk).update(provider="sinch")
    pinned = messages.create_outbound(to=GB, body="x", source="api", provider="sinch")
    ProviderHealth.objects.create(provider="sinch", state="open", state_since=timezone.now())
    provider_health.reset_caches()  # as the cache would after ROUTING_HEALTH_CACHE_SECONDS
    claimed = {m.pk: m for m in sending.claim_due(10, "test-owner")}
    assert claimed[routed.pk].provider == "infobip"
    assert claimed[pinned.pk].provider == "sinch"  # named by the caller: never moved
    routed.refresh_from_db()
    assert routed.provider == "infobip"
    move = StatusEvent.objects.get(message=routed, note__startswith="rerouted")
    assert move.note.startswith("rerouted from sinch (open): route GB")
    assert move.raw_payload["route"]["chosen"] == "infobip"
    assert StatusEvent.objects.filter(message=routed, note="attempt 1 via infobip").exists()


def test_a_half_open_provider_gets_a_trickle_of_probes(quick):
    quick.SMS_ROUTES = "GB: sinch 50, infobip 50"
    ProviderHealth.objects.create(
        provider="sinch", state="open", state_since=timezone.now() - timedelta(seconds=60)
    )
    created = [messages.create_outbound(to=GB, body="x", source="api") for _ in range(5)]
    assert {m.provider for m in created} == {"infobip"}  # accept time: no probe slots spent
    claimed = sending.claim_due(10, "test-owner")
    assert sorted(m.provider for m in claimed) == ["infobip"] * 4 + ["sinch"]
    assert ProviderHealthEvent.objects.get().kind == "half_open"


def test_the_routing_page_needs_its_permission(quick, client, django_user_model):
    count("sinch", ok=3, errors=2)
    provider_health.flush()
    ProviderHealth.objects.filter(pk="sinch").update(state="open", state_since=timezone.now())
    ProviderHealthEvent.objects.create(provider="sinch", kind="open", reason="5 of 9 failed")
    user = django_user_model.objects.create_user("ops", password="pw", is_staff=True)
    client.force_login(user)
    url = "/admin/messaging/providerhealth/"
    assert client.get(url).status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="view_routing"))
    page = client.get(url)
    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-provider="sinch" data-state="open"' in html
    assert "5 of 9 failed" in html
    assert 'data-provider="infobip" data-state="closed"' in html


def test_old_counters_are_purged_at_the_receipt_evaluation(quick):
    now = timezone.now()
    ProviderSendBucket.objects.create(provider="sinch", slice_start=now - timedelta(hours=3), ok=1)
    recent = ProviderSendBucket.objects.create(
        provider="sinch", slice_start=now - timedelta(minutes=50), ok=1
    )
    provider_health.evaluate_receipts(now)
    assert list(ProviderSendBucket.objects.values_list("pk", flat=True)) == [recent.pk]


def test_a_message_scheduled_long_before_is_outside_the_sample(quick):
    _sent("sinch", 3, delivered_after=5)
    Message.objects.filter(provider="sinch").update(created_at=timezone.now() - timedelta(hours=3))
    assert provider_health.receipt_figures("sinch", timezone.now())["final"] == 0
