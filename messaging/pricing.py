"""Estimated prices from the SMS_PRICES table (README, "Quotes and prices").

    SMS_PRICES = {"sinch": {"GB": "0.035", "*": "0.05"}, "*": {"*": "0.06"}}

A price is per segment, in SMS_PRICE_CURRENCY. The most specific entry wins: the provider and
the destination's country, then the provider's "*", then "*" for both. No matching entry: no
estimate (None), never a guess.
"""

from decimal import Decimal, InvalidOperation

import phonenumbers
from django.conf import settings
from django.core.checks import Error


def country_of(number: str) -> str:
    """ISO 3166 alpha-2 of an E.164 number ('GB'), or '' when it has none."""
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return ""
    return phonenumbers.region_code_for_number(parsed) or ""


def per_segment(provider: str, country: str) -> Decimal | None:
    table = settings.SMS_PRICES or {}
    for provider_key, country_key in ((provider, country), (provider, "*"), ("*", country),
                                      ("*", "*")):  # fmt: skip
        value = (table.get(provider_key) or {}).get(country_key)
        if value is not None:
            return Decimal(str(value))
    return None


def estimate(provider: str, number: str, segments: int) -> tuple[Decimal | None, str]:
    """(estimated price, currency) for `segments` segments to `number` through `provider`."""
    price = per_segment(provider, country_of(number))
    if price is None:
        return None, ""
    return price * segments, settings.SMS_PRICE_CURRENCY


def check_table(table) -> list:
    """System check errors for a malformed SMS_PRICES (herald.E020)."""
    errors = []
    if not isinstance(table, dict):
        return [Error("SMS_PRICES must be a JSON object.", id="herald.E020")]
    for provider, countries in table.items():
        if not isinstance(countries, dict):
            errors.append(Error(f"SMS_PRICES['{provider}'] must be an object.", id="herald.E020"))
            continue
        for country, value in countries.items():
            try:
                ok = Decimal(str(value)) >= 0
            except InvalidOperation:
                ok = False
            if not ok or isinstance(value, bool):
                errors.append(
                    Error(
                        f"SMS_PRICES['{provider}']['{country}'] = {value!r} is not a price.",
                        id="herald.E020",
                    )
                )
    return errors
