"""Delivering status callbacks: claim with a lease, sign, POST, record, retry, circuit breaker.

At least once: a callback stays `pending` until an attempt got a 2xx answer. A worker claims it
with a lease (CALLBACK_LEASE_SECONDS); a worker that dies mid-request leaves the lease to run
out and another worker sends it again, with the same `webhook-id`. Claims take rows FOR UPDATE
SKIP LOCKED on PostgreSQL (SQLite serialises writers: the IMMEDIATE transaction takes the write
lock at BEGIN), as messaging/services/sending.claim_due does for messages, so any number of
workers on any number of hosts never hold the same row at once.

Order: a message's events are delivered one at a time in sequence order. A later event waits
while an earlier one is pending (it is still being retried); one that ended failed no longer
holds the others back. Other messages' events, and other clients', do not wait for each other.

Isolation: each URL gets at most CALLBACK_ENDPOINT_CONCURRENCY requests in flight per worker, and
its circuit (CallbackEndpoint, in the database, so every worker sees it) opens after
CALLBACK_CIRCUIT_THRESHOLD failures in a row: then one probe per CALLBACK_CIRCUIT_COOLDOWN until
one succeeds. A hanging endpoint therefore holds a few threads for CALLBACK_TIMEOUT at most and
then none, and other endpoints keep theirs.
"""

import json
import logging
import random
from datetime import UTC, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone
from standardwebhooks import Webhook

from messaging.callback_http import Answer, Transport
from messaging.models import Callback, CallbackAttempt, CallbackEndpoint
from messaging.services.callbacks import signing_secrets

log = logging.getLogger("herald.callbacks")

PENDING = Callback.State.PENDING
OPEN = CallbackEndpoint.Circuit.OPEN
SWEEP_GRACE = timedelta(seconds=60)  # a last attempt scheduled at give_up_at gets to run


def backoff_seconds(attempts: int) -> float:
    """Exponential backoff with equal jitter, capped (as the sender's backoff)."""
    delay = min(settings.CALLBACK_BACKOFF_CAP, settings.CALLBACK_BACKOFF_BASE * 2 ** (attempts - 1))
    return delay / 2 + random.uniform(0, delay / 2)


def _due(now):
    earlier = Callback.objects.filter(
        message_id=OuterRef("message_id"), sequence__lt=OuterRef("sequence"), state=PENDING
    )
    return (
        Callback.objects.filter(state=PENDING, next_attempt_at__lte=now)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .exclude(Exists(earlier))
    )


def claim_due(owner: str, limit: int, busy=None, now=None) -> list:
    """Lease up to `limit` due callbacks to `owner`, at most CALLBACK_ENDPOINT_CONCURRENCY per URL
    counting `busy` ({url: requests this worker has in flight}), none for a URL whose circuit is
    open, one probe for a URL whose circuit is due for one. Returns them with their client."""
    now = now or timezone.now()
    busy = busy or {}
    cap = settings.CALLBACK_ENDPOINT_CONCURRENCY
    ids = []
    with transaction.atomic():
        circuits = {e.url: e for e in CallbackEndpoint.objects.filter(circuit=OPEN)}
        due = _due(now)
        urls = list(due.order_by().values_list("url", flat=True).distinct()[:500])
        random.shuffle(urls)  # no URL always first in line
        for url in urls:
            room = min(cap - busy.get(url, 0), limit - len(ids))
            if room <= 0:
                if len(ids) >= limit:
                    break
                continue
            circuit = circuits.get(url)
            if circuit is not None:
                if circuit.retry_at and circuit.retry_at > now:
                    continue  # open: nothing until its next probe
                # Half open: one probe, taken by whichever worker moves retry_at first.
                won = CallbackEndpoint.objects.filter(
                    pk=circuit.pk, circuit=OPEN, retry_at=circuit.retry_at
                ).update(retry_at=now + timedelta(seconds=settings.CALLBACK_CIRCUIT_COOLDOWN))
                if not won:
                    continue
                room = 1
            rows = due.filter(url=url).order_by("next_attempt_at", "id")
            if connection.vendor == "postgresql":
                rows = rows.select_for_update(skip_locked=True, of=("self",))
            ids += list(rows.values_list("id", flat=True)[:room])
        if not ids:
            return []
        lease = now + timedelta(seconds=settings.CALLBACK_LEASE_SECONDS)
        Callback.objects.filter(id__in=ids, state=PENDING).update(
            lease_owner=owner, lease_until=lease
        )
        return list(
            Callback.objects.filter(id__in=ids, lease_owner=owner, lease_until=lease)
            .select_related("client")
            .order_by("next_attempt_at", "id")
        )


def body_of(callback: Callback) -> bytes:
    """The request body: the stored payload, so every delivery of an event sends the same."""
    return json.dumps(callback.payload, separators=(",", ":"), ensure_ascii=False).encode()


def signed_headers(event_id: str, body: bytes, secrets: list, when=None) -> dict:
    """Standard Webhooks headers; one `v1,` signature per secret (two during a rotation).
    The timestamp is the attempt's: receivers refuse signatures older than a few minutes."""
    when = (when or timezone.now()).astimezone(UTC).replace(microsecond=0)
    text = body.decode()
    return {
        "Content-Type": "application/json",
        "User-Agent": "Herald-Callbacks/1",
        "webhook-id": event_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": " ".join(Webhook(s).sign(event_id, when, text) for s in secrets),
    }


def deliver(callback: Callback, transport: Transport, owner: str) -> Answer:
    """Make one attempt for a claimed callback and record it. Returns the answer."""
    started = timezone.now()
    secrets = signing_secrets(callback.client)
    if not secrets:  # cannot happen through configure_endpoint; kept visible, retried
        answer = Answer(error="the client has no callback signing secret (set_callback)")
    else:
        body = body_of(callback)
        headers = signed_headers(callback.event_id, body, secrets, started)
        answer = transport.post(callback.url, body, headers, settings.CALLBACK_TIMEOUT)
    record(callback, owner, started, answer)
    log.info(
        "callback",
        extra={"event_id": callback.event_id, "event_type": callback.event_type,
               "client": callback.client.slug, "attempt": callback.attempts + 1,
               "http_status": answer.status, "latency_ms": answer.latency_ms,
               "ok": answer.ok, "error": answer.error[:200]},
    )  # fmt: skip
    return answer


def record(callback: Callback, owner: str, started, answer: Answer):
    """The attempt (always: the request was made), the callback's next state (only while this
    worker still holds the lease) and the endpoint's circuit, in one transaction."""
    now = timezone.now()
    attempts = callback.attempts + 1
    with transaction.atomic():
        CallbackAttempt.objects.create(
            callback=callback, started_at=started, http_status=answer.status,
            latency_ms=answer.latency_ms, response_excerpt=answer.excerpt, error=answer.error,
            ok=answer.ok, replayed_by_id=callback.replay_requested_by_id,
        )  # fmt: skip
        ours = Callback.objects.filter(pk=callback.pk, state=PENDING, lease_owner=owner)
        common = {"attempts": F("attempts") + 1, "lease_owner": "", "lease_until": None,
                  "replay_requested_by": None}  # fmt: skip
        if answer.ok:
            ours.update(state=Callback.State.DELIVERED, delivered_at=now, last_error="", **common)
        elif now >= callback.give_up_at:
            ours.update(
                state=Callback.State.FAILED,
                last_error=f"gave up after {attempts} attempts: {answer.error}"[:2000],
                **common,
            )
        else:
            retry = min(now + timedelta(seconds=backoff_seconds(attempts)), callback.give_up_at)
            ours.update(next_attempt_at=retry, last_error=answer.error[:2000], **common)
        _circuit(callback.url, answer, now)


def _circuit(url: str, answer: Answer, now):
    if answer.ok:
        CallbackEndpoint.objects.filter(url=url).update(
            circuit=CallbackEndpoint.Circuit.CLOSED, consecutive_failures=0, retry_at=None,
            last_success_at=now,
        )  # fmt: skip
        return
    CallbackEndpoint.objects.get_or_create(url=url)
    endpoint = CallbackEndpoint.objects.select_for_update().get(url=url)
    endpoint.consecutive_failures += 1
    endpoint.last_failure_at, endpoint.last_error = now, answer.error[:2000]
    if endpoint.consecutive_failures >= settings.CALLBACK_CIRCUIT_THRESHOLD:
        if endpoint.circuit != OPEN:
            endpoint.circuit, endpoint.opened_at = OPEN, now
            log.warning("callback circuit opened", extra={"url_id": endpoint.pk})
        endpoint.retry_at = now + timedelta(seconds=settings.CALLBACK_CIRCUIT_COOLDOWN)
    endpoint.save()


def expire_overdue(now=None) -> int:
    """Pending callbacks past their give-up time that no attempt settled (their endpoint's
    circuit stayed open, or no worker ran) become failed, visible in the admin."""
    now = now or timezone.now()
    return (
        Callback.objects.filter(state=PENDING, give_up_at__lt=now - SWEEP_GRACE)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .update(
            state=Callback.State.FAILED,
            last_error=f"gave up: no 2xx answer within {settings.CALLBACK_MAX_AGE_HOURS:g} hours",
            lease_owner="",
            lease_until=None,
        )
    )
