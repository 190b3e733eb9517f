"""Crash safety on real PostgreSQL (issue 5, item 4).

- A `run_sender` process killed with SIGKILL in the middle of a batch leaves no message stuck:
  after its leases expire, the next sender turns what it held into `unknown` (never resent) and
  sends the rest. The emulator (real HTTP, 300 ms latency) proves no destination got two
  requests.
- The database going away while a provider posts a receipt: the webhook answers 5xx (so the
  provider retries), and the retry, once the database is back, is stored and applied.
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest
import requests
from django.db import connection

from config.test_settings import TEST_SANDBOX_SECRET as SANDBOX_SECRET
from devtools.emulator.base import Emulator, Faults
from messaging.models import Message, StatusEvent, WebhookRequest
from messaging.providers.base import SendResult
from messaging.providers.sandbox import sign
from messaging.services import messages
from messaging.status import Status
from tests.sending import record_sent

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]

ROOT = Path(__file__).resolve().parent.parent
PLAN, TOKEN, SECRET = "plan-crash", "token-crash", "secret-crash"
LEASE_SECONDS = 2


def sinch_options(base_url):
    return {
        "SERVICE_PLAN_ID": PLAN,
        "API_TOKEN": TOKEN,
        "REGION": "eu",
        "FROM": "Herald",
        "WEBHOOK_SECRET": SECRET,
        "BASE_URL": base_url,
        "WEBHOOK_SIGNING": "true",
    }


def database_url() -> str:
    """The test database (pytest-django's `test_<name>`), as a subprocess reaches it."""
    db = connection.settings_dict
    host, port = db.get("HOST") or "127.0.0.1", db.get("PORT") or 5432
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{db['USER']}{password}@{host}:{port}/{db['NAME']}"


def sender_env(emulator_url, public_url) -> dict:
    """Production settings, configured from the environment only, as a deployment would be."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "SINCH_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        HERALD_READ_DOTENV="false",
        SECRET_KEY="crash-test-secret-key",
        DATABASE_URL=database_url(),
        SMS_PROVIDERS_ENABLED="sinch",
        SMS_DEFAULT_PROVIDER="sinch",
        SINCH_SERVICE_PLAN_ID=PLAN,
        SINCH_API_TOKEN=TOKEN,
        SINCH_FROM="Herald",
        SINCH_WEBHOOK_SECRET=SECRET,
        SINCH_BASE_URL=emulator_url,
        PUBLIC_BASE_URL=public_url,
        SENDER_LEASE_SECONDS=str(LEASE_SECONDS),
        SENDER_CONCURRENCY="4",
        SENDER_BATCH_SIZE="20",
        SENDER_POLL_INTERVAL="0.1",
        LOG_LEVEL="WARNING",
    )
    return env


def run_sender(env, *args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "run_sender", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def emulator_sends(emu) -> dict:
    """Per-destination accepted sends, read over HTTP as an operator would."""
    stats = requests.get(f"{emu.url}/_emulator/stats", timeout=5).json()
    return stats["sends"].get("sinch", {})


def test_sigkill_mid_batch_leaves_nothing_stuck_and_nothing_sent_twice(
    on_postgres, settings, live_server
):
    count = 40
    # Receipts are held back (a long delay): the statuses checked are the sender's own.
    with Emulator(
        receipt_delay=3600,
        webhook_base=live_server.url,
        faults=Faults(latency_ms=300),
        providers=_sinch_only(),
    ) as emu:
        settings.SMS_PROVIDERS = {
            "sinch": {
                "BACKEND": "messaging.providers.sinch.SinchProvider",
                "OPTIONS": sinch_options(emu.url),  # what the emulator checks requests against
                "ENV": {},
            }
        }
        settings.SMS_PROVIDERS_ENABLED = ["sinch"]
        settings.SMS_DEFAULT_PROVIDER = "sinch"
        queued = [
            messages.create_outbound(
                to=f"+4477009{n:05d}", body=f"crash test {n}", source="api", provider="sinch"
            )
            for n in range(count)
        ]
        env = sender_env(emu.url, live_server.url)

        worker = run_sender(env)
        try:
            # Kill once part of the first batch has gone out and more is in flight.
            deadline = time.monotonic() + 60
            while len(emulator_sends(emu)) < 6:
                assert worker.poll() is None, worker.stderr.read().decode()[-3000:]
                assert time.monotonic() < deadline, "the sender never got going"
                time.sleep(0.02)
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=10)
        assert worker.returncode == -signal.SIGKILL

        at_kill = Counter(Message.objects.values_list("status", flat=True))
        stuck = Message.objects.filter(status=Status.SENDING)
        assert stuck.exists(), f"the kill was not mid-batch: {at_kill}"
        assert Message.objects.filter(status=Status.SENT).exists(), at_kill
        held_at_kill = set(stuck.values_list("id", flat=True))

        time.sleep(LEASE_SECONDS + 0.5)  # the dead sender's leases run out
        time.sleep(0.5)  # in-flight requests of the dead process reach the emulator
        recovery = run_sender(env, "--once")
        out, err = recovery.communicate(timeout=90)
        assert recovery.returncode == 0, err.decode()[-3000:]

        sends = emulator_sends(emu)
        final = {m.pk: m for m in Message.objects.all()}
        assert len(final) == count
        statuses = {m.status for m in final.values()}
        assert statuses <= {Status.SENT, Status.UNKNOWN}, statuses  # no faults: nothing retried
        assert Status.SENDING not in statuses

        for message in queued:
            m = final[message.pk]
            requests_seen = sends.get(m.to_number, 0)
            assert requests_seen <= 1, f"{m.to_number} was sent {requests_seen} times"
            if m.status == Status.SENT:
                assert requests_seen == 1
                assert m.provider_message_id
            else:  # what the dead sender held: ambiguous, left to receipts and reconciliation
                assert m.pk in held_at_kill
                assert m.error_code == "lease-expired"
                assert StatusEvent.objects.filter(
                    message=m, status=Status.UNKNOWN, error_code="lease-expired"
                ).exists()
                assert m.attempts == 1  # claimed once, never again
        # every message the dead sender held became unknown, and only those
        unknown = {pk for pk, m in final.items() if m.status == Status.UNKNOWN}
        assert unknown == held_at_kill
        # the ambiguity was real: some of them did reach the provider before the kill
        assert any(sends.get(final[pk].to_number) for pk in unknown)


def _sinch_only():
    from devtools.emulator.sinch import SinchEmulator

    return {"sinch": SinchEmulator}


# --- the database unavailable during a webhook ----------------------------------------------

URL = "/webhooks/sandbox/status/"


def post_receipt(base_url, payload) -> requests.Response:
    body = json.dumps(payload).encode()
    stamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "X-Sandbox-Timestamp": stamp,
        "X-Sandbox-Signature": sign(SANDBOX_SECRET, stamp, body),
    }
    return requests.post(base_url + URL, data=body, headers=headers, timeout=30)


def admin_connection():
    db = connection.settings_dict
    return psycopg.connect(
        host=db.get("HOST") or "127.0.0.1",
        port=db.get("PORT") or 5432,
        user=db["USER"],
        password=db.get("PASSWORD") or None,
        dbname="postgres",
        autocommit=True,
    )


def test_database_down_during_a_webhook_is_5xx_and_the_retry_is_accepted(on_postgres, live_server):
    """A real outage, not a mock: the live server's connection is terminated and new ones are
    refused (ALLOW_CONNECTIONS false), as during a database restart or failover."""
    message = messages.create_outbound(to="+447911123457", body="x", source="api")
    Message.objects.filter(pk=message.pk).update(status=Status.SENDING)
    record_sent(message, SendResult(provider_message_ids=["p-outage"]))
    receipt = {"message_id": "p-outage", "client_ref": "", "status": "delivered",
               "error_code": "", "timestamp": "2026-11-23T10:00:00+00:00"}  # fmt: skip
    accepted = {**receipt, "status": "accepted", "timestamp": "2026-11-23T09:59:00+00:00"}
    # The live server holds a persistent connection (CONN_MAX_AGE) once it has served one.
    assert post_receipt(live_server.url, accepted).status_code == 200

    name = connection.settings_dict["NAME"]
    connection.ensure_connection()
    with admin_connection() as admin:
        try:
            admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> %s",
                [name, connection.connection.info.backend_pid],
            )
            # the dead persistent connection, then a refused new one: both are 5xx
            answers = [post_receipt(live_server.url, receipt) for _ in range(2)]
        finally:
            admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
    assert [r.status_code for r in answers] == [503, 503], [r.text for r in answers]

    message.refresh_from_db()
    assert message.status == Status.SENT  # nothing acknowledged, nothing applied
    assert WebhookRequest.objects.count() == 1  # only the warm-up receipt

    retry = post_receipt(live_server.url, receipt)  # the provider's retry
    assert retry.status_code == 200
    message.refresh_from_db()
    assert message.status == Status.DELIVERED
    assert WebhookRequest.objects.count() == 2
    assert StatusEvent.objects.filter(message=message, status=Status.DELIVERED).count() == 1
