"""Herald's data: clients and their API keys, messages (the outbox), their append-only audit
trail, webhook evidence, receipts waiting for their message, opt-outs and idempotency keys."""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from messaging.callback_http import validate_url
from messaging.status import Status


class Direction(models.TextChoices):
    OUTBOUND = "outbound", "Outbound"
    INBOUND = "inbound", "Inbound"


class Encoding(models.TextChoices):
    GSM7 = "GSM-7", "GSM-7"
    UCS2 = "UCS-2", "UCS-2"


StatusChoices = models.TextChoices("StatusChoices", [(s.name, s.value) for s in Status])


class Source(models.TextChoices):
    API = "api", "API"
    ADMIN = "admin", "Admin"
    SENDER = "sender", "Sender"
    WEBHOOK = "webhook", "Webhook"
    RECONCILE = "reconcile", "Reconcile"
    RETENTION = "retention", "Retention"


DEFAULT_CLIENT_SLUG = "default"


class ClientManager(models.Manager):
    def default(self) -> "Client":
        """The client that staff sends and pre-client rows belong to (migration 0004)."""
        client, _ = self.get_or_create(
            slug=DEFAULT_CLIENT_SLUG, defaults={"name": "Default client"}
        )
        return client


class Client(models.Model):
    """One application that sends through Herald. It owns its messages, idempotency keys, API
    keys and rate limits; no client can read another's rows (messaging/selectors scope by it)."""

    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=50, unique=True)
    is_active = models.BooleanField("active", default=True)
    # Blank means the setting (API_SEND_RATE_LIMIT / API_RATE_LIMIT); django-ratelimit syntax.
    send_rate_limit = models.CharField(max_length=32, blank=True)
    read_rate_limit = models.CharField(max_length=32, blank=True)
    default_provider = models.CharField(max_length=32, blank=True)
    default_sender_id = models.CharField(max_length=32, blank=True)
    # Empty: every enabled provider.
    allowed_providers = models.JSONField(default=list, blank=True)
    # Numbers and sender ids the client owns: inbound SMS to one of them belong to the client.
    owned_numbers = models.JSONField(default=list, blank=True)
    # Days after which this client's message bodies are erased (blank: RETENTION_BODY_DAYS).
    retention_body_days = models.PositiveIntegerField(
        "keep bodies for (days)", null=True, blank=True,
        help_text="Blank: the RETENTION_BODY_DAYS setting. Bodies and raw payloads older than "
        "this are erased by purge_payloads; statuses and timestamps stay.",
    )  # fmt: skip
    # Status callbacks (messaging/services/callbacks.py): where the client's events are pushed.
    # Checked by callbacks.check_url when set and again when connecting (SSRF guard).
    callback_url = models.CharField(max_length=500, blank=True, validators=[validate_url])
    # Signing secrets (`whsec_<base64>`). Ours to sign with, so stored as they are (not hashed);
    # not editable in forms and never logged. During a rotation both sign every callback.
    callback_secret = models.CharField(max_length=100, blank=True, editable=False)
    callback_secret_previous = models.CharField(max_length=100, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ClientManager()

    class Meta:
        ordering = ["name"]
        permissions = [("manage_client", "Can create API keys for and revoke keys of a client")]

    def __str__(self):
        return self.name


class ApiKey(models.Model):
    """An API key of a client. Only its SHA-256 is stored; `prefix` identifies it in lists and
    logs. The full key is shown once, when it is created (messaging/services/clients.py)."""

    class Kind(models.TextChoices):
        LIVE = "live", "Live"
        TEST = "test", "Test (always the sandbox)"

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=4, choices=Kind.choices, default=Kind.LIVE)
    prefix = models.CharField(max_length=32)
    hashed_key = models.CharField(max_length=64, unique=True)  # sha256 hex of the full key
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self):
        return f"{self.prefix}… ({self.name})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class Message(models.Model):
    """One SMS. An outbound row in `queued` is the outbox entry the sender picks up."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Outbound: always set (a constraint). Inbound: the client owning the number, or none.
    client = models.ForeignKey(
        Client, null=True, blank=True, on_delete=models.PROTECT, related_name="messages"
    )
    # The API key that created it (none for staff sends and inbound messages).
    api_key = models.ForeignKey(
        ApiKey,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,  # msg_api_key_idx, partial
    )
    direction = models.CharField(
        max_length=8, choices=Direction.choices, default=Direction.OUTBOUND
    )
    to_number = models.CharField("to", max_length=32)
    from_number = models.CharField("from", max_length=32, blank=True)
    body = models.TextField()
    provider = models.CharField(max_length=32)
    # True when `provider` came from a route (messaging/services/routing.py), so the sender may
    # move it to another of the route's providers; false when the caller named the provider.
    routed = models.BooleanField(default=False)
    # The provider's id for the message (Sinch: the batch id). Per-part ids live on MessagePart.
    provider_message_id = models.CharField(max_length=128, null=True, blank=True)
    client_reference = models.CharField(max_length=100, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    # Overrides the client's callback_url for this message's events (send API `callback_url`).
    callback_url = models.CharField(max_length=500, blank=True, validators=[validate_url])
    status = models.CharField(max_length=16, choices=StatusChoices.choices, default=Status.QUEUED)
    error_code = models.CharField(max_length=64, blank=True)
    error_text = models.TextField(blank=True)
    segments = models.PositiveSmallIntegerField(default=1)
    encoding = models.CharField(max_length=8, choices=Encoding.choices, default=Encoding.GSM7)
    price = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    lease_owner = models.CharField(max_length=64, blank=True)
    send_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    resend_of = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="resends",
        db_index=False,  # msg_resend_of_idx, partial
    )
    resend_reason = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        db_index=False,  # msg_created_by_idx, partial
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [
            ("resend_message", "Can resend a message"),
            ("cancel_message", "Can cancel a queued message"),
            ("view_dashboard", "Can view the delivery dashboard"),
            ("export_message_body", "Can export message text in the CSV export"),
        ]
        # Each index is named by the query that uses it in docs/indexes.md. A receipt's UPDATE
        # writes an entry into every index whose predicate the new row satisfies (it cannot be
        # HOT while `status` is indexed), so indexes on mostly empty columns are partial.
        indexes = [
            models.Index(fields=["-created_at"], name="msg_created_idx"),
            models.Index(fields=["status", "-created_at"], name="msg_status_created_idx"),
            models.Index(fields=["provider", "-created_at"], name="msg_provider_created_idx"),
            models.Index(fields=["to_number"], name="msg_to_idx"),
            models.Index(
                fields=["client_reference"],
                name="msg_client_ref_idx",
                condition=~Q(client_reference=""),
            ),
            models.Index(fields=["from_number"], name="msg_from_idx"),
            models.Index(
                fields=["error_code", "-created_at"],
                name="msg_error_created_idx",
                condition=~Q(error_code=""),
            ),
            # The direction filter: inbound rows are few; outbound reads msg_created_idx.
            models.Index(
                fields=["-created_at"],
                name="msg_inbound_created_idx",
                condition=Q(direction=Direction.INBOUND),
            ),
            # Deletes of an API key, a user or an original message (SET NULL / PROTECT).
            models.Index(
                fields=["api_key"], name="msg_api_key_idx", condition=Q(api_key__isnull=False)
            ),
            models.Index(
                fields=["created_by"],
                name="msg_created_by_idx",
                condition=Q(created_by__isnull=False),
            ),
            models.Index(
                fields=["resend_of"], name="msg_resend_of_idx", condition=Q(resend_of__isnull=False)
            ),
            # The sender's claim query: due queued messages, oldest first.
            models.Index(
                fields=["next_attempt_at"],
                name="msg_due_idx",
                condition=Q(status=Status.QUEUED),
            ),
            # Retention (purge_payloads) scans only rows whose body is still kept, oldest first.
            models.Index(fields=["created_at"], name="msg_body_kept_idx", condition=~Q(body="")),
            # Lease recovery and receipt time-outs scan only in-flight rows.
            models.Index(
                fields=["status", "updated_at"],
                name="msg_inflight_idx",
                condition=Q(status__in=[Status.SENDING, Status.SENT, Status.UNKNOWN]),
            ),
        ]
        constraints = [
            # provider_message_id first: the same index serves the admin's exact provider-id
            # search, which names no provider.
            models.UniqueConstraint(
                fields=["provider_message_id", "provider", "direction"],
                name="msg_provider_id_unique",
            ),
            models.CheckConstraint(
                condition=Q(direction="inbound") | Q(client__isnull=False),
                name="msg_outbound_has_client",
            ),
        ]

    def __str__(self):
        return f"{self.direction} {self.to_number} ({self.status})"

    @property
    def is_terminal(self):
        from messaging.status import is_terminal

        return is_terminal(self.status)


class MessagePart(models.Model):
    """One provider id of a multipart message (Vonage SMS API gives one id and one receipt per
    part). Single-id messages get one part too, so roll-up is uniform."""

    # part_index_unique (message, index) serves the FK's lookups.
    message = models.ForeignKey(
        Message, on_delete=models.CASCADE, related_name="parts", db_index=False
    )
    index = models.PositiveSmallIntegerField()
    provider = models.CharField(max_length=32)
    provider_message_id = models.CharField(max_length=128)
    status = models.CharField(max_length=16, choices=StatusChoices.choices, default=Status.SENT)
    error_code = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["message", "index"]
        constraints = [
            # provider_message_id first: it also serves the admin's search by a part's id.
            models.UniqueConstraint(
                fields=["provider_message_id", "provider"], name="part_provider_id_unique"
            ),
            models.UniqueConstraint(fields=["message", "index"], name="part_index_unique"),
        ]

    def __str__(self):
        return f"part {self.index + 1} {self.provider_message_id} ({self.status})"


class AppendOnlyQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise TypeError("audit rows are append-only")

    def delete(self):
        raise TypeError("audit rows are append-only")

    def erase_payloads(self) -> int:
        """The one change audit rows allow: retention (messaging/services/retention.py) erases
        the raw provider payloads, which hold personal data. Only that column, only to null;
        every other fact of the event stays."""
        return models.QuerySet.update(self.exclude(raw_payload__isnull=True), raw_payload=None)


class StatusEvent(models.Model):
    """One entry of a message's audit trail. Append-only: never updated or deleted."""

    # event_message_idx (message, received_at) serves the FK's lookups.
    message = models.ForeignKey(
        Message, on_delete=models.PROTECT, related_name="events", db_index=False
    )
    status = models.CharField(max_length=16, choices=StatusChoices.choices)
    provider_status = models.CharField(max_length=64, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    error_text = models.TextField(blank=True)
    part_id = models.CharField(max_length=128, blank=True)
    provider_timestamp = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)
    source = models.CharField(max_length=16, choices=Source.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        db_index=False,  # event_actor_idx, partial
    )
    applied = models.BooleanField(default=True)
    note = models.TextField(blank=True)
    raw_payload = models.JSONField(null=True, blank=True)
    # Unique through event_dedupe_key_unique: a UniqueConstraint, not unique=True, which on
    # PostgreSQL adds a second (LIKE) index that every event insert would pay for.
    dedupe_key = models.CharField(max_length=64, null=True, blank=True)
    webhook_request = models.ForeignKey(
        "WebhookRequest", null=True, blank=True, on_delete=models.PROTECT, related_name="events"
    )

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        ordering = ["received_at", "id"]
        indexes = [
            models.Index(fields=["message", "received_at"], name="event_message_idx"),
            models.Index(
                fields=["actor"], name="event_actor_idx", condition=Q(actor__isnull=False)
            ),
        ]
        constraints = [
            models.UniqueConstraint(fields=["dedupe_key"], name="event_dedupe_key_unique"),
        ]

    def __str__(self):
        return f"{self.status} via {self.source} at {self.received_at:%Y-%m-%d %H:%M:%S}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise TypeError("StatusEvent rows are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise TypeError("StatusEvent rows are append-only")


class WebhookRequest(models.Model):
    """What a provider posted, stored before it is acknowledged (the evidence row)."""

    class State(models.TextChoices):
        RECEIVED = "received", "Received, not yet processed"
        PROCESSED = "processed", "Processed"
        FAILED = "failed", "Processing failed"
        INVALID = "invalid", "Unparseable payload"
        UNAUTHENTICATED = "unauthenticated", "Failed authentication"
        TOO_LARGE = "too_large", "Too large (413)"

    provider = models.CharField(max_length=32)
    kind = models.CharField(max_length=8)  # "status" or "inbound"
    received_at = models.DateTimeField(auto_now_add=True)
    method = models.CharField(max_length=8)
    path = models.CharField(max_length=512)
    query_string = models.TextField(blank=True)
    headers = models.JSONField(default=dict)
    # The whole body for an authenticated request; at most the first REFUSED_BODY_BYTES of a
    # refused one (failed authentication, too large): size and hash say what the rest was.
    body = models.BinaryField(blank=True)
    body_size = models.PositiveIntegerField(default=0)
    body_sha256 = models.CharField(max_length=64, blank=True)
    remote_addr = models.GenericIPAddressField(null=True, blank=True)
    authenticated = models.BooleanField(default=False)
    auth_error = models.CharField(max_length=255, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.RECEIVED)
    error = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    report_count = models.PositiveIntegerField(default=0)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-received_at"]
        permissions = [("replay_webhookrequest", "Can replay a stored webhook request")]
        indexes = [
            models.Index(fields=["-received_at"], name="webhook_received_idx"),
            models.Index(fields=["provider", "authenticated"], name="webhook_auth_idx"),
            models.Index(
                fields=["received_at"],
                name="webhook_pending_idx",
                condition=Q(state="received"),
            ),
        ]

    def __str__(self):
        return f"{self.provider} {self.kind} #{self.pk}"


class RefusedWebhookTally(models.Model):
    """Refused webhook requests (failed authentication, too large) beyond the per-provider
    budget of stored ones per minute (WEBHOOK_REFUSED_STORED_PER_MINUTE): only counted, one row
    per provider per minute, so a flood of forgeries cannot fill the database."""

    provider = models.CharField(max_length=32)
    minute = models.DateTimeField()
    requests = models.PositiveIntegerField(default=0)
    bytes = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["provider", "minute"], name="refused_tally_unique")
        ]

    def __str__(self):
        return f"{self.provider} {self.minute:%Y-%m-%d %H:%M}: {self.requests} refused"


class UnmatchedReport(models.Model):
    """A receipt whose message is not known yet (it can beat the send response). Applied as soon
    as a message with its provider id or client reference appears; never dropped."""

    provider = models.CharField(max_length=32)
    provider_message_id = models.CharField(max_length=128, blank=True)
    client_reference = models.CharField(max_length=100, blank=True)
    report = models.JSONField()
    webhook_request = models.ForeignKey(WebhookRequest, null=True, on_delete=models.PROTECT)
    created_at = models.DateTimeField(auto_now_add=True)
    matched_at = models.DateTimeField(null=True, blank=True)
    message = models.ForeignKey(Message, null=True, blank=True, on_delete=models.PROTECT)

    class Meta:
        indexes = [
            models.Index(
                fields=["provider", "provider_message_id"],
                name="unmatched_provider_id_idx",
                condition=Q(matched_at__isnull=True),
            ),
            models.Index(
                fields=["client_reference"],
                name="unmatched_ref_idx",
                condition=Q(matched_at__isnull=True),
            ),
        ]

    def __str__(self):
        return f"{self.provider} {self.provider_message_id or self.client_reference}"


class OptOut(models.Model):
    """A number that asked not to receive messages. Present = opted out."""

    phone_number = models.CharField(max_length=32, unique=True)
    keyword = models.CharField(max_length=32, blank=True)
    source_message = models.ForeignKey(Message, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "opt-out"
        verbose_name_plural = "opt-outs"

    def __str__(self):
        return self.phone_number


class OptOutChange(models.Model):
    """History of opt-out and opt-in changes, each with what caused it."""

    class Action(models.TextChoices):
        OPT_OUT = "opt_out", "Opted out"
        OPT_IN = "opt_in", "Opted in"

    phone_number = models.CharField(max_length=32, db_index=True)
    action = models.CharField(max_length=8, choices=Action.choices)
    keyword = models.CharField(max_length=32, blank=True)
    reason = models.CharField(max_length=255, blank=True)
    source_message = models.ForeignKey(Message, null=True, blank=True, on_delete=models.SET_NULL)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.phone_number} {self.action}"


class IdempotencyKey(models.Model):
    """An `Idempotency-Key` an API client sent with a create request. Per client: the same
    string from two clients is two keys."""

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64)  # sha256 of the canonical request body
    # What the key created: one message (a send, a resend) or one batch.
    message = models.ForeignKey(Message, null=True, blank=True, on_delete=models.CASCADE)
    batch = models.ForeignKey(
        "MessageBatch", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["client", "key"], name="idempotency_key_unique"),
            models.CheckConstraint(
                condition=Q(message__isnull=False, batch__isnull=True)
                | Q(message__isnull=True, batch__isnull=False),
                name="idempotency_key_one_target",
            ),
        ]

    def __str__(self):
        return self.key


class MessageBatch(models.Model):
    """One batch send: many messages created in one transaction. `result` is the answer the
    API gave (ids by recipient index, opted-out and invalid recipients), replayed as it was for
    the same Idempotency-Key."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    client = models.ForeignKey(Client, on_delete=models.PROTECT, related_name="batches")
    api_key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    recipients = models.PositiveIntegerField()
    accepted = models.PositiveIntegerField()
    result = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"batch {self.pk} ({self.accepted}/{self.recipients})"


class SandboxReceipt(models.Model):
    """A receipt the sandbox provider will post to its own webhook when it falls due."""

    message_id = models.UUIDField()
    due_at = models.DateTimeField()
    payload = models.JSONField()
    delivered_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)

    class Meta:
        indexes = [
            models.Index(
                fields=["due_at"], name="sandbox_due_idx", condition=Q(delivered_at__isnull=True)
            )
        ]

    def __str__(self):
        return f"{self.payload.get('status')} for {self.message_id}"


class ProviderPacing(models.Model):
    """The next free send slot per provider, shared by every sender process on every host, so
    that together they keep to the provider's rate limit (messaging/services/pacing.py)."""

    provider = models.CharField(max_length=32, primary_key=True)
    next_slot = models.FloatField(default=0.0)  # unix time

    def __str__(self):
        return f"{self.provider} next slot {self.next_slot:.3f}"


class WorkerHeartbeat(models.Model):
    """The last time each worker process (a sender or an applier loop) showed it was alive.
    One row per process, written at most every HEARTBEAT_INTERVAL seconds; /readyz and the
    herald_worker_heartbeat_age_seconds gauge read it (messaging/services/heartbeat.py)."""

    class Kind(models.TextChoices):
        SENDER = "sender", "Sender"
        APPLIER = "applier", "Applier"

    worker_id = models.CharField(max_length=64, primary_key=True)  # host:pid:random
    kind = models.CharField(max_length=16, choices=Kind.choices)
    started_at = models.DateTimeField()
    last_seen = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["kind", "last_seen"], name="heartbeat_kind_seen_idx")]

    def __str__(self):
        return f"{self.kind} {self.worker_id} at {self.last_seen:%H:%M:%S}"


class Callback(models.Model):
    """One event to push to a client's endpoint: the callbacks outbox. Written in the same
    transaction as the change it reports (messaging/services/callbacks.py), delivered at least
    once by `run_callbacks` (messaging/callback_worker.py). `event_id` is the `webhook-id`
    header: every delivery of the event, retries and replays alike, carries the same one."""

    class Type(models.TextChoices):
        MESSAGE_STATUS = "message.status", "message.status"
        MESSAGE_INBOUND = "message.inbound", "message.inbound"
        OPTOUT_CHANGED = "optout.changed", "optout.changed"

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"

    event_id = models.CharField(max_length=40, unique=True)
    event_type = models.CharField(max_length=20, choices=Type.choices)
    occurred_at = models.DateTimeField()
    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="callbacks")
    # Message events: the message and its per-message sequence number (1, 2, ...).
    message = models.ForeignKey(
        Message, null=True, blank=True, on_delete=models.CASCADE, related_name="callbacks"
    )
    sequence = models.PositiveIntegerField(null=True, blank=True)
    payload = models.JSONField()
    url = models.CharField(max_length=500)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    # Retried until then (CALLBACK_MAX_AGE_HOURS after the event, or after a replay).
    give_up_at = models.DateTimeField()
    lease_owner = models.CharField(max_length=64, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    # Set by a replay until the replayed delivery is attempted; copied to that attempt.
    replay_requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )  # fmt: skip
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [("replay_callback", "Can replay a status callback")]
        indexes = [
            # The worker's claim: due pending rows, oldest first.
            models.Index(
                fields=["next_attempt_at"],
                name="callback_due_idx",
                condition=Q(state="pending"),
            ),
            models.Index(fields=["client", "-created_at"], name="callback_client_idx"),
            models.Index(fields=["url", "state"], name="callback_url_state_idx"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["message", "sequence"], name="callback_message_sequence_unique"
            )
        ]

    def __str__(self):
        return f"{self.event_type} {self.event_id}"


class CallbackAttempt(models.Model):
    """One HTTP request to a client's endpoint (or the reason none could be made)."""

    callback = models.ForeignKey(Callback, on_delete=models.CASCADE, related_name="attempts_log")
    started_at = models.DateTimeField()
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    response_excerpt = models.TextField(blank=True)  # the answer's first bytes
    error = models.TextField(blank=True)
    ok = models.BooleanField(default=False)
    replayed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )  # fmt: skip

    class Meta:
        ordering = ["started_at", "id"]
        indexes = [models.Index(fields=["started_at"], name="callback_attempt_time_idx")]

    def __str__(self):
        return f"{self.http_status or self.error[:40]} at {self.started_at:%H:%M:%S}"


class CallbackEndpoint(models.Model):
    """The circuit breaker of one callback URL, shared by every worker through the database:
    after CALLBACK_CIRCUIT_THRESHOLD failures in a row it opens, and the URL gets one probe
    per CALLBACK_CIRCUIT_COOLDOWN seconds until one succeeds, so a dead endpoint holds no
    worker thread that another client's callbacks could use."""

    class Circuit(models.TextChoices):
        CLOSED = "closed", "Closed (healthy)"
        OPEN = "open", "Open (failing; probed)"

    url = models.CharField(max_length=500, unique=True)
    circuit = models.CharField(max_length=8, choices=Circuit.choices, default=Circuit.CLOSED)
    consecutive_failures = models.PositiveIntegerField(default=0)
    opened_at = models.DateTimeField(null=True, blank=True)
    retry_at = models.DateTimeField(null=True, blank=True)  # open: the next probe's time
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_failure_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    def __str__(self):
        return f"{self.url} ({self.circuit})"


class CallbackHealth(Client):
    """Clients seen from their callback endpoint (an admin page: success rate, circuit)."""

    class Meta:
        proxy = True
        verbose_name = "callback endpoint health"
        verbose_name_plural = "callback endpoint health"


# --- Routing and provider health (messaging/services/routing.py, provider_health.py) ----------


class Route(models.Model):
    """A routing-table entry editable in the admin: a destination (an ISO country code such as
    `GB`, a number prefix such as `+4477`, or `*`) mapped to weighted providers, written as in
    SMS_ROUTES (`sinch 70, infobip 30`). With a client it overrides the global table for that
    client; a global row overrides the SMS_ROUTES entry for the same destination."""

    client = models.ForeignKey(
        Client, null=True, blank=True, on_delete=models.CASCADE, related_name="routes"
    )
    destination = models.CharField(max_length=16, help_text="GB, +4477 or *")
    providers = models.CharField(
        max_length=255, help_text="Weighted providers, e.g. 'sinch 70, infobip 30'."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["client__name", "destination"]
        constraints = [
            models.UniqueConstraint(
                fields=["client", "destination"], name="route_client_destination_unique"
            ),
            models.UniqueConstraint(
                fields=["destination"],
                condition=Q(client__isnull=True),
                name="route_global_destination_unique",
            ),
        ]

    def __str__(self):
        owner = f" ({self.client})" if self.client_id else ""
        return f"{self.destination}: {self.providers}{owner}"

    def clean(self):
        from django.core.exceptions import ValidationError

        from messaging.services import routing

        try:
            self.destination = routing.parse_destination(self.destination)
            routing.parse_weights(self.providers)
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc


class ProviderHealth(models.Model):
    """One provider's circuit and demotion state, shared by every sender through the database."""

    class State(models.TextChoices):
        CLOSED = "closed", "Closed (sending)"
        OPEN = "open", "Open (skipped)"
        HALF_OPEN = "half_open", "Half-open (probing)"

    provider = models.CharField(max_length=32, primary_key=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.CLOSED)
    state_since = models.DateTimeField()
    next_probe_at = models.DateTimeField(null=True, blank=True)
    probe_successes = models.PositiveIntegerField(default=0)
    demoted = models.BooleanField(default=False)
    # Receipt figures of the last evaluation (ROUTING_RECEIPT_WINDOW_MINUTES).
    receipts_checked_at = models.DateTimeField(null=True, blank=True)
    receipt_sample = models.PositiveIntegerField(default=0)
    delivery_rate = models.FloatField(null=True, blank=True)
    latency_p95 = models.FloatField("sent to delivered p95 (s)", null=True, blank=True)

    class Meta:
        verbose_name = "provider health"
        verbose_name_plural = "provider routing"
        permissions = [("view_routing", "Can view the routing page (provider health)")]

    def __str__(self):
        return f"{self.provider}: {self.state}" + (" (demoted)" if self.demoted else "")

    def effective_state(self, now=None) -> str:
        """An open circuit whose ROUTING_CIRCUIT_OPEN_SECONDS have passed is ready for probes."""
        from django.utils import timezone

        if self.state == self.State.OPEN:
            now = now or timezone.now()
            if (now - self.state_since).total_seconds() >= settings.ROUTING_CIRCUIT_OPEN_SECONDS:
                return self.State.HALF_OPEN
        return self.state


class ProviderSendBucket(models.Model):
    """Send outcomes of one provider in one time slice (ROUTING_BUCKET_SECONDS), upserted by the
    senders once per flush: a row per provider per slice, not per message."""

    provider = models.CharField(max_length=32)
    slice_start = models.DateTimeField()
    ok = models.PositiveIntegerField(default=0)
    http_5xx = models.PositiveIntegerField(default=0)
    timeouts = models.PositiveIntegerField(default=0)
    refused = models.PositiveIntegerField(default=0)  # connection refused: never reached it
    throttled = models.PositiveIntegerField(default=0)
    rejected = models.PositiveIntegerField(default=0)  # permanent refusals of one message

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "slice_start"], name="send_bucket_provider_slice_unique"
            )
        ]

    def __str__(self):
        return f"{self.provider} {self.slice_start:%H:%M:%S}"


class ProviderHealthEvent(models.Model):
    """Audit of every circuit and demotion change (open, half-open, close, demote, restore), with
    the figures that caused it. Append-only."""

    class Kind(models.TextChoices):
        OPEN = "open", "Circuit opened"
        HALF_OPEN = "half_open", "Circuit half-open (probing)"
        CLOSE = "close", "Circuit closed"
        DEMOTE = "demote", "Demoted"
        RESTORE = "restore", "Restored"

    provider = models.CharField(max_length=32)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    reason = models.TextField()
    figures = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["provider", "-created_at"], name="health_event_idx")]

    def __str__(self):
        return f"{self.provider} {self.kind} at {self.created_at:%Y-%m-%d %H:%M:%S}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise TypeError("ProviderHealthEvent rows are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise TypeError("ProviderHealthEvent rows are append-only")
