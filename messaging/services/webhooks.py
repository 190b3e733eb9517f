"""Webhook evidence: store what arrived, then parse and apply it. A stored request can be
processed again (replay) with the same result, because every report is deduplicated."""

import functools
import hashlib
import logging
import traceback

import psycopg
from django.conf import settings
from django.core.cache import cache
from django.db import connection, models, transaction
from django.utils import timezone

from messaging import providers
from messaging.models import RefusedWebhookTally, Source, StatusEvent, WebhookRequest
from messaging.providers.base import WebhookInput, WebhookParseError, check_items
from messaging.services import receipts
from messaging.services.inbound import record_inbound

log = logging.getLogger("herald.webhooks")

# Headers worth keeping as evidence: what signatures and content negotiation depend on; each
# provider's own signature headers come from its class (Provider.EVIDENCE_HEADERS).
KEPT_HEADERS = (
    "content-type",
    "content-length",
    "user-agent",
    "authorization",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    *dict.fromkeys(
        h for n in providers.known_names() for h in providers.backend_class(n).EVIDENCE_HEADERS
    ),
)
REDACTED_HEADERS = ("authorization",)


def evidence_headers(headers: dict) -> dict:
    kept = {k: v for k, v in headers.items() if k in KEPT_HEADERS}
    for name in REDACTED_HEADERS:
        if name in kept:  # keep the scheme, never the credential
            kept[name] = kept[name].split(" ")[0] + " [redacted]"
    return kept


# Query parameters that are credentials (Infobip's callback token): stored redacted.
REDACTED_PARAMS = ("token",)


def evidence_query(query: str) -> str:
    if not any(f"{name}=" in query for name in REDACTED_PARAMS):
        return query
    parts = []
    for part in query.split("&"):
        name, sep, _ = part.partition("=")
        parts.append(f"{name}=[redacted]" if sep and name in REDACTED_PARAMS else part)
    return "&".join(parts)


# What a refused request keeps of its body: enough to see what it was, not enough to fill the
# database (size and SHA-256 describe the whole).
REFUSED_BODY_BYTES = 2048


def store(
    provider: str, kind: str, winput: WebhookInput, path: str, *, size=None, row=True, **fields
):
    """Write the evidence row (one INSERT, committed on return outside a transaction) and return
    it, or only its id with row=False (the deferred webhook's hot path needs no model instance).
    Only an authenticated request keeps its whole body; `size` is the declared size when the
    body was not read (too large)."""
    body = winput.body
    whole = len(body) if size is None else size
    if not fields.get("authenticated"):
        body = body[:REFUSED_BODY_BYTES]
    values = dict(
        provider=provider,
        kind=kind,
        method=winput.method,
        path=path[:512],
        query_string=evidence_query(winput.url.partition("?")[2]),
        headers=evidence_headers(winput.headers),
        body=body,
        body_size=whole,
        body_sha256=hashlib.sha256(winput.body).hexdigest() if size is None else "",
        remote_addr=winput.remote_addr or None,
        **fields,
    )
    if connection.vendor != "postgresql":
        stored = WebhookRequest.objects.create(**values)
        return stored if row else stored.pk
    values["received_at"] = timezone.now()
    pk = _insert(values)
    if not row:
        return pk
    stored = WebhookRequest(pk=pk, **values)
    stored._state.adding, stored._state.db = False, connection.alias
    return stored


def _insert(values: dict) -> int:
    """INSERT ... RETURNING id with a prebuilt statement: the webhook's hot path is this one
    round trip. Model.save() spent about as much CPU compiling the statement as the rest of the
    request, and CPU is what bounds receipts per second (bench/RESULTS.md). Same columns and
    defaults as save() (`values` holds received_at, the one auto_now_add field); no signal is
    connected to WebhookRequest. Going around connection.cursor() also skips
    CONN_HEALTH_CHECKS' `SELECT 1`: a dead persistent connection fails this insert with a
    DatabaseError instead (503, the provider retries) and Django discards the connection at the
    end of the request."""
    params = []
    for name, default, convert in _insert_plan():
        value = values[name] if name in values else default()
        params.append(convert(value, connection) if convert else value)
    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        # Parameters bound server-side (bytes travel as bytes). Prepared once the connection has
        # run it prepare_threshold times (DB_PREPARE_THRESHOLD; empty: never, for a PgBouncer in
        # transaction mode older than 1.21 or without max_prepared_statements).
        cursor.execute(_insert_sql(), params)
        return cursor.fetchone()[0]


def refuse(provider: str, kind: str, winput: WebhookInput, path: str, *, size=None, **fields):
    """Keep the evidence of a refused request (failed authentication, too large) while the
    provider's budget for this minute lasts (WEBHOOK_REFUSED_STORED_PER_MINUTE); beyond it only
    count it. Returns the stored row, or None when it was only counted."""
    minute = timezone.now().replace(second=0, microsecond=0)
    key = f"herald:webhook-refused:{provider}:{minute:%Y%m%d%H%M}"
    cache.add(key, 0, timeout=120)
    try:
        seen = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=120)
        seen = 1
    if seen <= settings.WEBHOOK_REFUSED_STORED_PER_MINUTE:
        return store(provider, kind, winput, path, size=size, **fields)
    _count_refused(provider, minute, len(winput.body) if size is None else size)
    return None


def _count_refused(provider: str, minute, size: int):
    """One row per provider per minute, incremented in one statement (SQLite and PostgreSQL)."""
    table = connection.ops.quote_name(RefusedWebhookTally._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (provider, minute, requests, bytes) "  # noqa: S608
            "VALUES (%s, %s, 1, %s) ON CONFLICT (provider, minute) DO UPDATE SET "
            f"requests = {table}.requests + 1, bytes = {table}.bytes + excluded.bytes",
            [provider, minute, size],
        )


@functools.cache
def _insert_fields():
    return [f for f in WebhookRequest._meta.concrete_fields if not f.primary_key]


@functools.cache
def _insert_plan():
    """(attname, default, conversion or None) per column, in _insert_sql()'s order."""
    plan = []
    for f in _insert_fields():
        # JSON and bytea need the backend's adapters. Text, numbers, booleans and aware
        # datetimes go to psycopg as they are, and so does the address: a str is sent untyped
        # and PostgreSQL casts it to inet (Django's adapter parses it with ipaddress first,
        # 4 % of the request's CPU in a profile).
        converted = (models.JSONField, models.BinaryField)
        convert = f.get_db_prep_save if isinstance(f, converted) else None
        plan.append((f.attname, f.get_default, convert))
    return plan


@functools.cache
def _insert_sql():
    qn = connection.ops.quote_name
    fields = _insert_fields()
    return (  # identifiers from the model, values as parameters
        f"INSERT INTO {qn(WebhookRequest._meta.db_table)} "  # noqa: S608
        f"({', '.join(qn(f.column) for f in fields)}) "
        f"VALUES ({', '.join(['%s'] * len(fields))}) RETURNING {qn(WebhookRequest._meta.pk.column)}"
    )


def input_from_stored(stored: WebhookRequest, url: str) -> WebhookInput:
    from urllib.parse import parse_qsl

    return WebhookInput(
        method=stored.method,
        url=url,
        headers=dict(stored.headers),
        body=bytes(stored.body),
        query=parse_qsl(stored.query_string, keep_blank_values=True),
        remote_addr=stored.remote_addr or "",
    )


def parse(provider_name: str, kind: str, winput: WebhookInput) -> list:
    provider = providers.get_provider(provider_name)
    if kind == "inbound":
        return check_items(provider.parse_inbound_webhook(winput))
    return check_items(provider.parse_status_webhook(winput))


def apply_parsed(
    stored: WebhookRequest, items: list, *, actor=None, source=Source.WEBHOOK, replayed=False
):
    """Apply parsed reports or inbound messages; record the result on the evidence row."""
    try:
        with transaction.atomic():  # a failure leaves the caller's transaction usable
            if stored.kind == "inbound":
                for item in items:
                    record_inbound(stored.provider, item, webhook_request=stored)
            else:
                receipts.apply(
                    [receipts.Incoming(stored.provider, item, stored) for item in items],
                    source=source,
                    actor=actor,
                    show_duplicates=not replayed,
                )
    except Exception as exc:
        log.exception("webhook processing failed", extra={"webhook_request": stored.pk})
        mark(stored, WebhookRequest.State.FAILED, error=f"{type(exc).__name__}: {exc}",
              traceback=traceback.format_exc(), report_count=len(items))  # fmt: skip
        return False
    mark(stored, WebhookRequest.State.PROCESSED, error="", traceback="", report_count=len(items))
    return True


def process(stored: WebhookRequest, winput: WebhookInput, **kwargs) -> bool:
    """Parse and apply a stored request. False when the body could not be parsed."""
    try:
        items = parse(stored.provider, stored.kind, winput)
    except WebhookParseError as exc:
        mark(stored, WebhookRequest.State.INVALID, error=str(exc)[:2000])
        return False
    return apply_parsed(stored, items, **kwargs)


def replay(stored: WebhookRequest, *, actor=None) -> bool:
    """Process a stored, authenticated request again. Idempotent: duplicates are recognised."""
    if not stored.authenticated:
        raise ValueError("Only authenticated requests can be replayed.")
    from django.conf import settings

    url = f"{settings.PUBLIC_BASE_URL}{stored.path}"
    if stored.query_string:
        url += "?" + stored.query_string
    before = set(stored.events.values_list("id", flat=True))
    ok = process(
        stored, input_from_stored(stored, url), actor=actor, source=Source.WEBHOOK, replayed=True
    )
    for message_id in set(stored.events.values_list("message_id", flat=True)):
        StatusEvent.objects.create(
            message_id=message_id,
            status=stored.events.filter(message_id=message_id).latest("id").status,
            source=Source.ADMIN,
            actor=actor,
            applied=False,
            note=f"webhook request #{stored.pk} replayed"
            + ("" if ok else f" ({stored.state})")
            + f"; {stored.events.exclude(id__in=before).count()} new event(s)",
        )
    return ok


def mark(stored: WebhookRequest, state, **fields):
    """Record a processing outcome on the evidence row (and on the instance)."""
    stored.state = state
    stored.processed_at = timezone.now()
    for name, value in fields.items():
        setattr(stored, name, value)
    with transaction.atomic():
        WebhookRequest.objects.filter(pk=stored.pk).update(
            state=state, processed_at=stored.processed_at, **fields
        )
