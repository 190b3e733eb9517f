"""Idempotency-Key, per client: the same key and request return what the first request
created (a message, or a batch); the same key with another request is a conflict. Two clients
using the same string never meet. A key longer than the column is refused, never cut (two keys
that share 255 characters would otherwise collide)."""

import hashlib
import json

from django.db import IntegrityError, transaction

from messaging.errors import IdempotencyConflict, InvalidHeader
from messaging.models import IdempotencyKey, MessageBatch

MAX_LENGTH = 255  # IdempotencyKey.key


def clean_key(raw: str | None) -> str:
    key = (raw or "").strip()
    if len(key) > MAX_LENGTH:
        raise InvalidHeader(
            f"Idempotency-Key is {len(key)} characters; at most {MAX_LENGTH} are allowed."
        )
    return key


def fingerprint(data, *scope) -> str:
    """The canonical request a key stands for: the body, and for a resend which message it
    resends (a create's fingerprint is the body alone, as keys stored before resends had keys
    were computed)."""
    canonical = [*scope, data] if scope else data
    return hashlib.sha256(json.dumps(canonical, sort_keys=True, default=str).encode()).hexdigest()


def run(client, key: str, print_: str, create):
    """Run `create()` (which returns a new Message or MessageBatch) at most once per key of
    `client`: returns (what it created, replayed). Without a key, `create()` just runs."""
    if not key:
        return create(), False
    stored = _stored(client, key)
    if stored is None:
        try:
            with transaction.atomic():
                created = create()
                target = (
                    {"batch": created}
                    if isinstance(created, MessageBatch)
                    else {"message": created}
                )
                IdempotencyKey.objects.create(client=client, key=key, fingerprint=print_, **target)
            return created, False
        except IntegrityError:  # a concurrent request with the same key won the race
            stored = _stored(client, key)
            if stored is None:
                raise
    if stored.fingerprint != print_:
        raise IdempotencyConflict("This Idempotency-Key was used with a different request.")
    return stored.message or stored.batch, True


def _stored(client, key):
    return (
        IdempotencyKey.objects.select_related("message", "batch")
        .filter(client=client, key=key)
        .first()
    )
