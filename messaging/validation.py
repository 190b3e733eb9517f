"""Input rules shared by the API serializers and the admin forms, so both say the same thing.
Each raises django.core.exceptions.ValidationError, which DRF and Django forms both report
against the field."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import timezone

from messaging import providers
from messaging.phone import InvalidNumber, to_e164


def clean_number(value: str) -> str:
    try:
        return to_e164(value)
    except InvalidNumber as exc:
        raise ValidationError(str(exc)) from None


def clean_body(body: str) -> str:
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
