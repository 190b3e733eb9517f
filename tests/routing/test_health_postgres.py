"""Provider health under concurrent senders, on real PostgreSQL: the counters' upsert loses no
count, one probe slot goes to one sender, one outage opens one circuit (one audit event)."""

from collections import Counter
from datetime import timedelta

import pytest
from django.utils import timezone

from messaging.models import ProviderHealth, ProviderHealthEvent, ProviderSendBucket
from messaging.services import provider_health
from tests.test_concurrency_postgres import run_threads

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]


def test_concurrent_upserts_lose_no_count(on_postgres):
    slice_start = provider_health._slice(timezone.now())
    run_threads(lambda _: provider_health._upsert("sinch", slice_start, Counter(ok=1, http_5xx=2)),
                list(range(400)))  # fmt: skip
    [bucket] = ProviderSendBucket.objects.all()
    assert (bucket.ok, bucket.http_5xx) == (400, 800)


def test_one_probe_slot_goes_to_one_sender(on_postgres, settings):
    settings.ROUTING_CIRCUIT_OPEN_SECONDS = 30
    settings.ROUTING_PROBE_INTERVAL_SECONDS = 60
    since = timezone.now() - timedelta(seconds=31)
    ProviderHealth.objects.create(provider="sinch", state="open", state_since=since)
    granted = []
    run_threads(lambda _: granted.append(provider_health.claim_probe("sinch")), list(range(16)))
    assert granted.count(True) == 1 and len(granted) == 16
    assert ProviderHealthEvent.objects.filter(kind="half_open").count() == 1


def test_one_outage_opens_one_circuit(on_postgres, settings):
    settings.ROUTING_CIRCUIT_MIN_REQUESTS = 10
    now = timezone.now()
    ProviderSendBucket.objects.create(provider="sinch", slice_start=provider_health._slice(now),
                                      ok=2, http_5xx=20)  # fmt: skip
    run_threads(lambda _: provider_health._judge_circuit("sinch", Counter(http_5xx=1), now),
                list(range(8)))  # fmt: skip
    assert ProviderHealth.objects.get(pk="sinch").state == "open"
    assert ProviderHealthEvent.objects.filter(kind="open").count() == 1
