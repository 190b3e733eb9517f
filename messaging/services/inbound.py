"""Inbound SMS: stored as inbound messages; STOP/START keywords maintain the opt-out list."""

from django.conf import settings
from django.db import IntegrityError, transaction

from messaging import selectors
from messaging.models import Direction, Message, Source, StatusEvent
from messaging.phone import normalise_loose
from messaging.providers.base import InboundSms
from messaging.services import callbacks, optouts
from messaging.status import Status


def record_inbound(provider: str, sms: InboundSms, *, webhook_request=None):
    """Store one inbound SMS (idempotent on the provider's id). Returns (message, created)."""
    sender = normalise_loose(sms.from_number)
    existing = Message.objects.filter(
        provider=provider, direction=Direction.INBOUND, provider_message_id=sms.provider_message_id
    ).first()
    if existing:
        return existing, False
    try:
        with transaction.atomic():
            message = Message.objects.create(
                # The client that owns the number it was sent to, else none.
                client=selectors.client_owning(sms.to_number),
                direction=Direction.INBOUND,
                provider=provider,
                provider_message_id=sms.provider_message_id or None,
                from_number=sender,
                to_number=normalise_loose(sms.to_number),
                body=sms.text,
                segments=max(1, sms.parts or 1),
                status=Status.RECEIVED,
                completed_at=sms.received_at,
            )
            StatusEvent.objects.create(
                message=message,
                status=Status.RECEIVED,
                provider_timestamp=sms.received_at,
                source=Source.WEBHOOK,
                raw_payload=sms.raw,
                webhook_request=webhook_request,
                note="inbound message",
            )
            callbacks.emit_inbound(message)
            if provider != "sandbox" or settings.SANDBOX_INBOUND_CHANGES_OPTOUTS:
                optouts.apply_keyword(sender, sms.text, source_message=message)
            # Otherwise a sandbox "STOP" is stored like any inbound message but changes nothing:
            # its sender is not a subscriber real providers deliver to.
    except IntegrityError:  # the same inbound message stored concurrently
        message = Message.objects.get(
            provider=provider,
            direction=Direction.INBOUND,
            provider_message_id=sms.provider_message_id,
        )
        return message, False
    return message, True
