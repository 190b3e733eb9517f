"""Operations: health endpoints, deploy checks, provider configuration checks, JSON logs that
never carry secrets or message bodies."""

import json
import logging
import os
import subprocess
import sys
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connection
from django.utils import timezone

from messaging.logging import RedactSecretsFilter, redact
from messaging.models import WorkerHeartbeat
from messaging.services.heartbeat import Heartbeat

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.django_db
def test_healthz_and_readyz(client):
    Heartbeat("host:1:sender", "sender").beat()
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {
        "status": "ok", "database": "ok", "cache": "ok", "worker": "ok"
    }  # fmt: skip


def test_readyz_reports_an_unreachable_database(client, monkeypatch):
    def broken():
        raise RuntimeError("database down")

    monkeypatch.setattr(connection, "cursor", broken)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    assert "database" in response.json()["failing"]
    assert client.get("/healthz").status_code == 200  # liveness checks nothing else


@pytest.mark.django_db
def test_readyz_fails_without_a_recent_sender_heartbeat(client, settings):
    settings.READINESS_HEARTBEAT_SECONDS = 60
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["failing"] == ["worker"]
    assert "no sender" in response.json()["worker"]
    Heartbeat("host:1:applier", "applier").beat()  # an applier alone sends nothing
    assert client.get("/readyz").status_code == 503
    beat = Heartbeat("host:1:sender", "sender")
    beat.beat()
    assert client.get("/readyz").status_code == 200
    WorkerHeartbeat.objects.filter(kind="sender").update(
        last_seen=timezone.now() - timedelta(seconds=90)
    )
    stale = client.get("/readyz")
    assert stale.status_code == 503 and stale.json()["failing"] == ["worker"]
    assert "no sender heartbeat for 9" in stale.json()["worker"]
    settings.READINESS_HEARTBEAT_SECONDS = 0  # switched off
    assert client.get("/readyz").status_code == 200
    beat.stop()  # a clean exit removes the row
    assert not WorkerHeartbeat.objects.filter(kind="sender").exists()


@pytest.mark.django_db
def test_heartbeats_are_written_at_most_every_interval(settings):
    settings.HEARTBEAT_INTERVAL = 30
    beat = Heartbeat("host:2:x", "sender")
    assert beat.beat() is True
    assert beat.beat() is False  # within the interval: no write
    assert beat.beat(force=True) is True
    settings.HEARTBEAT_INTERVAL = 0
    assert beat.beat() is True


@pytest.mark.django_db(transaction=True)
def test_the_sender_loop_heartbeats(settings):
    from messaging.sender import Sender

    sender = Sender(concurrency=1, batch_size=1)
    try:
        sender.tick()
    finally:
        sender.pool.shutdown()
    row = WorkerHeartbeat.objects.get()
    assert (row.kind, row.worker_id) == ("sender", sender.owner)


@pytest.mark.django_db(transaction=True)
def test_the_applier_loop_heartbeats(monkeypatch):
    from messaging.services import heartbeat

    seen = []
    real = heartbeat.Heartbeat.stop
    monkeypatch.setattr(
        heartbeat.Heartbeat, "stop",
        lambda self: (seen.extend(WorkerHeartbeat.objects.values_list("kind", flat=True)),
                      real(self)),
    )  # fmt: skip
    call_command("run_applier", "--once", stdout=StringIO())
    assert seen == ["applier"]
    assert not WorkerHeartbeat.objects.exists()  # removed on a clean exit


@pytest.mark.django_db
@pytest.mark.parametrize("location", ["redis://127.0.0.1:18499/4", "redis://127.0.0.1:6379/4"])
def test_readyz_checks_the_redis_cache(client, settings, location):
    """Port 18499 has nothing listening: the cache check fails and names itself. On 6379 the
    test's Redis (db 4) answers."""
    import redis

    if location.endswith(":6379/4"):
        try:
            redis.Redis.from_url(location, socket_connect_timeout=1).ping()
        except redis.RedisError:
            pytest.skip("no Redis on 127.0.0.1:6379")
    Heartbeat("host:1:sender", "sender").beat()
    settings.CACHES = {
        "default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": location,
                    "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1}}
    }  # fmt: skip
    response = client.get("/readyz")
    if location.endswith(":18499/4"):
        assert response.status_code == 503
        assert response.json()["failing"] == ["cache"]
    else:
        assert response.status_code == 200, response.json()


def production_env(**extra):
    # A clean environment: nothing the test settings exported may leak into "production".
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        HERALD_READ_DOTENV="false",
        SECRET_KEY="x" * 20 + "-production-secret-key-with-enough-entropy-0123456789",
        ALLOWED_HOSTS="herald.example.com",
        **extra,
    )
    return env


def manage(*args, **env):
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=production_env(**env),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


OWN_SANDBOX = {"SMS_PROVIDERS_ENABLED": "sandbox", "SANDBOX_WEBHOOK_SECRET": "our-own-secret-42"}


def test_check_deploy_is_clean_under_production_settings():
    # With a shared cache, as the README asks for several processes (herald.W010 otherwise).
    result = manage("check", "--deploy", "--fail-level", "WARNING",
                    CACHE_URL="redis://127.0.0.1:6379/3", **OWN_SANDBOX)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_warns_when_webhook_signing_is_off():
    result = manage("check", "--deploy", SANDBOX_WEBHOOK_SIGNING="x", SANDBOX_WEBHOOK_SECRET="own1",
                    SMS_PROVIDERS_ENABLED="sandbox,twilio", TWILIO_ACCOUNT_SID="AC1",
                    TWILIO_AUTH_TOKEN="t", TWILIO_FROM="+14155550100",
                    TWILIO_WEBHOOK_SIGNING="false")  # fmt: skip
    assert "herald.W001" in result.stdout + result.stderr
    assert "twilio" in result.stdout + result.stderr


def test_production_refuses_to_start_without_secret_key():
    env = production_env()
    del env["SECRET_KEY"]
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


@pytest.mark.django_db
def test_enabled_provider_missing_a_variable_fails_check(settings):
    settings.SMS_PROVIDERS_ENABLED = ["sandbox", "sinch"]
    settings.SMS_PROVIDERS = {
        **settings.SMS_PROVIDERS,
        "sinch": {
            "BACKEND": "messaging.providers.sinch.SinchProvider",
            "OPTIONS": {"SERVICE_PLAN_ID": "plan", "API_TOKEN": "", "FROM": "Herald"},
            "ENV": {"SERVICE_PLAN_ID": ("SINCH_SERVICE_PLAN_ID", True),
                    "API_TOKEN": ("SINCH_API_TOKEN", True), "FROM": ("SINCH_FROM", True)},
        },
    }  # fmt: skip
    with pytest.raises(SystemCheckError, match="SINCH_API_TOKEN"):
        call_command("check")


@pytest.mark.django_db
def test_unknown_provider_name_fails_check(settings):
    settings.SMS_PROVIDERS_ENABLED = ["sandbox", "carrier-pigeon"]
    with pytest.raises(SystemCheckError, match="carrier-pigeon"):
        call_command("check")


@pytest.mark.django_db
@pytest.mark.parametrize("headroom", [-0.1, 0.5, 1.0])
def test_rate_headroom_out_of_range_fails_check(settings, headroom):
    settings.SENDER_RATE_HEADROOM = headroom
    with pytest.raises(SystemCheckError, match="SENDER_RATE_HEADROOM"):
        call_command("check")


def test_redaction_of_credentials():
    assert "hunter2" not in redact("api_secret=hunter2&to=1")
    assert "abcdefgh12345" not in redact("Authorization: Bearer abcdefgh12345")
    assert "s3cr3t" not in redact('{"password": "s3cr3t"}')


def test_configured_secrets_never_reach_a_log_line(settings):
    settings.SMS_PROVIDERS = {
        **settings.SMS_PROVIDERS,
        "sandbox": {**settings.SMS_PROVIDERS["sandbox"],
                    "OPTIONS": {"WEBHOOK_SECRET": "rotating-old,rotating-new"}},
    }  # fmt: skip
    record = logging.LogRecord("x", logging.INFO, "", 0, "posting with %s", ("rotating-new",), None)
    RedactSecretsFilter().filter(record)
    assert "rotating-new" not in record.getMessage()


@pytest.mark.django_db(transaction=True)
def test_request_send_and_receipt_log_lines_are_json_without_bodies(api, public_url, caplog):
    from tests.test_sandbox_round_trip import drain

    caplog.set_level(logging.INFO)
    body = "my secret one-time code 918273"
    r = api.post("/api/v1/messages/?token=leak", {"to": "+447911123457", "body": body},
                 format="json")  # fmt: skip
    assert r.status_code == 202
    drain()
    names = {rec.name for rec in caplog.records}
    assert "herald.sender" in names
    assert names & {"herald.receipts", "herald.applier"}  # inline or batched apply
    handler = logging.getLogger().handlers[0]
    for rec in caplog.records:
        line = handler.format(rec)
        parsed = json.loads(line)  # one JSON object per line
        assert "message" in parsed and "level" in parsed
        assert "918273" not in line and "leak" not in line


def test_signing_on_without_a_secret_fails_check():
    result = manage("check", SMS_PROVIDERS_ENABLED="sinch", SINCH_SERVICE_PLAN_ID="p",
                    SINCH_API_TOKEN="t", SINCH_FROM="Herald")  # fmt: skip
    assert result.returncode != 0
    assert "SINCH_WEBHOOK_SECRET" in result.stderr and "herald.E005" in result.stderr
    ok = manage("check", SMS_PROVIDERS_ENABLED="sinch", SINCH_SERVICE_PLAN_ID="p",
                SINCH_API_TOKEN="t", SINCH_FROM="Herald", SINCH_WEBHOOK_SECRET="s")  # fmt: skip
    assert ok.returncode == 0, ok.stderr


def test_unknown_vonage_signature_method_fails_check():
    result = manage("check", SMS_PROVIDERS_ENABLED="vonage-sms", VONAGE_API_KEY="k",
                    VONAGE_API_SECRET="s", VONAGE_FROM="Herald", VONAGE_SIGNATURE_SECRET="x",
                    VONAGE_SIGNATURE_METHOD="sha3")  # fmt: skip
    assert result.returncode != 0 and "herald.E006" in result.stderr


def test_twilio_needs_a_sender_or_a_messaging_service():
    base = {
        "SMS_PROVIDERS_ENABLED": "twilio",
        "TWILIO_ACCOUNT_SID": "AC1",
        "TWILIO_AUTH_TOKEN": "t",
    }
    assert "herald.E007" in manage("check", **base).stderr
    assert manage("check", TWILIO_MESSAGING_SERVICE_SID="MG1", **base).returncode == 0


def test_vonage_messages_needs_an_application_pair_or_a_secret():
    base = {"SMS_PROVIDERS_ENABLED": "vonage-messages", "VONAGE_API_KEY": "k",
            "VONAGE_FROM": "Herald", "VONAGE_SIGNATURE_SECRET": "s"}  # fmt: skip
    assert "herald.E008" in manage("check", **base).stderr
    assert "herald.E008" in manage("check", VONAGE_APPLICATION_ID="app", **base).stderr
    assert manage("check", VONAGE_API_SECRET="secret", **base).returncode == 0


# --- no open sandbox in production -------------------------------------------------------------


def test_production_does_not_enable_the_sandbox_by_itself():
    result = manage("check", "--deploy")
    assert result.returncode != 0
    assert "herald.E011" in result.stderr and "No SMS provider is enabled" in result.stderr


@pytest.mark.parametrize("secret", [None, "sandbox-secret", "mine,sandbox-secret"])
def test_the_published_sandbox_secret_is_a_deploy_error_and_refused_at_start(secret):
    env = {"SMS_PROVIDERS_ENABLED": "sandbox"}
    if secret is not None:
        env["SANDBOX_WEBHOOK_SECRET"] = secret
    check = manage("check", "--deploy", **env)
    assert check.returncode != 0 and "herald.E010" in check.stderr
    for command in (["run_sender", "--once"], ["run_applier", "--once"]):
        started = manage(*command, **env)
        assert started.returncode != 0
        assert (
            "SANDBOX_WEBHOOK_SECRET" in started.stderr and "ImproperlyConfigured" in started.stderr
        )
    web = subprocess.run(
        [sys.executable, "-c", "import config.wsgi"], cwd=ROOT, env=production_env(**env),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert web.returncode != 0 and "SANDBOX_WEBHOOK_SECRET" in web.stderr


def test_an_own_sandbox_secret_starts_and_debug_keeps_the_easy_default():
    web = subprocess.run(
        [sys.executable, "-c", "import config.wsgi; print('started')"], cwd=ROOT,
        env=production_env(**OWN_SANDBOX), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert web.returncode == 0 and "started" in web.stdout, web.stderr
    debug = manage("check", DEBUG="true")
    assert debug.returncode == 0, debug.stderr


def _setting(name, **env):
    code = (
        f"import django; django.setup(); from django.conf import settings; print(settings.{name})"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=production_env(**env),
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_when_sandbox_inbound_may_change_opt_outs():
    assert _setting("SANDBOX_INBOUND_CHANGES_OPTOUTS", **OWN_SANDBOX) == "True"  # sandbox only
    mixed = {**OWN_SANDBOX, "SMS_PROVIDERS_ENABLED": "twilio,sandbox", "TWILIO_ACCOUNT_SID": "AC1",
             "TWILIO_AUTH_TOKEN": "t", "TWILIO_FROM": "+14155550100"}  # fmt: skip
    assert _setting("SANDBOX_INBOUND_CHANGES_OPTOUTS", **mixed) == "False"
    assert _setting("SANDBOX_INBOUND_CHANGES_OPTOUTS", DEBUG="true", **mixed) == "True"


@pytest.mark.django_db
def test_a_sandbox_stop_never_opts_out_a_number_real_providers_send_to(settings):
    from messaging.models import OptOut
    from messaging.providers.base import InboundSms
    from messaging.services.inbound import record_inbound

    settings.SANDBOX_INBOUND_CHANGES_OPTOUTS = False
    message, created = record_inbound("sandbox", InboundSms("sb-1", "+447911123457", "+1", "STOP"))
    assert created and message.body == "STOP"  # stored like any inbound message
    assert not OptOut.objects.exists()
    record_inbound("twilio", InboundSms("SM1", "+447911123457", "+1", "STOP"))
    assert OptOut.objects.filter(phone_number="+447911123457").exists()  # a real provider's STOP
    settings.SANDBOX_INBOUND_CHANGES_OPTOUTS = True
    record_inbound("sandbox", InboundSms("sb-2", "+447911123458", "+1", "STOP"))
    assert OptOut.objects.filter(phone_number="+447911123458").exists()


# --- security headers, favicon, "View site" ------------------------------------------------------


@pytest.mark.django_db
def test_security_headers_on_every_response(client, staff):
    client.force_login(staff)
    for url in ("/healthz", "/api/v1/docs/", "/admin/"):
        response = client.get(url)
        csp = response["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "object-src 'none'" in csp
        assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
        assert response["Referrer-Policy"] == "same-origin"
        assert response["X-Content-Type-Options"] == "nosniff"
    docs = client.get("/api/v1/docs/")
    nonce = docs["Content-Security-Policy"].split("'nonce-")[1].split("'")[0]
    assert f'<script nonce="{nonce}">' in docs.content.decode()  # Swagger UI's inline script


@pytest.mark.django_db
def test_favicon_and_view_site(client, staff):
    response = client.get("/favicon.ico")
    assert response.status_code == 302 and response["Location"].endswith("herald/favicon.svg")
    client.force_login(staff)
    page = client.get("/admin/").content.decode()
    assert 'href="/api/v1/docs/">View site' in page
    assert "herald/favicon.svg" in page


def test_migrate_on_a_new_database_is_not_stopped_by_the_applier_check(tmp_path):
    """Regression: `migrate` runs the database checks before any table exists; the stored-
    receipts check (herald.W011) must not fail it (a fresh `scripts/dev` died here)."""
    result = manage("migrate", "--noinput", DATABASE_URL=f"sqlite:///{tmp_path / 'new.sqlite3'}",
                    **OWN_SANDBOX)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
