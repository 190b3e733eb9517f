"""What real provider accounts do (issue 16, item 6), each against `manage.py check`, the
emulator or the parser:
- Infobip posts per-message delivery reports without credentials: with signing on and no
  INFOBIP_WEBHOOK_TOKEN every one would be refused (check error; emulator sends none);
- Infobip's /sms/3/logs keep 48 h: reconcile asks before then (emulator forgets after 48 h);
- Vonage Messages sends no webhooks for Basic-auth requests (check warning; emulator matches);
- Sinch mo_media and Infobip MMS inbound keep their text parts.
"""

import json
import time
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from django.db import connection
from django.utils import timezone

from devtools.emulator.base import Emulator
from devtools.emulator.infobip import InfobipEmulator
from devtools.emulator.vonage_messages import VonageMessagesEmulator
from messaging.checks import providers_configured
from messaging.models import Message, WebhookRequest
from messaging.providers import get_provider
from messaging.providers.base import OutboundSms, WebhookInput
from messaging.sender import Sender
from messaging.services import messages, reconcile
from messaging.status import Status
from tests.test_failover import infobip, sinch

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
UNREACHABLE = "http://127.0.0.1:9/webhooks/vonage-messages/status/"  # nothing may be posted


def use_infobip(settings, url="http://infobip.test", **options):
    config = infobip(url)
    config["OPTIONS"].update(options)
    settings.SMS_PROVIDERS = {**settings.SMS_PROVIDERS, "infobip": config}
    settings.SMS_PROVIDERS_ENABLED = ["sandbox", "infobip"]
    return config


def ids(settings):
    return [m.id for m in providers_configured(None)]


# --- Infobip: per-message reports carry no credentials ---------------------------------------


def test_check_refuses_infobip_signing_without_a_token(settings):
    use_infobip(settings, WEBHOOK_TOKEN="")  # Basic credentials only
    [error] = [m for m in providers_configured(None) if m.id == "herald.E012"]
    assert "INFOBIP_WEBHOOK_TOKEN is not set" in error.msg
    assert "without credentials" in error.msg
    use_infobip(settings, WEBHOOK_TOKEN="secret-token")
    assert "herald.E012" not in ids(settings)
    use_infobip(settings, WEBHOOK_TOKEN="", WEBHOOK_SIGNING="false")
    assert "herald.E012" not in ids(settings)


def infobip_round_trip(settings, token):
    delay = 0 if connection.vendor == "postgresql" else 0.5
    with Emulator(receipt_delay=delay, providers={"infobip": InfobipEmulator}) as emu:
        use_infobip(settings, emu.url, WEBHOOK_TOKEN=token)
        settings.SMS_DEFAULT_PROVIDER = "infobip"
        message = messages.create_outbound(to="+447700900127", body="hi", source="api",
                                           provider="infobip")  # fmt: skip
        sender = Sender(concurrency=1, batch_size=5)
        try:
            assert sender.tick() == 1
        finally:
            sender.pool.shutdown()
        assert emu.wait_idle(timeout=15)
    message.refresh_from_db()
    return message, list(WebhookRequest.objects.filter(provider="infobip"))


@pytest.mark.django_db(transaction=True)
def test_emulated_per_message_reports_without_a_token_are_refused(settings, public_url):
    message, stored = infobip_round_trip(settings, token="")
    assert message.status == Status.SENT  # no report got through
    assert stored and all(not r.authenticated for r in stored)
    assert all("authorization" not in r.headers for r in stored)  # none brought Basic


@pytest.mark.django_db(transaction=True)
def test_emulated_per_message_reports_pass_with_the_token(settings, public_url):
    message, stored = infobip_round_trip(settings, token="url-token")
    assert message.status == Status.DELIVERED
    assert stored and all(r.authenticated for r in stored)


# --- Infobip: logs kept 48 h; reconcile asks before then ----------------------------------------


@pytest.mark.django_db
def test_infobip_reconciles_before_its_logs_expire(settings):
    settings.RECEIPT_TIMEOUT_HOURS = 72
    use_infobip(settings)
    assert reconcile.timeout_for("infobip") == timedelta(hours=36)
    assert reconcile.timeout_for("sandbox") == timedelta(hours=72)
    settings.SMS_PROVIDERS["infobip"]["TIMEOUT_HOURS"] = 30  # INFOBIP_RECEIPT_TIMEOUT_HOURS
    assert reconcile.timeout_for("infobip") == timedelta(hours=30)
    settings.SMS_PROVIDERS["infobip"]["TIMEOUT_HOURS"] = 0
    settings.RECEIPT_TIMEOUT_HOURS = 24  # a lower global timeout still applies
    assert reconcile.timeout_for("infobip") == timedelta(hours=24)


@pytest.mark.django_db(transaction=True)
def test_reconcile_finds_the_log_at_40h_and_the_emulator_forgets_at_50h(settings):
    settings.RECEIPT_TIMEOUT_HOURS = 72
    with Emulator(receipt_delay=3600, providers={"infobip": InfobipEmulator}) as emu:
        use_infobip(settings, emu.url, WEBHOOK_TOKEN="t")
        sent = {}
        for to, hours in (("+447700900128", 40), ("+447700900129", 50)):
            m = messages.create_outbound(to=to, body="x", source="api", provider="infobip")
            sms = OutboundSms(message_id=str(m.pk), to=to, sender="Herald", body="x",
                              encoding="GSM-7", segments=1, callback_url="")  # fmt: skip
            result = get_provider("infobip").send(sms, requests.Session())
            emulated = emu.providers["infobip"].lookup(result.provider_message_ids[0])
            emulated.accepted_at = time.time() - hours * 3600  # as if sent `hours` ago
            emulated.status = "delivered"  # Infobip knows; its report never reached us
            Message.objects.filter(pk=m.pk).update(
                status=Status.SENT, provider_message_id=result.provider_message_ids[0],
                sent_at=timezone.now() - timedelta(hours=hours),
            )  # fmt: skip
            sent[hours] = m
        counts = reconcile.reconcile(requests.Session())
    at_40, at_50 = (Message.objects.get(pk=sent[h].pk) for h in (40, 50))
    assert counts["checked"] == 2
    assert at_40.status == Status.DELIVERED  # pulled from /sms/3/logs
    assert at_50.status == Status.UNKNOWN  # past the 48 h: Infobip has no log any more
    assert "no final status" in at_50.events.latest("id").note


# --- Vonage Messages: no webhooks for Basic auth --------------------------------------------


def use_vonage_messages(settings, url="https://api.nexmo.com", **options):
    base = {"API_KEY": "abcd1234", "API_SECRET": "api-secret-1234",
            "SIGNATURE_SECRET": "vonage-signature-secret-0123456789abcdef",
            "APPLICATION_ID": "", "PRIVATE_KEY": "", "FROM": "Herald", "BASE_URL": url,
            "WEBHOOK_SIGNING": "true"}  # fmt: skip
    settings.SMS_PROVIDERS = {
        **settings.SMS_PROVIDERS,
        "vonage-messages": {
            "BACKEND": "messaging.providers.vonage_messages.VonageMessagesProvider",
            "OPTIONS": {**base, **options},
            "ENV": {},
        },
    }
    settings.SMS_PROVIDERS_ENABLED = ["sandbox", "vonage-messages"]


def test_check_warns_about_vonage_messages_basic_auth(settings):
    use_vonage_messages(settings)
    [warning] = [m for m in providers_configured(None) if m.id == "herald.W002"]
    assert "sends no status webhooks" in warning.msg
    assert warning.level < 40  # a warning: `manage.py check` still passes
    use_vonage_messages(settings, APPLICATION_ID="app", PRIVATE_KEY="key")
    assert "herald.W002" not in ids(settings)


def test_the_emulator_posts_nothing_for_a_basic_auth_send(settings):
    with Emulator(receipt_delay=0, providers={"vonage-messages": VonageMessagesEmulator}) as emu:
        use_vonage_messages(settings, emu.url)
        sms = OutboundSms(message_id="b1", to="+447700900123", sender="Herald", body="x",
                          encoding="GSM-7", segments=1,
                          callback_url=UNREACHABLE)  # fmt: skip
        result = get_provider("vonage-messages").send(sms, requests.Session())
        assert result.provider_message_ids  # accepted
        assert emu.wait_idle(timeout=5)
        stats = emu.stats.snapshot()
    assert stats["sends"] == {"vonage-messages": {"+447700900123": 1}}
    assert stats["webhooks_posted"] == {} and stats["webhooks_failed"] == {}


def test_readme_says_so():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "Basic auth" in readme and "herald.W002" in readme
    assert "INFOBIP_WEBHOOK_TOKEN" in readme and "herald.E012" in readme


# --- inbound MMS keep their text ------------------------------------------------------------


def webhook(body: dict) -> WebhookInput:
    return WebhookInput(method="POST", url="https://h/x", body=json.dumps(body).encode(),
                        headers={"content-type": "application/json"})  # fmt: skip


def test_sinch_mo_media_keeps_subject_and_message(settings):
    settings.SMS_PROVIDERS = {**settings.SMS_PROVIDERS, "sinch": sinch("http://sinch.test")}
    body = {
        "type": "mo_media", "id": "01FC66621XXXXX119Z8PMV1QPA", "from": "16051234567",
        "to": "13185551234", "received_at": "2026-12-03T10:00:00.000Z",
        "body": {"subject": "Holiday", "message": "Look at this!",
                 "media": [{"url": "https://sinch.example/m/1.jpg",
                            "content_type": "image/jpeg", "status": "Uploaded", "code": 0}]},
    }  # fmt: skip
    [sms] = get_provider("sinch").parse_inbound_webhook(webhook(body))
    assert sms.text == "Holiday\nLook at this!"
    assert sms.raw["body"]["media"][0]["url"] == "https://sinch.example/m/1.jpg"
    body["body"] = {"media": [{"url": "https://sinch.example/m/2.jpg"}]}
    [only_media] = get_provider("sinch").parse_inbound_webhook(webhook(body))
    assert only_media.text == ""  # kept, with its media in the raw payload


def test_infobip_mms_inbound_keeps_its_text_segments(settings):
    use_infobip(settings)
    body = {"results": [{
        "messageId": "817790313235066448", "from": "385916242493", "to": "385921004026",
        "receivedAt": "2026-12-03T10:00:00.000+0000",
        "message": [
            {"contentType": "text/plain", "value": "Hello"},
            {"contentType": "image/jpeg", "url": "https://infobip.example/m/1"},
            {"contentType": "text/plain", "value": "world"},
        ],
    }]}  # fmt: skip
    [sms] = get_provider("infobip").parse_inbound_webhook(webhook(body))
    assert sms.text == "Hello\nworld"
    assert sms.raw["message"][1]["url"] == "https://infobip.example/m/1"
