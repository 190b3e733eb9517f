"""Clients and their API keys: create, deactivate, issue and revoke keys, and find the key a
request presents.

Written here rather than with `djangorestframework-api-key`: that library keeps its own key model
(we need ours, with a kind and a client) and checks every request with Django's password hasher
(PBKDF2 or Argon2, tens of milliseconds of CPU per request by design). A password hasher is slow
because passwords are guessable; our keys are 256 random bits, so no amount of hashing speed
helps an attacker, and a single SHA-256 is enough (the same choice GitHub and Stripe-style keys
make). Storing only the digest, looking the row up by it (a unique index) and comparing with
`hmac.compare_digest` means the time an answer takes does not depend on how much of a guessed
key is right.
"""

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db.models import Q
from django.utils import timezone
from django.utils.text import slugify

from messaging.models import ApiKey, Client

KEY_PREFIX = "hk_"
# A key's visible prefix: "hk_live_" plus 8 characters of the random part. 8 url-safe
# characters are 48 of its 256 bits: enough to tell keys apart in a list, useless to a guesser.
VISIBLE_SECRET_CHARS = 8
# last_used_at is advisory ("is this key still in use?"): one write per key per minute at most,
# never a write per request.
LAST_USED_RESOLUTION = timedelta(minutes=1)
_RATE = re.compile(r"^\d+/\d*[smhd]$")


@dataclass(frozen=True)
class IssuedKey:
    """A newly created key. `key` is the full secret: show it once, store it nowhere."""

    api_key: ApiKey
    key: str


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def validate_rate(value: str) -> str:
    """A django-ratelimit rate ("100/m", "5000/h", "10/5s"), or blank for the setting."""
    value = (value or "").strip()
    if value and not _RATE.match(value):
        raise ValidationError(
            f"'{value}' is not a rate: use a number per s, m, h or d, e.g. 600/m.", code="rate"
        )
    return value


def create_client(
    name: str,
    *,
    slug: str = "",
    send_rate_limit: str = "",
    read_rate_limit: str = "",
    default_provider: str = "",
    default_sender_id: str = "",
    allowed_providers=(),
    owned_numbers=(),
) -> Client:
    """A new active client. The slug defaults to the slugified name. Raises ValidationError
    (by field) for a bad or taken slug or a bad rate."""
    rates = {"send_rate_limit": send_rate_limit, "read_rate_limit": read_rate_limit}
    errors = {}
    for field, value in rates.items():
        try:
            rates[field] = validate_rate(value)
        except ValidationError as exc:
            errors[field] = exc.messages
    client = Client(
        name=name.strip(),
        slug=slug.strip() or slugify(name)[:50],
        default_provider=default_provider,
        default_sender_id=default_sender_id,
        allowed_providers=list(allowed_providers),
        owned_numbers=list(owned_numbers),
        **rates,
    )
    try:
        client.full_clean()  # slug shape and uniqueness, name length
    except ValidationError as exc:
        errors.update(exc.message_dict)
    if errors:
        raise ValidationError(errors)
    client.save()
    return client


def deactivate(client: Client) -> Client:
    """An inactive client's keys are all refused (401) from the next request on; its messages
    stay, and whatever it queued before is still sent."""
    Client.objects.filter(pk=client.pk).update(is_active=False, updated_at=timezone.now())
    client.refresh_from_db()
    return client


def reactivate(client: Client) -> Client:
    Client.objects.filter(pk=client.pk).update(is_active=True, updated_at=timezone.now())
    client.refresh_from_db()
    return client


def create_api_key(client: Client, *, name: str, kind: str = ApiKey.Kind.LIVE, created_by=None):
    """Issue a key: `hk_live_...` or `hk_test_...` and 256 random bits. Only its SHA-256 and
    its visible prefix are stored; the returned IssuedKey.key is the only copy of the secret."""
    if kind not in ApiKey.Kind.values:
        raise ValidationError(f"Unknown key kind '{kind}'.", code="kind")
    name = name.strip() or "unnamed"
    if len(name) > ApiKey._meta.get_field("name").max_length:
        raise ValidationError("A key's name is at most 100 characters.", code="name")
    secret = secrets.token_urlsafe(32)
    key = f"{KEY_PREFIX}{kind}_{secret}"
    api_key = ApiKey.objects.create(
        client=client,
        name=name,
        kind=kind,
        prefix=f"{KEY_PREFIX}{kind}_{secret[:VISIBLE_SECRET_CHARS]}",
        hashed_key=hash_key(key),
        created_by=created_by,
    )
    return IssuedKey(api_key=api_key, key=key)


def revoke_api_key(api_key: ApiKey) -> ApiKey:
    """Refused from the next request on. Revoking twice keeps the first time."""
    ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    api_key.refresh_from_db()
    return api_key


def authenticate(key: str) -> ApiKey | None:
    """The ApiKey that `key` is, if it is not revoked and its client is active; else None.

    The lookup is by the key's SHA-256, so how long it takes does not depend on the secret; the
    digest is compared again in constant time in case a database collates or trims it."""
    if not key or len(key) > 200:
        return None
    digest = hash_key(key)
    api_key = (
        ApiKey.objects.select_related("client")
        .filter(hashed_key=digest, revoked_at__isnull=True, client__is_active=True)
        .first()
    )
    if api_key is None or not hmac.compare_digest(api_key.hashed_key, digest):
        return None
    _touch(api_key)
    return api_key


def _touch(api_key: ApiKey) -> None:
    """Record use at most once per LAST_USED_RESOLUTION per key: the conditional UPDATE is a
    no-op for every other request (and only runs when the row we read is stale anyway)."""
    now = timezone.now()
    stale_before = now - LAST_USED_RESOLUTION
    if api_key.last_used_at is not None and api_key.last_used_at > stale_before:
        return
    ApiKey.objects.filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lte=stale_before), pk=api_key.pk
    ).update(last_used_at=now)
    api_key.last_used_at = now
