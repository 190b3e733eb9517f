from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from messaging.models import Message
from messaging.providers.base import DeliveryReport
from messaging.providers.sandbox import SandboxProvider
from messaging.services import messages
from messaging.status import Status

pytestmark = pytest.mark.django_db


def sent(hours_ago, status="sent"):
    message = messages.create_outbound(to="+447911123457", body="x", source="api")
    Message.objects.filter(pk=message.pk).update(
        status=status, sent_at=timezone.now() - timedelta(hours=hours_ago),
        provider_message_id=f"id-{message.pk}",
    )  # fmt: skip
    return message


def test_stuck_messages_without_report_api_become_unknown(settings):
    settings.RECEIPT_TIMEOUT_HOURS = 72
    old, fresh = sent(80), sent(1)
    done = sent(80, status="delivered")
    out = StringIO()
    call_command("reconcile", stdout=out)
    old.refresh_from_db(), fresh.refresh_from_db(), done.refresh_from_db()
    assert (old.status, old.error_code) == ("unknown", "receipt-timeout")
    event = old.events.latest("id")
    assert event.source == "reconcile" and "no report API" in event.note
    assert (fresh.status, done.status) == ("sent", "delivered")
    assert "1 checked" in out.getvalue() and "1 marked unknown" in out.getvalue()


def test_report_api_settles_the_message(monkeypatch):
    message = sent(100)

    def fetch(self, msg, session):
        return [DeliveryReport(status=Status.DELIVERED, provider_status="delivered",
                               provider_message_id=msg.provider_message_id)]  # fmt: skip

    monkeypatch.setattr(SandboxProvider, "fetch_reports", fetch)
    call_command("reconcile", stdout=StringIO())
    message.refresh_from_db()
    assert message.status == "delivered"
    assert message.events.filter(source="reconcile", applied=True).count() == 1


def test_report_api_errors_are_counted_not_fatal(monkeypatch):
    message = sent(100)

    def broken(self, msg, session):
        raise ConnectionError("report API down")

    monkeypatch.setattr(SandboxProvider, "fetch_reports", broken)
    out = StringIO()
    call_command("reconcile", stdout=out)
    message.refresh_from_db()
    assert message.status == "sent"  # left for the next run
    assert "1 report errors" in out.getvalue()


def test_per_provider_timeout(settings):
    settings.SMS_PROVIDERS = {
        **settings.SMS_PROVIDERS,
        "sandbox": {**settings.SMS_PROVIDERS["sandbox"], "TIMEOUT_HOURS": 2},
    }
    message = sent(3)
    call_command("reconcile", stdout=StringIO())
    message.refresh_from_db()
    assert message.status == "unknown"
