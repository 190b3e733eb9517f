"""Operations: health endpoints, deploy checks, provider configuration checks, JSON logs that
never carry secrets or message bodies."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connection

from messaging.logging import RedactSecretsFilter, redact

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.django_db
def test_healthz_and_readyz(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ok", "database": "ok"}


def test_readyz_reports_an_unreachable_database(client, monkeypatch):
    def broken():
        raise RuntimeError("database down")

    monkeypatch.setattr(connection, "cursor", broken)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"


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


def test_check_deploy_is_clean_under_production_settings():
    # With a shared cache, as the README asks for several processes (herald.W010 otherwise).
    result = manage("check", "--deploy", "--fail-level", "WARNING",
                    CACHE_URL="redis://127.0.0.1:6379/3")  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_warns_when_webhook_signing_is_off():
    result = manage("check", "--deploy", SANDBOX_WEBHOOK_SIGNING="x",
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
