"""Store-then-apply (WEBHOOK_APPLY_INLINE=false): the view stores and answers, the applier applies.

- the answer comes once the request is stored; the message moves only when the applier runs;
- unparseable bodies are still refused with 400 (stored invalid), parser bugs stored as failed;
- a failing batch falls back to row by row, so one bad row does not hold back the others;
- the sender's tick and `manage.py run_applier` drain what is pending;
- on PostgreSQL, appliers running at once never apply a row twice (SKIP LOCKED).
"""

import json
import threading
import time
from io import StringIO
from unittest import mock

import pytest
from django.core.management import call_command
from django.db import connection

from config.test_settings import TEST_SANDBOX_SECRET as SANDBOX_SECRET
from messaging import applier
from messaging.models import Client, Message, MessagePart, StatusEvent, WebhookRequest
from messaging.providers.sandbox import sign
from messaging.sender import Sender
from messaging.services import receipts

URL = "/webhooks/sandbox/status/"


@pytest.fixture
def deferred(settings):
    settings.WEBHOOK_APPLY_INLINE = False


def post(client, payload=None, body=None):
    body = body if body is not None else json.dumps(payload).encode()
    stamp = str(int(time.time()))
    headers = {
        "X-Sandbox-Timestamp": stamp,
        "X-Sandbox-Signature": sign(SANDBOX_SECRET, stamp, body),
    }
    return client.post(URL, body, content_type="application/json", headers=headers)


def sent(n=1, prefix="p"):
    out = []
    for i in range(n):
        m = Message.objects.create(client=Client.objects.default(),
                                   to_number="+447700900123", body="x", provider="sandbox",
                                   status="sent", provider_message_id=f"{prefix}{i}")  # fmt: skip
        MessagePart.objects.create(message=m, index=0, provider="sandbox",
                                   provider_message_id=f"{prefix}{i}")  # fmt: skip
        out.append(m)
    return out


def receipt(pid, status="delivered", second=0):
    return {"message_id": pid, "status": status, "error_code": "",
            "timestamp": f"2026-11-23T10:00:{second:02d}+00:00"}  # fmt: skip


@pytest.mark.django_db
def test_stored_and_answered_then_applied_by_the_applier(client, deferred):
    (message,) = sent()
    r = post(client, receipt("p0"))
    assert r.status_code == 200
    row = WebhookRequest.objects.get()
    assert (row.state, row.authenticated, row.report_count, row.response_status) == (
        "received", True, 1, 200)  # fmt: skip
    message.refresh_from_db()
    assert message.status == "sent"  # not applied yet
    done = applier.apply_pending()
    assert (done.rows, done.reports, done.failed_rows) == (1, 1, 0)
    message.refresh_from_db()
    row.refresh_from_db()
    assert message.status == "delivered"
    assert row.state == "processed"
    assert StatusEvent.objects.get(message=message, source="webhook").webhook_request == row
    assert applier.apply_pending().rows == 0  # nothing left


@pytest.mark.django_db
def test_unparseable_is_still_refused_with_400_and_stored(client, deferred):
    r = post(client, {"status": "delivered"})  # no message_id
    assert r.status_code == 400
    row = WebhookRequest.objects.get()
    assert (row.state, row.response_status) == ("invalid", 400)
    assert r.json()["id"] == row.pk
    assert applier.apply_pending().rows == 0  # never applied


@pytest.mark.django_db
def test_a_parser_bug_is_stored_failed_with_traceback_and_answered_2xx(client, deferred):
    from messaging.providers.sandbox import SandboxProvider

    with mock.patch.object(SandboxProvider, "parse_status_webhook", side_effect=KeyError("x")):
        r = post(client, receipt("p0"))
    assert r.status_code == 200  # stored: the provider need not retry; we replay after a fix
    row = WebhookRequest.objects.get()
    assert row.state == "failed"
    assert "KeyError" in row.error and "Traceback" in row.traceback


@pytest.mark.django_db
def test_a_failing_batch_falls_back_to_one_row_at_a_time(client, deferred):
    messages = sent(3)
    for i in range(3):
        assert post(client, receipt(f"p{i}")).status_code == 200
    real = receipts.apply

    def flaky(incoming, **kwargs):
        if len(incoming) > 1:
            raise RuntimeError("batch bug")
        if incoming[0].report.provider_message_id == "p1":
            raise RuntimeError("boom")
        return real(incoming, **kwargs)

    with mock.patch.object(receipts, "apply", side_effect=flaky):
        done = applier.apply_pending()
    assert (done.rows, done.failed_rows) == (3, 1)
    states = dict(WebhookRequest.objects.values_list("body", "state"))
    assert sorted(states.values()) == ["failed", "processed", "processed"]
    assert [Message.objects.get(pk=m.pk).status for m in messages] == [
        "delivered", "sent", "delivered"]  # fmt: skip
    failed = WebhookRequest.objects.get(state="failed")
    assert "boom" in failed.error


@pytest.mark.django_db
def test_inline_mode_applies_before_answering(client, settings):
    settings.WEBHOOK_APPLY_INLINE = True
    (message,) = sent()
    assert post(client, receipt("p0")).status_code == 200
    message.refresh_from_db()
    assert message.status == "delivered"
    assert WebhookRequest.objects.get().state == "processed"


@pytest.mark.django_db
def test_inline_mode_leaves_the_row_to_the_applier_if_applying_fails(client, settings):
    from django.db import OperationalError

    settings.WEBHOOK_APPLY_INLINE = True
    (message,) = sent()
    with mock.patch.object(applier, "_apply_rows", side_effect=OperationalError("gone")):
        assert post(client, receipt("p0")).status_code == 200  # stored, so acknowledged
    assert WebhookRequest.objects.get().state == "received"
    assert applier.drain().reports == 1
    message.refresh_from_db()
    assert message.status == "delivered"


@pytest.mark.django_db
def test_batches_are_bounded_by_reports(client, deferred):
    sent(5)
    for i in range(5):
        post(client, receipt(f"p{i}"))
    WebhookRequest.objects.update(report_count=100)  # as if each carried 100 reports
    assert applier.apply_pending(max_reports=250).rows == 2
    assert applier.apply_pending(max_reports=50).rows == 1  # at least one row always
    assert applier.drain().rows == 2


@pytest.mark.django_db
def test_drain_stops_at_a_partial_batch_and_says_when_more_may_wait(client, deferred):
    sent(5)
    for i in range(5):
        post(client, receipt(f"p{i}"))
    with mock.patch.object(applier, "apply_pending", wraps=applier.apply_pending) as claims:
        done = applier.drain(batch_size=2)
    assert (done.rows, done.full) == (5, False)
    assert claims.call_count == 3  # 2 + 2 + 1: no empty claim after the partial batch
    assert applier.apply_pending().full is False
    sent(1, prefix="q")
    post(client, receipt("q0"))
    post(client, receipt("q0", status="failed", second=1))
    assert applier.apply_pending(batch_size=1).full is True  # one left behind it


@pytest.mark.django_db(transaction=True)  # the loop closes stale connections
def test_the_worker_waits_for_receipts_to_gather_after_a_partial_batch(client, deferred, settings):
    """After a partial batch of receipts the loop pauses APPLIER_GATHER_SECONDS (not the idle
    poll interval, and not zero: each pass costs a dozen round trips however few it applies)."""
    settings.APPLIER_GATHER_SECONDS, settings.SENDER_POLL_INTERVAL = 0.03, 7.0
    sent(2)
    post(client, receipt("p0"))
    sender = Sender(concurrency=1, batch_size=5)
    pauses = []

    def sleep(seconds):
        pauses.append(seconds)
        if len(pauses) == 1:
            post(client, receipt("p1"))  # arrives while the worker waits
        else:
            sender.stopping = True

    with mock.patch("messaging.sender.time.sleep", side_effect=sleep):
        sender.run()
    assert pauses == [0.03, 0.03]
    assert Message.objects.filter(status="delivered").count() == 2


@pytest.mark.django_db(transaction=True)  # the tick closes stale connections
def test_the_sender_tick_applies_pending_requests(client, deferred):
    (message,) = sent()
    post(client, receipt("p0"))
    sender = Sender(concurrency=1, batch_size=1)
    try:
        sender.tick()
    finally:
        sender.pool.shutdown()
    message.refresh_from_db()
    assert message.status == "delivered"


@pytest.mark.django_db(transaction=True)  # the command closes stale connections
def test_run_applier_once_drains_and_reports(client, deferred):
    sent(3)
    for i in range(3):
        post(client, receipt(f"p{i}"))
    out = StringIO()
    call_command("run_applier", "--once", stdout=out)
    assert "3 request(s), 3 report(s), 0 failed" in out.getvalue()
    assert Message.objects.filter(status="delivered").count() == 3


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
def test_concurrent_appliers_never_apply_a_row_twice(client, deferred, on_postgres):
    messages = sent(60)
    for i in range(60):
        post(client, receipt(f"p{i}"))
        post(client, receipt(f"p{i}", "sent", second=1))  # a second, older-status receipt
    rows, errors = [], []
    barrier = threading.Barrier(4)

    def work():
        try:
            barrier.wait()
            while (done := applier.apply_pending(batch_size=7)).rows:
                rows.append(done.rows)
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sum(rows) == 120  # each row claimed by exactly one applier
    assert WebhookRequest.objects.filter(state="processed").count() == 120
    assert StatusEvent.objects.filter(source="webhook").count() == 120
    assert set(Message.objects.filter(pk__in=[m.pk for m in messages]).values_list(
        "status", flat=True)) == {"delivered"}  # fmt: skip


def test_deferred_apply_and_prepared_statements_are_the_production_defaults():
    from tests.test_operations import manage

    def setting(expression, **env):
        code = f"from django.conf import settings as s; print('=>', {expression})"
        result = manage("shell", "--no-imports", "-c", code, **env)
        return result.stdout.rpartition("=> ")[2].strip() or result.stderr

    assert setting("s.WEBHOOK_APPLY_INLINE, s.WEBHOOK_REFUSED_STORED_PER_MINUTE") == "False 60"
    pg = {"DATABASE_URL": "postgres://u@127.0.0.1:5432/x"}
    threshold = "s.DATABASES['default']['OPTIONS']['prepare_threshold']"
    assert setting(threshold, **pg) == "5"
    assert setting(threshold, DB_PREPARE_THRESHOLD="", **pg) == "None"  # behind old PgBouncer
