"""Status callbacks: what is pushed to a client's endpoint, and its configuration.

Every function that writes an event (`emit_*`) is called INSIDE the transaction that makes the
change it reports, so the outbox row (messaging.models.Callback) commits or rolls back with the
change: a crash can neither lose a callback nor send one for a change that never happened.
Delivery (claim, sign, send, retry, circuit breaker) is messaging/services/callback_delivery.py.

Events (README, "Status callbacks"):
  message.status   each status change the state machine applied, with a per-message sequence
  message.inbound  an inbound SMS to a number the client owns (the message's client)
  optout.changed   an opt-out or opt-in caused by one of the client's messages
Nothing is written for a message whose client has no callback URL and that has no URL of its own.
"""

import base64
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max, Q
from django.utils import timezone

from messaging.bulk import bulk_insert
from messaging.callback_http import validate_url
from messaging.models import Callback, CallbackEndpoint, Client, Message, OptOutChange

SECRET_PREFIX = "whsec_"
MESSAGE_FIELDS = ("id", "client_id", "callback_url", "client__callback_url", "direction",
                  "to_number", "from_number", "provider", "provider_message_id",
                  "client_reference", "metadata", "segments", "price", "currency")  # fmt: skip


# --- configuration ------------------------------------------------------------------------------


def clean_url(url: str) -> str:
    """The one URL rule (https, public addresses; callback_http.check_url), as a
    ValidationError that the API serializer, forms and commands report against their field."""
    url = (url or "").strip()
    if not url:
        raise ValidationError("Give a callback URL.")
    validate_url(url)
    return url


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def configure_endpoint(client: Client, url: str) -> str | None:
    """Set the client's callback URL (validated by clean_url; "" switches callbacks off).
    Creates a signing secret when the client has none and returns it (shown once to whoever
    configures the client); None when the client already had one."""
    url = clean_url(url) if url else ""
    created = None
    with transaction.atomic():
        locked = Client.objects.select_for_update().get(pk=client.pk)
        locked.callback_url = url
        fields = ["callback_url", "updated_at"]
        if url and not locked.callback_secret:
            locked.callback_secret = created = new_secret()
            fields.append("callback_secret")
        locked.save(update_fields=fields)
    client.callback_url, client.callback_secret = locked.callback_url, locked.callback_secret
    return created


def rotate_secret(client: Client) -> str:
    """Start a rotation: a new secret signs from now on, beside the current one (both
    signatures go in `webhook-signature`) until retire_previous_secret. Returns the new one."""
    with transaction.atomic():
        locked = Client.objects.select_for_update().get(pk=client.pk)
        locked.callback_secret_previous = locked.callback_secret
        locked.callback_secret = new_secret()
        locked.save(update_fields=["callback_secret", "callback_secret_previous", "updated_at"])
    client.callback_secret = locked.callback_secret
    client.callback_secret_previous = locked.callback_secret_previous
    return locked.callback_secret


def retire_previous_secret(client: Client) -> bool:
    """End a rotation: only the newest secret signs. False when there was nothing to retire."""
    done = Client.objects.filter(pk=client.pk).exclude(callback_secret_previous="")
    retired = done.update(callback_secret_previous="", updated_at=timezone.now()) > 0
    client.callback_secret_previous = ""
    return retired


def signing_secrets(client: Client) -> list:
    return [s for s in (client.callback_secret, client.callback_secret_previous) if s]


# --- emitting events ----------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusChange:
    """A status change the state machine applied (what one `message.status` event reports)."""

    message_id: object
    status: str
    error_code: str = ""
    error_text: str = ""

    @classmethod
    def of(cls, message: Message) -> "StatusChange":
        """The change a message row in memory has just been moved by."""
        return cls(message.pk, str(message.status), message.error_code, message.error_text)


def _event_id() -> str:
    return f"evt_{uuid.uuid4().hex}"


def _row(client_id, url, event_type, payload_data, now, message_id=None, sequence=None):
    event_id = _event_id()
    data = {"id": event_id, "type": event_type, "timestamp": now.isoformat(), "data": payload_data}
    return Callback(
        event_id=event_id, event_type=event_type, occurred_at=now, client_id=client_id,
        message_id=message_id, sequence=sequence, payload=data, url=url, next_attempt_at=now,
        give_up_at=now + timedelta(hours=settings.CALLBACK_MAX_AGE_HOURS),
    )  # fmt: skip


def _targets(message_ids) -> dict:
    """{message id: its row's static fields} of the messages that have somewhere to go."""
    rows = Message.objects.filter(pk__in=list(message_ids)).filter(
        Q(callback_url__gt="") | Q(client__callback_url__gt="")
    )
    return {r["id"]: r for r in rows.values(*MESSAGE_FIELDS)}


def _next_sequences(message_ids) -> dict:
    """{message id: the next sequence number}. The caller holds the messages' row locks (every
    status change does), so two transactions never number the same message at once; the
    unique (message, sequence) constraint is the guard regardless."""
    taken = (
        Callback.objects.filter(message_id__in=list(message_ids))
        .values("message_id")
        .annotate(last=Max("sequence"))
        .values_list("message_id", "last")
    )
    sequences = {mid: 1 for mid in message_ids}
    for mid, last in taken:
        sequences[mid] = (last or 0) + 1
    return sequences


def _message_data(row: dict, sequence: int) -> dict:
    return {
        "message_id": str(row["id"]),
        "sequence": sequence,
        "direction": row["direction"],
        "to": row["to_number"],
        "from": row["from_number"],
        "provider": row["provider"],
        "provider_message_id": row["provider_message_id"],
        "segments": row["segments"],
        "price": None if row["price"] is None else str(row["price"]),
        "currency": row["currency"],
        "client_reference": row["client_reference"],
        "metadata": row["metadata"],
    }


def emit_status_changes(changes: Iterable) -> int:
    """Write one `message.status` event per applied change (StatusChange, or a Message row whose
    status was just changed), in the order given. One bulk call for a whole batch: a few
    queries however many changes. Call it inside the transaction that applied them, after the
    message rows are written. Returns how many events were written."""
    changes = [c if isinstance(c, StatusChange) else StatusChange.of(c) for c in changes]
    if not changes:
        return 0
    targets = _targets({c.message_id for c in changes})
    if not targets:
        return 0
    sequences = _next_sequences(targets)
    now = timezone.now()
    rows = []
    for change in changes:
        target = targets.get(change.message_id)
        if target is None or target["client_id"] is None:
            continue
        sequence = sequences[change.message_id]
        sequences[change.message_id] += 1
        data = _message_data(target, sequence)
        data.update(status=change.status, error_code=change.error_code,
                    error_text=change.error_text)  # fmt: skip
        url = target["callback_url"] or target["client__callback_url"]
        rows.append(
            _row(
                target["client_id"],
                url,
                Callback.Type.MESSAGE_STATUS,
                data,
                now,
                message_id=change.message_id,
                sequence=sequence,
            )  # fmt: skip
        )
    bulk_insert(Callback, rows)
    return len(rows)


def emit_inbound(message: Message) -> int:
    """A `message.inbound` event for an inbound SMS that belongs to a client with a URL."""
    if message.client_id is None:
        return 0
    target = _targets([message.pk]).get(message.pk)
    if target is None:
        return 0
    sequence = _next_sequences([message.pk])[message.pk]
    data = _message_data(target, sequence)
    data.update(
        body=message.body,
        status=str(message.status),
        received_at=message.completed_at.isoformat() if message.completed_at else None,
    )
    url = target["callback_url"] or target["client__callback_url"]
    _row(message.client_id, url, Callback.Type.MESSAGE_INBOUND, data, timezone.now(),
         message_id=message.pk, sequence=sequence).save()  # fmt: skip
    return 1


def emit_optout_change(change: OptOutChange) -> int:
    """An `optout.changed` event for the client whose message caused the change (its inbound
    STOP, or its send a provider refused as opted out). The opt-out list is shared by every
    client, but a number is only reported to a client it came from: telling every client
    would tell them about numbers they never had."""
    source = change.source_message
    if source is None or source.client_id is None:
        return 0
    client = Client.objects.only("id", "callback_url").get(pk=source.client_id)
    url = source.callback_url or client.callback_url
    if not url:
        return 0
    data = {
        "phone_number": change.phone_number,
        "action": change.action,
        "opted_out": change.action == OptOutChange.Action.OPT_OUT,
        "keyword": change.keyword,
        "reason": change.reason,
        "source_message_id": str(source.pk),
    }
    _row(client.pk, url, Callback.Type.OPTOUT_CHANGED, data, timezone.now()).save()
    return 1


# --- staff actions ------------------------------------------------------------------------------


def replay(callback: Callback, *, actor) -> Callback:
    """Deliver an event again (a staff action). It is the same event, so it keeps its
    `webhook-id` (and body): a receiver that deduplicates on it will ignore a replay of an event
    it already processed, which is what at-least-once delivery asks of it anyway. The replayed
    attempt records who asked; a failed event gets a new CALLBACK_MAX_AGE_HOURS of retries."""
    now = timezone.now()
    with transaction.atomic():
        locked = Callback.objects.select_for_update().get(pk=callback.pk)
        locked.state = Callback.State.PENDING
        locked.next_attempt_at = now
        locked.give_up_at = max(
            locked.give_up_at, now + timedelta(hours=settings.CALLBACK_MAX_AGE_HOURS)
        )
        locked.replay_requested_by = actor
        locked.delivered_at = None
        locked.save(
            update_fields=["state", "next_attempt_at", "give_up_at", "replay_requested_by",
                           "delivered_at"]
        )  # fmt: skip
    return locked


def reset_circuit(endpoint: CallbackEndpoint):
    """Close an endpoint's circuit by hand (the client says it is fixed)."""
    CallbackEndpoint.objects.filter(pk=endpoint.pk).update(
        circuit=CallbackEndpoint.Circuit.CLOSED, consecutive_failures=0, retry_at=None
    )
