"""Retention of personal data, run daily by `manage.py purge_payloads`.

* Message bodies and the raw provider payloads of their events (send responses, receipts,
  inbound texts) are erased RETENTION_BODY_DAYS after the message was created, or after its
  client's `retention_body_days`. Each erasure is recorded as a StatusEvent on the message's
  timeline (source `retention`): the one deliberate exception to the append-only audit trail is
  that erase, through StatusEvent.objects.erase_payloads(), which only nulls raw_payload.
  Metadata, statuses, error codes, prices and timestamps stay. The webhook requests those events
  came from lose their bodies and headers at the same time.
* Raw webhook bodies and headers in general are erased after RAW_PAYLOAD_RETENTION_DAYS
  (the rows stay, the audit trail links to them); delivered sandbox receipts are deleted.
* Status callbacks that were delivered or given up are deleted with their attempts after
  CALLBACK_RETENTION_DAYS (their payloads hold numbers and statuses), except the newest one of
  each message: the next callback's sequence is the highest kept plus one, and a client orders
  a message's events by it. Pending callbacks are never deleted.

Messages still queued or sending keep their body whatever their age (the sender needs it).
Work is done in batches of RETENTION_BATCH_SIZE messages, one short transaction each, oldest
first, on the partial index msg_body_kept_idx (rows whose body is kept), so a first run over a
million rows neither holds locks for long nor rescans what it already erased.
"""

from collections import defaultdict
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from messaging.models import (
    Callback,
    CallbackAttempt,
    Client,
    Message,
    SandboxReceipt,
    Source,
    StatusEvent,
    WebhookRequest,
)
from messaging.status import Status

# The sender still needs these bodies.
KEEP_STATUSES = (Status.QUEUED, Status.SENDING)


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


def retention_groups(default_days=None) -> dict:
    """{days: [client ids]}; None in a list stands for messages without a client (inbound to
    a number no client owns). 0 days: kept forever, left out."""
    default = settings.RETENTION_BODY_DAYS if default_days is None else default_days
    groups = defaultdict(list)
    groups[default].append(None)
    for client_id, days in Client.objects.values_list("id", "retention_body_days"):
        groups[default if days is None else days].append(client_id)
    return {days: ids for days, ids in groups.items() if days > 0}


def erase_bodies(now=None, default_days=None, batch_size=None, progress=None) -> dict:
    """Erase expired bodies and payloads in batches. `progress(text)` is told after each batch."""
    now = now or timezone.now()
    batch_size = batch_size or settings.RETENTION_BATCH_SIZE
    totals = {"bodies_erased": 0, "event_payloads_erased": 0, "webhook_bodies_erased": 0}
    for days, client_ids in sorted(retention_groups(default_days).items()):
        cutoff = now - timedelta(days=days)
        due = _expired(cutoff, client_ids)
        while True:
            done = _erase_batch(due, days, batch_size)
            if not done["bodies_erased"]:
                break
            for key, value in done.items():
                totals[key] += value
            if progress:
                progress(
                    f"  {totals['bodies_erased']} bodies erased so far "
                    f"(retention {days} days, created before {cutoff:%Y-%m-%d %H:%M})"
                )
            if done["bodies_erased"] < batch_size:
                break
    return totals


def _expired(cutoff, client_ids):
    rows = Message.objects.filter(created_at__lt=cutoff).exclude(body="")
    known = [c for c in client_ids if c is not None]
    if None in client_ids:
        rows = rows.filter(Q(client_id__in=known) | Q(client__isnull=True))
    else:
        rows = rows.filter(client_id__in=known)
    return rows.exclude(status__in=KEEP_STATUSES)


def _erase_batch(due, days: int, batch_size: int) -> dict:
    with transaction.atomic():
        batch = list(due.order_by("created_at").values_list("id", "status")[:batch_size])
        if not batch:
            return {"bodies_erased": 0, "event_payloads_erased": 0, "webhook_bodies_erased": 0}
        ids = [pk for pk, _ in batch]
        # Guarded again in the UPDATE: a row a resend or an admin edit changed meanwhile is
        # only erased if it still qualifies.
        erased = Message.objects.filter(pk__in=ids).exclude(body="").update(body="")
        events = StatusEvent.objects.filter(message_id__in=ids)
        webhook_ids = set(
            events.exclude(webhook_request=None).values_list("webhook_request_id", flat=True)
        )
        payloads = events.erase_payloads()
        webhooks = (
            WebhookRequest.objects.filter(pk__in=webhook_ids)
            .exclude(body=b"", headers={})
            .update(body=b"", headers={})
        )
        StatusEvent.objects.bulk_create(
            StatusEvent(
                message_id=pk,
                status=status,
                source=Source.RETENTION,
                applied=False,
                note=f"body and raw payloads erased: older than {days} days (retention)",
            )
            for pk, status in batch
        )
    return {"bodies_erased": erased, "event_payloads_erased": payloads,
            "webhook_bodies_erased": webhooks}  # fmt: skip


def purge_callbacks(now=None, days=None, batch_size=None, progress=None) -> dict:
    """Delete finished callbacks older than CALLBACK_RETENTION_DAYS, and their attempts, in
    batches (oldest first, one short transaction each)."""
    days = settings.CALLBACK_RETENTION_DAYS if days is None else days
    totals = {"callbacks_deleted": 0, "callback_attempts_deleted": 0}
    if days <= 0:
        return totals
    cutoff = (now or timezone.now()) - timedelta(days=days)
    batch_size = batch_size or settings.RETENTION_BATCH_SIZE
    newer = Callback.objects.filter(message_id=OuterRef("message_id"),
                                    sequence__gt=OuterRef("sequence"))  # fmt: skip
    due = (
        Callback.objects.filter(created_at__lt=cutoff)
        .exclude(state=Callback.State.PENDING)
        .filter(Q(message__isnull=True) | Exists(newer))
    )
    while True:
        with transaction.atomic():
            ids = list(due.order_by("id").values_list("id", flat=True)[:batch_size])
            if not ids:
                break
            attempts = CallbackAttempt.objects.filter(callback_id__in=ids).delete()[0]
            deleted = Callback.objects.filter(pk__in=ids).delete()[0]
        totals["callbacks_deleted"] += deleted
        totals["callback_attempts_deleted"] += attempts
        if progress:
            progress(f"  {totals['callbacks_deleted']} callbacks deleted so far "
                     f"(finished, created before {cutoff:%Y-%m-%d %H:%M})")  # fmt: skip
        if len(ids) < batch_size:
            break
    return totals
