"""What a send would cost before it is made: segments, encoding, the characters that forced
UCS-2, the provider it would go through, and an estimated price (messaging/pricing.py).
The API's quote endpoint and the admin's send form both show this, from this one function."""

from dataclasses import dataclass, field
from decimal import Decimal

from messaging import encoding, pricing
from messaging.models import Client
from messaging.services.messages import route


@dataclass(frozen=True)
class Quote:
    provider: str
    encoding: str
    segments: int
    characters: int
    ucs2_characters: list[str] = field(default_factory=list)
    country: str = ""
    price_per_segment: Decimal | None = None
    price: Decimal | None = None
    currency: str = ""

    def as_dict(self) -> dict:
        return {
            "provider": self.provider,
            "encoding": self.encoding,
            "segments": self.segments,
            "characters": self.characters,
            "ucs2_characters": self.ucs2_characters,
            "country": self.country,
            "price_per_segment": _money(self.price_per_segment),
            "price": _money(self.price),
            "currency": self.currency,
        }


def _money(value):
    return None if value is None else format(value, "f")


def quote(*, to: str, body: str, provider: str = "", client=None, api_key=None) -> Quote:
    """The quote of a send of `client` with `api_key`: the provider is the one the send would
    get (messages.route: a test key's sandbox, a requested provider, else the routing table with
    the client's default and allowed providers and the providers' health). A weighted route
    picks as a send does, so a quote names one of the route's providers, not always the same."""
    chosen = route(client or Client.objects.default(), api_key, provider, to).provider
    enc, segments = encoding.analyse(body)
    country = pricing.country_of(to)
    unit = pricing.per_segment(chosen, country)
    price, currency = pricing.estimate(chosen, to, segments)
    return Quote(
        provider=chosen,
        encoding=enc,
        segments=segments,
        characters=len(body),
        ucs2_characters=encoding.ucs2_characters(body) if enc == encoding.UCS2 else [],
        country=country,
        price_per_segment=unit,
        price=price,
        currency=currency,
    )
