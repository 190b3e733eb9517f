"""GSM-7 / UCS-2 detection and segment counting (3GPP TS 23.038), computed before sending.

GSM-7 holds 160 septets in one SMS, 153 per part when concatenated (the UDH takes 7). Characters
of the extension table take two septets (escape + char) and are never split across parts.
UCS-2 holds 70 UTF-16 code units, 67 per part; characters outside the BMP take two units and a
surrogate pair is never split.
"""

GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = set("^{}\\[~]|€\f")

GSM7, UCS2 = "GSM-7", "UCS-2"


def _segments(units: list, single: int, multi: int) -> int:
    """Count parts; `units` is the width of each character, so none is split across parts."""
    total = sum(units)
    if total <= single:
        return 1
    parts, used = 1, 0
    for width in units:
        if used + width > multi:
            parts, used = parts + 1, 0
        used += width
    return parts


def analyse(body: str) -> tuple:
    """(encoding, segments) for a message body."""
    if all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in body):
        widths = [2 if c in GSM7_EXTENSION else 1 for c in body]
        return GSM7, _segments(widths, 160, 153)
    widths = [2 if ord(c) > 0xFFFF else 1 for c in body]
    return UCS2, _segments(widths, 70, 67)


def ucs2_characters(body: str) -> list[str]:
    """The characters that force UCS-2 (outside both GSM-7 tables), each once, in order."""
    seen = dict.fromkeys(c for c in body if c not in GSM7_BASIC and c not in GSM7_EXTENSION)
    return list(seen)
