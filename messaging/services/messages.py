"""Creating, resending and cancelling outbound messages."""

from django.db import transaction
from django.utils import timezone

from messaging import encoding, providers
from messaging.errors import NotCancellable, NotResendable, OptedOut, ProviderNotEnabled
from messaging.models import Client, Direction, Message, OptOut, Source, StatusEvent
from messaging.services import routing
from messaging.status import CANCELLABLE, RESENDABLE, Status


def is_opted_out(number: str) -> bool:
    return OptOut.objects.filter(phone_number=number).exists()


def create_outbound(
    *,
    to: str,
    body: str,
    source: str,
    client: Client | None = None,
    api_key=None,
    provider: str = "",
    sender: str = "",
    client_reference: str = "",
    send_at=None,
    metadata=None,
    actor=None,
    resend_of=None,
    resend_reason: str = "",
) -> Message:
    """Write a queued message and its first event in one transaction: the row is the outbox.
    Without a client the message belongs to the `default` client (staff sends)."""
    client = client or Client.objects.default()
    # A named provider (API, admin, a test key's sandbox) is authoritative; else the route decides.
    route = None if provider else routing.decide(to, client)
    provider = provider or route.chosen
    if not providers.is_enabled(provider):
        raise ProviderNotEnabled(f"Provider '{provider}' is not enabled.")
    if is_opted_out(to):
        raise OptedOut(f"{to} has opted out of messages.")
    enc, segments = encoding.analyse(body)
    now = timezone.now()
    with transaction.atomic():
        message = Message.objects.create(
            client=client,
            api_key=api_key,
            direction=Direction.OUTBOUND,
            to_number=to,
            from_number=sender,
            body=body,
            provider=provider,
            routed=route is not None,
            client_reference=client_reference,
            metadata=metadata or {},
            status=Status.QUEUED,
            encoding=enc,
            segments=segments,
            send_at=send_at,
            next_attempt_at=send_at or now,
            resend_of=resend_of,
            resend_reason=resend_reason,
            created_by=actor,
        )
        note = f"resend of {resend_of.pk}" if resend_of else "accepted"
        if resend_reason:
            note += f": {resend_reason}"
        StatusEvent.objects.create(
            message=message, status=Status.QUEUED, source=source, actor=actor,
            note=note + (f"; {route.note}" if route else ""),
            raw_payload={"route": route.as_json()} if route else None,
        )  # fmt: skip
    return message


def resend(original: Message, *, source: str, actor=None, provider: str = "", reason: str = ""):
    """A new message linked to `original`; the original keeps its status."""
    if original.direction != Direction.OUTBOUND or original.status not in RESENDABLE:
        raise NotResendable(f"A {original.status} message cannot be resent.")
    with transaction.atomic():
        new = create_outbound(
            to=original.to_number,
            body=original.body,
            source=source,
            client=original.client,
            provider=provider or ("" if original.routed else original.provider),
            sender=original.from_number,
            client_reference=original.client_reference,
            metadata=original.metadata,
            actor=actor,
            resend_of=original,
            resend_reason=reason,
        )
        StatusEvent.objects.create(
            message=original,
            status=original.status,
            source=source,
            actor=actor,
            applied=False,
            note=f"resent as {new.pk} via {new.provider}" + (f": {reason}" if reason else ""),
        )
    return new


def cancel(message: Message, *, source: str = Source.ADMIN, actor=None, reason: str = ""):
    """Cancel a message that has not been handed to the sender yet."""
    with transaction.atomic():
        locked = Message.objects.select_for_update().get(pk=message.pk)
        if locked.status not in CANCELLABLE:
            raise NotCancellable(f"A {locked.status} message cannot be cancelled.")
        locked.status = Status.REJECTED
        locked.error_code = "cancelled"
        locked.error_text = reason or "Cancelled before sending."
        locked.completed_at = timezone.now()
        locked.save(
            update_fields=["status", "error_code", "error_text", "completed_at", "updated_at"]
        )
        StatusEvent.objects.create(
            message=locked,
            status=Status.REJECTED,
            error_code="cancelled",
            source=source,
            actor=actor,
            note="cancelled" + (f": {reason}" if reason else ""),
        )
    return locked
