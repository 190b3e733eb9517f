from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from messaging.models import WebhookRequest

pytestmark = pytest.mark.django_db


def stored(days_ago):
    row = WebhookRequest.objects.create(
        provider="sandbox", kind="status", method="POST", path="/webhooks/sandbox/status/",
        headers={"content-type": "application/json"}, body=b'{"status": "delivered"}',
        authenticated=True, state="processed",
    )  # fmt: skip
    WebhookRequest.objects.filter(pk=row.pk).update(
        received_at=timezone.now() - timedelta(days=days_ago)
    )
    return row


def test_old_bodies_are_erased_rows_kept(settings):
    settings.RAW_PAYLOAD_RETENTION_DAYS = 30
    old, recent = stored(40), stored(5)
    out = StringIO()
    call_command("purge_payloads", stdout=out)
    old.refresh_from_db(), recent.refresh_from_db()
    assert (bytes(old.body), old.headers, old.state) == (b"", {}, "processed")
    assert bytes(recent.body) == b'{"status": "delivered"}'
    assert "1 webhook bodies erased" in out.getvalue()
    call_command("purge_payloads", stdout=out)  # idempotent
    assert "0 webhook bodies erased" in out.getvalue().splitlines()[-1]
