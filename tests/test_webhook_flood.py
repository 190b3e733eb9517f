"""Refused requests cannot fill the database (issue 12, item 5).

A flood of forged (unsigned) 10 KB posts interleaved with genuine signed receipts: the refused
ones keep at most the budget of rows a minute per provider, each with headers, size, hash and at
most the first 2 KB; the rest are only counted (one RefusedWebhookTally row per provider per
minute). Every genuine receipt in the flood is stored and applied.
"""

import hashlib
import json
import time

import pytest
from django.core.cache import cache
from django.db.models import Sum
from django.db.models.functions import Length
from django.urls import reverse

from config.test_settings import TEST_SANDBOX_SECRET
from messaging.models import (
    Client,
    Message,
    MessagePart,
    RefusedWebhookTally,
    StatusEvent,
    WebhookRequest,
)
from messaging.providers.sandbox import sign
from messaging.services.webhooks import REFUSED_BODY_BYTES

pytestmark = pytest.mark.django_db

URL = "/webhooks/sandbox/status/"
BUDGET = 20


@pytest.fixture
def budget(settings):
    settings.WEBHOOK_REFUSED_STORED_PER_MINUTE = BUDGET
    settings.RATELIMIT_ENABLE = False  # this test is about storage, not the per-source limit
    cache.clear()
    yield
    cache.clear()


def sent(pid):
    m = Message.objects.create(client=Client.objects.default(), to_number="+447700900123",
                               body="x", provider="sandbox", status="sent",
                               provider_message_id=pid)  # fmt: skip
    MessagePart.objects.create(message=m, index=0, provider="sandbox", provider_message_id=pid)
    return m


def genuine(client, pid):
    body = json.dumps({"message_id": pid, "status": "delivered", "error_code": "",
                       "timestamp": "2026-11-23T10:00:00+00:00"}).encode()  # fmt: skip
    stamp = str(int(time.time()))
    headers = {"X-Sandbox-Timestamp": stamp,
               "X-Sandbox-Signature": sign(TEST_SANDBOX_SECRET, stamp, body)}  # fmt: skip
    return client.post(URL, body, content_type="application/json", headers=headers)


def forged(client, n):
    body = json.dumps({"message_id": f"x{n}", "status": "delivered", "pad": "A" * 10_000})
    return client.post(URL, body.encode(), content_type="application/json",
                       headers={"X-Sandbox-Timestamp": str(int(time.time())),
                                "X-Sandbox-Signature": "0" * 64})  # fmt: skip


def test_a_flood_of_forgeries_is_bounded_and_genuine_receipts_still_apply(client, budget):
    messages = [sent(f"g{i}") for i in range(10)]
    forgeries = 500
    for n in range(forgeries):
        assert forged(client, n).status_code == 401
        if n % 50 == 0:
            assert genuine(client, f"g{n // 50}").status_code == 200
    refused = WebhookRequest.objects.filter(authenticated=False)
    # at most the budget per minute (the run may straddle a minute boundary: two budgets)
    assert BUDGET <= refused.count() <= 2 * BUDGET
    stored_bytes = refused.aggregate(n=Sum(Length("body")))["n"]
    assert stored_bytes <= refused.count() * REFUSED_BODY_BYTES
    row = refused.first()
    assert row.body_size > 10_000 and len(bytes(row.body)) == REFUSED_BODY_BYTES
    assert row.body_sha256 and row.auth_error and row.headers
    counted = RefusedWebhookTally.objects.filter(provider="sandbox")
    assert counted.count() <= 2  # one row per provider per minute
    assert counted.aggregate(n=Sum("requests"))["n"] == forgeries - refused.count()
    assert counted.aggregate(n=Sum("bytes"))["n"] > 10_000 * (forgeries - 2 * BUDGET)
    # every genuine receipt in the flood: stored whole and applied
    assert WebhookRequest.objects.filter(authenticated=True).count() == 10
    for m in messages:
        m.refresh_from_db()
        assert m.status == "delivered"
    assert StatusEvent.objects.filter(source="webhook", applied=True).count() == 10


def test_an_authenticated_request_keeps_its_whole_body(client, budget):
    sent("g0")
    assert genuine(client, "g0").status_code == 200
    row = WebhookRequest.objects.get()
    assert row.body_size == len(bytes(row.body))
    assert row.body_sha256 == hashlib.sha256(bytes(row.body)).hexdigest()


def test_a_413_keeps_no_body_and_the_evidence_page_says_too_large(client, admin_client, budget,
                                                                  settings):  # fmt: skip
    settings.WEBHOOK_MAX_BODY_BYTES = 100
    r = client.post(URL, b"{" + b" " * 500 + b"}", content_type="application/json")
    assert r.status_code == 413
    row = WebhookRequest.objects.get()
    assert (row.state, row.body_size, bytes(row.body)) == ("too_large", 502, b"")
    page = admin_client.get(reverse("admin:messaging_webhookrequest_change", args=[row.pk]))
    text = page.content.decode()
    assert "it was too large" in text and "failed authentication" not in text.split(
        'id="herald-no-event"')[1][:400]  # fmt: skip


def test_the_evidence_page_of_a_forgery_says_failed_authentication(client, admin_client, budget):
    assert forged(client, 1).status_code == 401
    row = WebhookRequest.objects.get()
    page = admin_client.get(reverse("admin:messaging_webhookrequest_change", args=[row.pk]))
    assert "it failed authentication (signature mismatch)" in page.content.decode()


def test_the_evidence_page_of_a_duplicate_names_its_message(client, admin_client, budget):
    message = sent("g0")
    genuine(client, "g0")
    genuine(client, "g0")
    dup = WebhookRequest.objects.order_by("id").last()
    page = admin_client.get(reverse("admin:messaging_webhookrequest_change", args=[dup.pk]))
    text = page.content.decode()
    assert "duplicate" in text and str(message.pk)[:8] in text and "ignored" in text


def test_the_check_warns_when_stored_receipts_wait_with_no_applier(settings):
    from datetime import timedelta

    from django.utils import timezone

    from messaging.checks import stored_receipts_applied

    assert stored_receipts_applied(None, databases=["default"]) == []
    row = WebhookRequest.objects.create(provider="sandbox", kind="status", method="POST",
                                        path=URL, authenticated=True)  # fmt: skip
    assert stored_receipts_applied(None, databases=["default"]) == []  # just arrived
    WebhookRequest.objects.filter(pk=row.pk).update(
        received_at=timezone.now() - timedelta(minutes=5)
    )
    [warning] = stored_receipts_applied(None, databases=["default"])
    assert warning.id == "herald.W011" and "1 stored webhook request" in warning.msg


def test_the_deploy_check_warns_about_a_per_process_cache(settings):
    from messaging.checks import shared_webhook_counters

    settings.RATELIMIT_ENABLE = True
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    assert [w.id for w in shared_webhook_counters(None)] == ["herald.W010"]
    settings.CACHES = {"default": {"BACKEND": "django_redis.cache.RedisCache",
                                   "LOCATION": "redis://127.0.0.1:6379/3"}}  # fmt: skip
    assert shared_webhook_counters(None) == []
