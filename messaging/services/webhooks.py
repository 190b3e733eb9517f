"""Webhook evidence: store what arrived, then parse and apply it. A stored request can be
processed again (replay) with the same result, because every report is deduplicated."""

import functools
import logging
import traceback

import psycopg
from django.db import connection, transaction
from django.utils import timezone

from messaging import providers
from messaging.models import Source, StatusEvent, WebhookRequest
from messaging.providers.base import WebhookInput, WebhookParseError, check_items
from messaging.services.inbound import record_inbound
from messaging.services.receipts import apply_report

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


def store(provider: str, kind: str, winput: WebhookInput, path: str, **fields) -> WebhookRequest:
    """Write the evidence row (one INSERT, committed on return outside a transaction)."""
    values = dict(
        provider=provider,
        kind=kind,
        method=winput.method,
        path=path[:512],
        query_string=evidence_query(winput.url.partition("?")[2]),
        headers=evidence_headers(winput.headers),
        body=winput.body,
        remote_addr=winput.remote_addr or None,
        **fields,
    )
    if connection.vendor != "postgresql":
        return WebhookRequest.objects.create(**values)
    return _insert(WebhookRequest(**values))


def _insert(row: WebhookRequest) -> WebhookRequest:
    """INSERT ... RETURNING id with a prebuilt statement: the webhook's hot path is this one
    round trip. Model.save() spent about as much CPU compiling the statement as the rest of the
    request, and CPU is what bounds receipts per second (bench/RESULTS.md). Same columns,
    defaults and conversions as save(); no signal is connected to WebhookRequest. Going
    around connection.cursor() also skips CONN_HEALTH_CHECKS' `SELECT 1`: a dead persistent
    connection fails this insert with a DatabaseError instead (503, the provider retries) and
    Django discards the connection at the end of the request."""
    fields = _insert_fields()
    values = [f.get_db_prep_save(f.pre_save(row, True), connection) for f in fields]
    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        # Parameters bound server-side (bytes travel as bytes); never a named prepared
        # statement, which a transaction-pooling PgBouncer would not keep.
        cursor.execute(_insert_sql(), values, prepare=False)
        row.pk = cursor.fetchone()[0]
    row._state.adding, row._state.db = False, connection.alias
    return row


@functools.cache
def _insert_fields():
    return [f for f in WebhookRequest._meta.concrete_fields if not f.primary_key]


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


def apply_parsed(stored: WebhookRequest, items: list, *, actor=None, source=Source.WEBHOOK):
    """Apply parsed reports or inbound messages; record the result on the evidence row."""
    try:
        for item in items:
            if stored.kind == "inbound":
                record_inbound(stored.provider, item, webhook_request=stored)
            else:
                apply_report(
                    stored.provider, item, webhook_request=stored, source=source, actor=actor
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
    ok = process(stored, input_from_stored(stored, url), actor=actor, source=Source.WEBHOOK)
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


_mark = mark  # the earlier private name
