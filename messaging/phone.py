"""Phone numbers in E.164, via Google's libphonenumber port."""

import phonenumbers


class InvalidNumber(ValueError):
    pass


def to_e164(raw: str) -> str:
    """Parse a number given in international form and return it as E.164 ('+447700900123').

    Providers often drop the '+' (Vonage, Infobip), so a bare run of digits is read as
    international too. Raises InvalidNumber for anything that is not a valid number.
    """
    text = str(raw or "").strip()
    if not text:
        raise InvalidNumber("A phone number is required.")
    if text.startswith("00"):
        text = "+" + text[2:]
    elif not text.startswith("+"):
        text = "+" + text
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException as exc:
        raise InvalidNumber(f"'{raw}' is not a phone number in international format.") from exc
    if not phonenumbers.is_valid_number(number):
        raise InvalidNumber(f"'{raw}' is not a valid phone number.")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_loose(raw: str) -> str:
    """E.164 when the value is a valid number, else the value unchanged (alphanumeric senders,
    short codes)."""
    try:
        return to_e164(raw)
    except InvalidNumber:
        return str(raw or "").strip()
