"""Reconciliation: messages with no final status past their provider's timeout are settled by
pulling the provider's report API where one exists, else marked `unknown` with the reason."""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from messaging import providers
from messaging.models import Message, Source, StatusEvent
from messaging.services import callbacks, receipts
from messaging.status import Status, decide

log = logging.getLogger("herald.reconcile")

STUCK = [Status.SENT, Status.UNKNOWN]


def timeout_for(provider: str) -> timedelta:
    """<PROVIDER>_RECEIPT_TIMEOUT_HOURS, else RECEIPT_TIMEOUT_HOURS capped by what the provider's
    report API keeps (Provider.MAX_RECEIPT_TIMEOUT_HOURS: Infobip's logs last 48 h)."""
    hours = settings.SMS_PROVIDERS.get(provider, {}).get("TIMEOUT_HOURS") or 0
    return timedelta(
        hours=hours or min(settings.RECEIPT_TIMEOUT_HOURS, _report_api_hours(provider))
    )


def _report_api_hours(provider: str) -> float:
    try:
        cap = providers.get_provider(provider).MAX_RECEIPT_TIMEOUT_HOURS
    except providers.UnknownProvider:
        cap = None
    return cap or float("inf")


def stuck_messages(provider: str, now=None):
    cutoff = (now or timezone.now()) - timeout_for(provider)
    # An ambiguous send is `unknown` with no sent_at: its clock starts when it was created.
    return Message.objects.filter(
        Q(sent_at__lt=cutoff) | Q(sent_at__isnull=True, created_at__lt=cutoff),
        direction="outbound",
        provider=provider,
        status__in=STUCK,
    ).order_by("created_at")


def reconcile(session, *, now=None, limit=1000, progress=None) -> dict:
    """Settle stuck messages of every enabled provider. Returns counts by outcome."""
    counts = {"checked": 0, "pulled": 0, "timed_out": 0, "errors": 0}
    for name in providers.enabled_names():
        provider = providers.get_provider(name)
        for message in stuck_messages(name, now)[:limit]:
            counts["checked"] += 1
            try:
                reports = provider.fetch_reports(message, session)
            except Exception as exc:  # a report API outage must not stop the run
                log.warning("report pull failed", extra={"provider": name, "error": str(exc)})
                counts["errors"] += 1
                continue
            receipts.apply(
                [receipts.Incoming(name, report) for report in reports or []],
                source=Source.RECONCILE,
            )
            message.refresh_from_db()
            if reports:
                counts["pulled"] += 1
            if message.status == Status.SENT:
                why = (
                    "the provider's report API has no final status"
                    if reports is not None
                    else f"{name} has no report API to ask"
                )
                mark_unknown(message, f"no final receipt after {timeout_for(name)}; {why}")
                counts["timed_out"] += 1
            if progress:
                progress(counts)
    return counts


def mark_unknown(message: Message, reason: str):
    with transaction.atomic():
        locked = Message.objects.select_for_update().get(pk=message.pk)
        decision = decide(locked.status, Status.UNKNOWN)
        if decision.applied:
            locked.status = Status.UNKNOWN
            locked.error_code, locked.error_text = "receipt-timeout", reason
            locked.completed_at = timezone.now()
            locked.save(
                update_fields=["status", "error_code", "error_text", "completed_at", "updated_at"]
            )
            callbacks.emit_status_changes([locked])
        StatusEvent.objects.create(
            message=locked,
            status=Status.UNKNOWN,
            error_code="receipt-timeout",
            source=Source.RECONCILE,
            applied=decision.applied,
            note=reason,
        )
