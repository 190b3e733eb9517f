"""Which provider sends a message: routes (destination -> weighted providers), adjusted by the
providers' shared health (messaging/services/provider_health.py), recorded on the timeline.

The routing table has layers, the first that matches the destination wins:
  1. the client's own `Route` rows (admin), then the client's `default_provider` as its `*`;
  2. global `Route` rows (admin), each overriding the SMS_ROUTES entry for the same destination;
  3. SMS_ROUTES (`GB: sinch 70, infobip 30; +4477: infobip 100; *: vonage-sms 100`);
  4. without any `*`: SMS_DEFAULT_PROVIDER at weight 100 and SMS_FALLBACK_PROVIDERS at weight 0.
Within a layer a number prefix beats a country code (longest prefix first), which beats `*`.
A weight of 0 is a standby: used only when no weighted provider is available.

A provider the caller named (API `provider`, the admin, a test key's sandbox) is authoritative:
such a message is not routed (`Message.routed` false) and never moved by routing.
"""

import logging
import random
import re
import time
from dataclasses import asdict, dataclass, field

import phonenumbers
from django.conf import settings
from django.core.signals import setting_changed
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from messaging import providers

log = logging.getLogger("herald.routing")

_rng = random.Random()

# --- Parsing (SMS_ROUTES and Route rows share it) -----------------------------------------------

_PREFIX = re.compile(r"^\+[0-9]{1,15}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


def parse_destination(text: str) -> str:
    """`*`, an ISO 3166 country code (`GB`) or a number prefix (`+4477`), normalised."""
    value = str(text or "").strip()
    if value == "*" or _PREFIX.match(value):
        return value
    if len(value) == 2 and value.upper() in phonenumbers.SUPPORTED_REGIONS:
        return value.upper()
    raise ValueError(
        f"'{value}' is not a destination: use a country code (GB), a number prefix (+4477) or *."
    )


def parse_weights(text: str) -> list:
    """`sinch 70, infobip 30` -> [("sinch", 70), ("infobip", 30)]. A name alone weighs 100."""
    weights, seen = [], set()
    for item in str(text or "").split(","):
        words = item.split()
        if not words:
            continue
        if len(words) > 2:
            raise ValueError(f"'{item.strip()}' is not 'provider weight'.")
        name = words[0].lower()
        if not _NAME.match(name):
            raise ValueError(f"'{words[0]}' is not a provider name.")
        try:
            weight = int(words[1]) if len(words) == 2 else 100
        except ValueError:
            raise ValueError(f"The weight of '{name}' must be a whole number.") from None
        if weight < 0:
            raise ValueError(f"The weight of '{name}' must not be negative.")
        if name in seen:
            raise ValueError(f"'{name}' is listed twice.")
        seen.add(name)
        weights.append((name, weight))
    if not weights:
        raise ValueError("A route needs at least one provider.")
    if not any(w > 0 for _, w in weights):
        raise ValueError("A route needs at least one provider with a weight above 0.")
    return weights


def parse_routes(text: str) -> dict:
    """SMS_ROUTES: `dest: provider weight, ...` entries separated by `;` or new lines."""
    table = {}
    for entry in re.split(r"[;\n]", str(text or "")):
        if not entry.strip():
            continue
        dest, sep, weights = entry.partition(":")
        if not sep:
            raise ValueError(f"'{entry.strip()}' is not 'destination: provider weight, ...'.")
        key = parse_destination(dest)
        if key in table:
            raise ValueError(f"Destination '{key}' is listed twice.")
        table[key] = parse_weights(weights)
    return table


def route_errors(table: dict) -> list:
    """Provider names in a parsed table that are not enabled (manage.py check reports them)."""
    names = {name for weights in table.values() for name, _ in weights}
    return sorted(name for name in names if not providers.is_enabled(name))


# --- The pure choice ---------------------------------------------------------------------------


@dataclass
class Candidate:
    provider: str
    weight: int
    state: str = "closed"  # the circuit: closed, open, half_open
    demoted: bool = False
    available: bool = True  # false: open circuit, half-open without a probe slot, not enabled
    factor: float = 1.0  # weight multiplier (demotion)

    @property
    def effective(self) -> float:
        return self.weight * self.factor if self.available else 0.0


def choose(candidates: list, roll: float) -> tuple:
    """(chosen provider, why) from candidates and a roll in [0, 1). Pure: the same candidates
    and roll always give the same answer.

    Weighted pick among available providers with a weight; else the first available standby
    (weight 0); else, nothing being available, the highest-weighted one (its sends back off and
    retry; a message is never dropped for want of a provider)."""
    weighted = [c for c in candidates if c.effective > 0]
    if weighted:
        total = sum(c.effective for c in weighted)
        point, acc = roll * total, 0.0
        for c in weighted:
            acc += c.effective
            if point < acc:
                break
        share = c.effective / total
        why = f"weighted pick ({share:.0%} of the available weight)"
        if len(weighted) == 1:
            why = "the only available provider with a weight"
        if c.demoted:
            why += "; demoted"
        return c.provider, why
    standby = [c for c in candidates if c.available]
    if standby:
        return standby[0].provider, "standby: no provider with a weight is available"
    if not candidates:
        return "", "no candidate"
    best = max(candidates, key=lambda c: c.weight)
    return best.provider, "no provider is available; kept on the highest weight"


# --- The table ---------------------------------------------------------------------------------

_cache = {"at": 0.0, "client": None, "global": None, "settings": None}


@receiver(setting_changed)
def _reset_settings(setting, **kwargs):
    if setting in ("SMS_ROUTES", "SMS_PROVIDERS", "SMS_DEFAULT_PROVIDER", "SMS_FALLBACK_PROVIDERS"):
        clear_cache()


def clear_cache():
    _cache.update(at=0.0, client=None, **{"global": None, "settings": None})


def _settings_table() -> dict:
    if _cache["settings"] is None:
        try:
            _cache["settings"] = parse_routes(settings.SMS_ROUTES)
        except ValueError:  # manage.py check reports it (herald.E013); route by the default
            log.exception("SMS_ROUTES does not parse; using SMS_DEFAULT_PROVIDER")
            _cache["settings"] = {}
    return _cache["settings"]


def _db_tables():
    """({client id: {dest: weights}}, {dest: weights}) from Route rows, cached a few seconds
    per process (ROUTING_TABLE_CACHE_SECONDS) so a send does not read the table each time."""
    from messaging.models import Route

    now = time.monotonic()
    if _cache["global"] is None or now - _cache["at"] > settings.ROUTING_TABLE_CACHE_SECONDS:
        per_client, global_ = {}, {}
        for route in Route.objects.all():
            try:
                weights = parse_weights(route.providers)
            except ValueError:  # saved around the admin's validation: skip it, loudly
                log.error("route %s does not parse", route.pk)
                continue
            target = per_client.setdefault(route.client_id, {}) if route.client_id else global_
            target[route.destination] = weights
        _cache.update(at=now, client=per_client, **{"global": global_})
    return _cache["client"], _cache["global"]


@receiver(post_save, sender="messaging.Route")
@receiver(post_delete, sender="messaging.Route")
def _route_changed(**kwargs):
    clear_cache()


def _match(table: dict, to: str, region: str):
    prefixes = sorted((k for k in table if k.startswith("+")), key=len, reverse=True)
    for key in prefixes:
        if to.startswith(key):
            return key
    if region and region in table:
        return region
    return "*" if "*" in table else None


def _region(to: str) -> str:
    """The destination's country; for a number no region claims (a code shared by several,
    such as +44 with GG, JE and IM), the code's main region."""
    try:
        number = phonenumbers.parse(to, None)
    except phonenumbers.NumberParseException:
        return ""
    region = phonenumbers.region_code_for_number(number)
    if not region or region == "ZZ":
        region = phonenumbers.region_code_for_country_code(number.country_code)
    return "" if region == "ZZ" else region


def resolve(to: str, client=None) -> tuple:
    """(destination key, table name, [(provider, weight)]) for a destination and client."""
    region = _region(to)
    per_client, global_db = _db_tables()
    if client is not None:
        own = per_client.get(client.pk, {})
        key = _match(own, to, region)
        if key:
            return key, "client route", own[key]
    merged = {**_settings_table(), **global_db}
    key = _match(merged, to, region)
    if key and key != "*":
        return key, "route" if key in global_db else "SMS_ROUTES", merged[key]
    if client is not None and client.default_provider:
        return "*", "client default provider", [(client.default_provider, 100)]
    if key:
        return key, "route" if key in global_db else "SMS_ROUTES", merged[key]
    default = providers.default_name()
    standby = [(p, 0) for p in settings.SMS_FALLBACK_PROVIDERS if p != default]
    return "*", "SMS_DEFAULT_PROVIDER", [(default, 100), *standby]


# --- Decisions ---------------------------------------------------------------------------------


@dataclass
class Decision:
    destination: str
    table: str
    candidates: list = field(default_factory=list)
    chosen: str = ""
    why: str = ""
    roll: float = 0.0
    excluded: list = field(default_factory=list)  # providers left out, with the reason

    def as_json(self) -> dict:
        return {
            "destination": self.destination,
            "table": self.table,
            "candidates": [asdict(c) for c in self.candidates],
            "chosen": self.chosen,
            "why": self.why,
            "roll": round(self.roll, 6),
            "excluded": self.excluded,
        }

    @property
    def note(self) -> str:
        weights = ", ".join(
            f"{c.provider} {c.weight}"
            + ("" if c.state == "closed" else f" [{c.state}]")
            + (" [demoted]" if c.demoted else "")
            for c in self.candidates
        )
        return f"route {self.destination} ({self.table}: {weights}) -> {self.chosen}: {self.why}"


def decide(to: str, client=None, *, exclude=(), probe=None, roll=None, health=None) -> Decision:
    """The route decision for one message. `exclude`: providers that just proved they did not
    take it (failover). `probe(provider) -> bool` may grant a half-open provider a probe slot;
    without it half-open providers are skipped. `health`: {provider: ProviderHealth} (read once
    per batch by the caller), else read here."""
    from messaging.services import provider_health

    key, table, weights = resolve(to, client)
    allowed = set(getattr(client, "allowed_providers", None) or [])
    health = provider_health.states() if health is None else health
    candidates, excluded = [], []
    for name, weight in weights:
        if not providers.is_enabled(name):
            excluded.append({"provider": name, "reason": "not enabled"})
            continue
        if allowed and name not in allowed:
            excluded.append({"provider": name, "reason": "not allowed for the client"})
            continue
        if name in exclude:
            excluded.append({"provider": name, "reason": "did not accept this message"})
            continue
        row = health.get(name)
        state = row.effective_state() if row else "closed"
        demoted = bool(row and row.demoted)
        available = state == "closed" or (state == "half_open" and bool(probe and probe(name)))
        factor = settings.ROUTING_DEMOTE_FACTOR if demoted else 1.0
        candidates.append(Candidate(name, weight, state, demoted, available, factor))
    roll = _rng.random() if roll is None else roll
    chosen, why = choose(candidates, roll)
    if not chosen:  # nothing in the route may be used: the client's or the service's default
        chosen = getattr(client, "default_provider", "") or providers.default_name()
        why = "no usable provider in the route; the default provider"
    chosen_c = next((c for c in candidates if c.provider == chosen), None)
    if chosen_c and chosen_c.state == "half_open" and chosen_c.available:
        why = "probe of a half-open provider"
    return Decision(key, table, candidates, chosen, why, roll, excluded)


def route_claimed(claimed: list) -> None:
    """At claim time: move routed messages off a provider whose circuit is open (or half-open
    with no probe slot left), and give a half-open provider of the route its trickle of probes.
    Called inside the claim's transaction, before its `sending` events, so the attempt note
    names the provider that will really be used. Records each move on the message's timeline."""
    from messaging.models import Message, StatusEvent
    from messaging.services import provider_health

    routed = [m for m in claimed if m.routed]
    if not routed:
        return
    health = provider_health.states()
    if not any(row.effective_state() != "closed" for row in health.values()):
        return  # every circuit closed: the decision made at accept time stands
    from messaging.models import Client

    clients = Client.objects.in_bulk({m.client_id for m in routed if m.client_id})
    for message in routed:
        message.client = clients.get(message.client_id)
    denied = set()  # providers whose probe slot is taken: not asked again in this batch

    def probe(name):
        if name in denied:
            return False
        if provider_health.claim_probe(name):
            return True
        denied.add(name)
        return False

    moved, events = [], []
    for message in routed:
        row = health.get(message.provider)
        state = row.effective_state() if row else "closed"
        keep = state == "closed" or (state == "half_open" and probe(message.provider))
        decision = None
        if not keep:
            decision = decide(message.to_number, message.client, health=health, probe=probe)
        else:  # a half-open provider in this message's route may take it as a probe
            _, _, weights = resolve(message.to_number, message.client)
            for name, _w in weights:
                other = health.get(name)
                half_open = other is not None and other.effective_state() == "half_open"
                if name != message.provider and half_open and probe(name):
                    decision = decide(
                        message.to_number, message.client, health=health,
                        probe=lambda p, name=name: p == name, roll=0.0,
                    )  # fmt: skip
                    decision.chosen, decision.why = name, "probe of a half-open provider"
                    break
        if decision is None or decision.chosen == message.provider:
            continue
        before = message.provider
        message.provider = decision.chosen
        moved.append(message)
        events.append(
            StatusEvent(
                message=message,
                status=message.status,
                source="sender",
                applied=False,
                note=f"rerouted from {before} ({state}): {decision.note}",
                raw_payload={"route": decision.as_json()},
            )
        )
    if moved:
        Message.objects.bulk_update(moved, ["provider"])
        StatusEvent.objects.bulk_create(events)


def failover(message, exc) -> Decision | None:
    """Another provider for a routed message whose provider answered that it did not take it
    (`proves_not_accepted`), or None (not routed, no proof, or no other available provider)."""
    if not message.routed or not proves_not_accepted(exc):
        return None
    decision = decide(message.to_number, message.client, exclude=(message.provider,))
    available = [c for c in decision.candidates if c.available]
    if not available or decision.chosen == message.provider:
        return None
    return decision


# Answers that prove the provider did not accept the message, so another may send it without a
# risk of a double send: the connection was never made, or the provider said it is unavailable
# (503) or that we send too fast (429) before taking the request. A 500, 502 or 504 may come
# after the provider stored the message (a gateway in front of it timing out): those stay on the
# same provider (retried as before), and a timeout after the request was written stays `unknown`.
PROOF_STATUSES = (429, 503)
PROOF_CODES = ("connect", "connect-timeout")


def proves_not_accepted(exc) -> bool:
    if exc.ambiguous or not exc.retryable:
        return False
    return (
        exc.code in PROOF_CODES
        or getattr(exc, "http_status", None) in PROOF_STATUSES
        or exc.throttled
    )
