"""Batch sends: one text (with {{name}} placeholders) to up to BATCH_MAX_RECIPIENTS numbers,
validated as a whole and created in one transaction with bulk inserts.

Every recipient is checked before anything is written, and its problems are reported by index
(`#/recipients/3/to`). Without `partial` one invalid recipient refuses the whole batch and
nothing is created; with it, the valid ones are sent and the invalid ones listed. Opted-out
recipients are never an error: they are reported and skipped, as a single send would refuse
them.
"""

import re
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from messaging import validation
from messaging.models import (
    Client,
    Message,
    MessageBatch,
    OptOut,
    Source,
    StatusEvent,
)
from messaging.services import provider_health
from messaging.services.messages import check_callback_url, queued_row, route
from messaging.status import Status
from messaging.text import unstorable

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
RECIPIENT_FIELDS = frozenset({"to", "client_reference", "variables"})
REFERENCE_MAX = 100
VARIABLE_MAX = 500


@dataclass
class Recipient:
    index: int
    to: str
    client_reference: str
    body: str


def render(template: str, variables: dict) -> str:
    """The body for one recipient; a placeholder with no variable is an error, not blank."""
    missing = [name for name in PLACEHOLDER.findall(template) if name not in variables]
    if missing:
        names = ", ".join(sorted(set(missing)))
        raise ValidationError(f"No value for the placeholder(s) {names} in variables.")
    return PLACEHOLDER.sub(lambda m: str(variables[m.group(1)]), template)


def check_recipient(index: int, item, template: str) -> tuple[Recipient | None, dict]:
    """(the recipient, {}) or (None, {field: [messages]}) for one entry of `recipients`."""
    if not isinstance(item, dict):
        return None, {"non_field_errors": ["A recipient must be a JSON object."]}
    errors = {name: ["Unknown field."] for name in sorted(set(item) - RECIPIENT_FIELDS)}
    to = item.get("to")
    if not isinstance(to, str):
        errors["to"] = ["Required: a JSON string." if to is None else "Must be a JSON string."]
    else:
        try:
            to = validation.clean_number(to)
        except ValidationError as exc:
            errors["to"] = exc.messages
    reference = item.get("client_reference", "")
    if not isinstance(reference, str):
        errors["client_reference"] = ["Must be a JSON string."]
    elif len(reference) > REFERENCE_MAX or unstorable(reference):
        errors["client_reference"] = [
            f"At most {REFERENCE_MAX} characters of storable text (no NUL)."
        ]
    variables = item.get("variables", {})
    if not isinstance(variables, dict) or not all(
        isinstance(v, str | int | float) and not isinstance(v, bool) for v in variables.values()
    ):
        errors["variables"] = ["Must be a JSON object of strings and numbers."]
    elif any(len(str(v)) > VARIABLE_MAX or unstorable(str(v)) for v in variables.values()):
        errors["variables"] = [f"Each value: at most {VARIABLE_MAX} characters, no NUL."]
    if errors:
        return None, errors
    try:
        body = validation.clean_body(render(template, variables))
    except ValidationError as exc:
        return None, {"variables" if PLACEHOLDER.search(template) else "body": exc.messages}
    return Recipient(index, to, reference, body), {}


def check_recipients(items, template: str) -> tuple[list[Recipient], dict]:
    valid, invalid = [], {}
    for index, item in enumerate(items):
        recipient, errors = check_recipient(index, item, template)
        if errors:
            invalid[index] = errors
        else:
            valid.append(recipient)
    return valid, invalid


def opted_out(numbers) -> set[str]:
    numbers = sorted(set(numbers))
    found = set()
    for start in range(0, len(numbers), 500):
        chunk = numbers[start : start + 500]
        found.update(
            OptOut.objects.filter(phone_number__in=chunk).values_list("phone_number", flat=True)
        )
    return found


def create_batch(
    *,
    client: Client,
    recipients: list[Recipient],
    invalid: dict | None = None,
    provider: str = "",
    sender: str = "",
    send_at=None,
    metadata=None,
    api_key=None,
    actor=None,
    source: str = Source.API,
    callback_url: str = "",
) -> MessageBatch:
    """Create the batch's messages (queued) and their first events in one transaction.
    Returns the batch, whose `result` is the API's answer. The provider and sender follow the
    client and key as a single send's do (messages.route); without a requested provider (or a
    test key) each recipient is routed by its own destination, as a single send would be."""
    if len(recipients) + len(invalid or {}) > settings.BATCH_MAX_RECIPIENTS:
        raise ValidationError(f"At most {settings.BATCH_MAX_RECIPIENTS} recipients.")
    # One health read for the whole batch; a named provider or a test key gives every
    # recipient the same answer, so only the routing table is asked per recipient.
    health = provider_health.states()
    fixed = route(client, api_key, provider, recipients[0].to if recipients else "", health)
    fixed = None if fixed.routed else fixed
    check_callback_url(client, callback_url)
    sender = sender or client.default_sender_id
    stopped = opted_out(r.to for r in recipients)
    now = timezone.now()
    rows, accepted, skipped = [], [], []
    for recipient in recipients:
        if recipient.to in stopped:
            skipped.append({"index": recipient.index, "to": recipient.to})
            continue
        routed = fixed or route(client, api_key, provider, recipient.to, health)
        message = queued_row(
            client=client,
            api_key=api_key,
            to=recipient.to,
            body=recipient.body,
            provider=routed.provider,
            routed=routed.routed,
            sender=sender,
            client_reference=recipient.client_reference,
            metadata=metadata,
            send_at=send_at,
            actor=actor,
            callback_url=callback_url,
            now=now,
        )
        rows.append((message, routed))
        accepted.append(
            {
                "index": recipient.index,
                "id": str(message.id),
                "to": recipient.to,
                "client_reference": recipient.client_reference,
                "segments": message.segments,
                "encoding": message.encoding,
                "provider": routed.provider,
            }
        )
    used = {routed.provider for _, routed in rows}
    with transaction.atomic():
        batch = MessageBatch.objects.create(
            client=client,
            api_key=api_key,
            recipients=len(recipients) + len(invalid or {}),
            accepted=len(rows),
            result={},
        )
        batch.result = {
            "id": str(batch.id),
            # The one provider of every message, or null when the route split them (each
            # message's own is under `messages`).
            "provider": used.pop() if len(used) == 1 else (fixed.provider if fixed else None),
            "recipients": batch.recipients,
            "accepted": len(rows),
            "messages": accepted,
            "opted_out": skipped,
            "invalid": [
                {"index": index, "errors": errors} for index, errors in (invalid or {}).items()
            ],
        }
        MessageBatch.objects.filter(pk=batch.pk).update(result=batch.result)
        Message.objects.bulk_create([m for m, _ in rows], batch_size=500)
        note = f"accepted in batch {batch.id}"
        StatusEvent.objects.bulk_create(
            [
                StatusEvent(
                    message=m,
                    status=Status.QUEUED,
                    source=source,
                    actor=actor,
                    note=note + (f"; {routed.note}" if routed.note else ""),
                    raw_payload=routed.payload,
                )  # fmt: skip
                for m, routed in rows
            ],
            batch_size=500,
        )
    return batch
