"""Input rules shared by the API serializers and the admin forms, so both say the same thing.
Each raises django.core.exceptions.ValidationError, which DRF and Django forms both report
against the field."""

import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import timezone

from messaging import providers
from messaging.phone import InvalidNumber, to_e164
from messaging.text import unstorable

# A sender is a number in E.164 or an alphanumeric sender id: at most 11 characters, the limit
# of the GSM 03.38 originator address (README, "The API"; providers.md section 7).
_E164 = re.compile(r"^\+[1-9]\d{5,14}$")
_ALPHANUMERIC = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9 ]{0,9}[A-Za-z0-9])?$")


def clean_number(value: str) -> str:
    try:
        return to_e164(value)
    except InvalidNumber as exc:
        raise ValidationError(str(exc)) from None


def clean_body(body: str) -> str:
    reason = unstorable(body)
    if reason:
        raise ValidationError(f"The message body {reason}.")
    if not body.strip():
        raise ValidationError("The message body must not be empty.")
    if len(body) > settings.MAX_BODY_CHARS:
        raise ValidationError(
            f"The message body is {len(body)} characters; the limit is {settings.MAX_BODY_CHARS}."
        )
    return body


def clean_provider(value: str) -> str:
    if value and not providers.is_enabled(value):
        enabled = ", ".join(providers.enabled_names())
        raise ValidationError(f"Unknown provider '{value}'. Enabled: {enabled}.")
    return value


def clean_send_at(value):
    if value and value < timezone.now():
        raise ValidationError("send_at must not be in the past.")
    return value


def clean_sender(value: str) -> str:
    """'' (the provider's configured sender), an E.164 number or an alphanumeric sender id."""
    value = value.strip()
    if not value or _E164.match(value) or _ALPHANUMERIC.match(value):
        return value
    if value.startswith("+") or value.isdigit() and len(value) > 11:
        raise ValidationError(
            f"'{value}' is not a number in E.164 (+ and 6 to 15 digits, e.g. +447700900123)."
        )
    raise ValidationError(
        f"'{value}' is not a valid sender id: at most 11 letters, digits and inner spaces "
        f"(it has {len(value)} characters), or a number in E.164."
    )
