"""Creating, resending and cancelling outbound messages (idempotency: services/idempotency.py)."""

from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from messaging import encoding, providers
from messaging.errors import (
    AlreadyResent,
    CallbackNotConfigured,
    NotCancellable,
    NotResendable,
    OptedOut,
    ProviderNotAllowed,
    ProviderNotEnabled,
)
from messaging.models import (
    ApiKey,
    Client,
    Direction,
    Message,
    OptOut,
    Source,
    StatusEvent,
)
from messaging.services import callbacks, routing
from messaging.status import Status, can_cancel, can_resend

SANDBOX = "sandbox"


def is_opted_out(number: str) -> bool:
    return OptOut.objects.filter(phone_number=number).exists()


def may_use(client: Client, api_key: ApiKey | None, provider: str) -> bool:
    """Whether a message of `client` sent with `api_key` may go through `provider`: a test
    key's only ever through the sandbox; otherwise one the client allows (all, when its list is
    empty). The one statement of the rule, for routing at creation and failover when sending."""
    if api_key is not None and api_key.kind == ApiKey.Kind.TEST:
        return provider == SANDBOX
    allowed = client.allowed_providers if client is not None else []
    return not allowed or provider in allowed


@dataclass(frozen=True)
class Routed:
    """Where a new message goes: the provider, the note for its timeline and, when the routing
    table chose it (nothing was asked for), the decision (Message.routed; recorded on the
    queued event)."""

    provider: str
    note: str = ""
    decision: routing.Decision | None = None

    @property
    def routed(self) -> bool:
        return self.decision is not None

    @property
    def payload(self) -> dict | None:
        return {"route": self.decision.as_json()} if self.decision else None


def route(
    client: Client, api_key: ApiKey | None, requested: str = "", to: str = "", health=None
) -> Routed:
    """Where a message to `to` of `client` sent with `api_key` goes. Single sends, batches
    (per recipient) and quotes all ask here, so a quote names the provider a send would get.

    A test key always gets the sandbox, whatever was asked for, so it can never reach a real
    provider (or cost anything). A provider asked for is authoritative (not routed), refused
    when outside the client's list. Otherwise the routing table decides (routing.decide: the
    client's routes, its default provider as its `*`, the global table, Herald's default; only
    providers the client allows); should nothing usable remain, the first the client allows.
    `health`: provider_health.states(), read once by a caller routing many messages."""
    if api_key is not None and api_key.kind == ApiKey.Kind.TEST:
        if not providers.is_enabled(SANDBOX):
            raise ProviderNotEnabled(
                "Test keys send through the sandbox, which is not enabled on this server."
            )
        asked = f" (asked for {requested})" if requested and requested != SANDBOX else ""
        return Routed(SANDBOX, f"test key: routed to the sandbox{asked}")
    allowed = list(client.allowed_providers or [])
    if requested:
        if not may_use(client, api_key, requested):
            raise ProviderNotAllowed(
                f"Provider '{requested}' is not allowed for this client. "
                f"Allowed: {', '.join(allowed)}."
            )
        if not providers.is_enabled(requested):
            raise ProviderNotEnabled(f"Provider '{requested}' is not enabled.")
        return Routed(requested)
    decision = routing.decide(to, client, health=health)
    if not may_use(client, api_key, decision.chosen):
        # decide's last resort (client's or Herald's default) is outside the client's list.
        decision.chosen = allowed[0]
        decision.why = "no usable provider in the route; the first the client allows"
    if not providers.is_enabled(decision.chosen):
        raise ProviderNotEnabled(f"Provider '{decision.chosen}' is not enabled.")
    return Routed(decision.chosen, decision.note, decision)


def check_callback_url(client: Client, callback_url: str) -> None:
    """A per-message callback URL needs the client's signing secret (callbacks are signed)."""
    if callback_url and not callbacks.signing_secrets(client):
        raise CallbackNotConfigured(
            "This client has no callback signing secret yet: set one up with "
            "`manage.py set_callback` before giving messages a callback_url."
        )


def queued_row(
    *,
    client: Client,
    to: str,
    body: str,
    provider: str,
    routed: bool = False,
    api_key=None,
    sender: str = "",
    client_reference: str = "",
    metadata=None,
    send_at=None,
    actor=None,
    callback_url: str = "",
    resend_of=None,
    resend_reason: str = "",
    now=None,
) -> Message:
    """The unsaved outbox row of a queued outbound message (a send saves one, a batch bulk
    inserts many): its encoding and segments counted now, due at send_at or now."""
    enc, segments = encoding.analyse(body)
    return Message(
        client=client,
        api_key=api_key,
        direction=Direction.OUTBOUND,
        to_number=to,
        from_number=sender,
        body=body,
        provider=provider,
        routed=routed,
        client_reference=client_reference,
        metadata=metadata or {},
        status=Status.QUEUED,
        encoding=enc,
        segments=segments,
        send_at=send_at,
        next_attempt_at=send_at or now or timezone.now(),
        resend_of=resend_of,
        resend_reason=resend_reason,
        callback_url=callback_url,
        created_by=actor,
    )


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
    callback_url: str = "",
) -> Message:
    """Write a queued message and its first event in one transaction: the row is the outbox.
    Without a client the message belongs to the `default` client (staff sends). The provider
    and sender follow the client's settings and the key's kind (see `route`)."""
    client = client or Client.objects.default()
    routed = route(client, api_key, provider, to)
    sender = sender or client.default_sender_id
    if is_opted_out(to):
        raise OptedOut(f"{to} has opted out of messages.")
    check_callback_url(client, callback_url)
    with transaction.atomic():
        message = queued_row(
            client=client,
            api_key=api_key,
            to=to,
            body=body,
            provider=routed.provider,
            routed=routed.routed,
            sender=sender,
            client_reference=client_reference,
            metadata=metadata,
            send_at=send_at,
            actor=actor,
            callback_url=callback_url,
            resend_of=resend_of,
            resend_reason=resend_reason,
        )
        message.save(force_insert=True)
        note = f"resend of {resend_of.pk}" if resend_of else "accepted"
        if resend_reason:
            note += f": {resend_reason}"
        if routed.note:
            note += f"; {routed.note}"
        StatusEvent.objects.create(
            message=message, status=Status.QUEUED, source=source, actor=actor,
            note=note, raw_payload=routed.payload,
        )  # fmt: skip
    return message


def resend(
    original: Message,
    *,
    source: str,
    actor=None,
    api_key: ApiKey | None = None,
    provider: str = "",
    reason: str = "",
    repeat: bool = False,
):
    """A new message of the same client, linked to `original`; the original keeps its status.
    `api_key` is the caller's (API resends). A staff resend of a message a test key created
    keeps that key, so it is a test message too and goes through the sandbox.

    A message that was resent already is refused unless `repeat` says a further copy is meant
    (staff tick "send again anyway", with the reason every staff resend has; the API passes
    it, as its Idempotency-Key guards retries): two staff, or one double click, must not send
    the same text twice. The original's row lock makes the check and the new copy one step."""
    if not can_resend(original):
        raise NotResendable(f"A {original.status} message cannot be resent.")
    if api_key is None and original.api_key_id and original.api_key.kind == ApiKey.Kind.TEST:
        api_key = original.api_key
    if not original.body:
        raise NotResendable("Its body was erased by retention (RETENTION_BODY_DAYS).")
    with transaction.atomic():
        Message.objects.select_for_update().only("pk").get(pk=original.pk)
        earlier = original.resends.order_by("-created_at").first()
        if earlier is not None and not repeat:
            raise AlreadyResent(
                f"It was resent already as {earlier.pk} ({earlier.status}); "
                'tick "send again anyway" to send another copy.'
            )
        new = create_outbound(
            to=original.to_number,
            body=original.body,
            source=source,
            client=original.client,
            api_key=api_key,
            # A routed original is routed again (its provider may be down); a named one keeps it.
            provider=provider or ("" if original.routed else original.provider),
            sender=original.from_number,
            client_reference=original.client_reference,
            metadata=original.metadata,
            actor=actor,
            resend_of=original,
            resend_reason=reason,
            callback_url=original.callback_url,
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
    """Cancel a message that has not been handed to the sender yet: it becomes `cancelled`, a
    final status of its own (not a provider's rejection). The error code `cancelled` stays, as
    before, for API clients that look for it."""
    with transaction.atomic():
        locked = Message.objects.select_for_update().get(pk=message.pk)
        if not can_cancel(locked):
            raise NotCancellable(f"A {locked.status} message cannot be cancelled.")
        locked.status = Status.CANCELLED
        locked.error_code = "cancelled"
        locked.error_text = reason or "Cancelled before sending."
        locked.completed_at = timezone.now()
        locked.save(
            update_fields=["status", "error_code", "error_text", "completed_at", "updated_at"]
        )
        StatusEvent.objects.create(
            message=locked,
            status=Status.CANCELLED,
            error_code="cancelled",
            source=source,
            actor=actor,
            note="cancelled" + (f": {reason}" if reason else ""),
        )
        callbacks.emit_status_changes([locked])
    return locked
