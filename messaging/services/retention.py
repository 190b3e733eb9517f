"""Raw payload retention: after RAW_PAYLOAD_RETENTION_DAYS the bodies and headers of stored
webhook requests are erased. The rows stay (the audit trail links to them), and so do the
normalised facts every StatusEvent keeps."""

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from messaging.models import SandboxReceipt, WebhookRequest


def purge_raw_payloads(now=None, days=None) -> dict:
    days = settings.RAW_PAYLOAD_RETENTION_DAYS if days is None else days
    cutoff = (now or timezone.now()) - timedelta(days=days)
    erased = (
        WebhookRequest.objects.filter(received_at__lt=cutoff)
        .exclude(body=b"", headers={})
        .update(body=b"", headers={})
    )
    sandbox = SandboxReceipt.objects.filter(
        delivered_at__isnull=False, delivered_at__lt=cutoff
    ).delete()[0]
    return {"webhook_bodies_erased": erased, "sandbox_receipts_deleted": sandbox}
