"""Strict JSON input for the API: a string is a string, unknown fields are refused, a time has
an offset, and nothing reaches the database that a column cannot store (messaging/text.py).

DRF's own fields coerce: CharField turns 123 into "123", DateTimeField reads a naive time in the
current zone, a Serializer ignores fields it does not declare. Each of those hid a client's bug.
"""

import json
import re
from datetime import UTC

from rest_framework import serializers

from messaging.text import json_depth, unstorable

# Offsets are required: "2026-12-03T10:00:00" is refused, "...Z" and "...+01:00" are taken.
_HAS_OFFSET = re.compile(r"(Z|[+-]\d{2}:?\d{2})$", re.IGNORECASE)
METADATA_MAX_BYTES = 4096
METADATA_MAX_DEPTH = 8


class StrictCharField(serializers.CharField):
    default_error_messages = {
        "type": "Must be a JSON string, not {kind}.",
        "unstorable": "This text {reason}.",
    }

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("type", kind=json_kind(data))
        reason = unstorable(data)
        if reason:
            self.fail("unstorable", reason=reason)
        return super().to_internal_value(data)


class StrictDateTimeField(serializers.DateTimeField):
    """ISO 8601 with an explicit offset, returned in UTC (PostgreSQL refuses offsets beyond
    +-15:59 that Python accepts; UTC is what the database stores anyway)."""

    default_error_messages = {
        "type": "Must be a JSON string (ISO 8601), not {kind}.",
        "offset": "Give a UTC offset or Z (e.g. 2026-12-03T10:00:00Z): a time without one is "
        "ambiguous.",
        "range": "This time has no UTC equivalent.",
    }

    def to_internal_value(self, value):
        if not isinstance(value, str):
            self.fail("type", kind=json_kind(value))
        if not _HAS_OFFSET.search(value.strip()):
            self.fail("offset")
        parsed = super().to_internal_value(value)
        try:
            return parsed.astimezone(UTC)
        except (OverflowError, ValueError):
            self.fail("range")


class StrictJSONObjectField(serializers.JSONField):
    default_error_messages = {
        "type": "Must be a JSON object, not {kind}.",
        "size": f"Must be under {METADATA_MAX_BYTES} bytes as JSON.",
        "depth": f"Must not nest deeper than {METADATA_MAX_DEPTH} levels.",
        "unstorable": "This value {reason}.",
    }

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            self.fail("type", kind=json_kind(data))
        if json_depth(data, METADATA_MAX_DEPTH):
            self.fail("depth")
        reason = unstorable(data)
        if reason:
            self.fail("unstorable", reason=reason)
        value = super().to_internal_value(data)
        if len(json.dumps(value, ensure_ascii=False).encode()) > METADATA_MAX_BYTES:
            self.fail("size")
        return value


class StrictBooleanField(serializers.BooleanField):
    default_error_messages = {"type": "Must be a JSON boolean (true or false), not {kind}."}

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("type", kind=json_kind(data))
        return data


class StrictListField(serializers.ListField):
    """A JSON array of 1..max_length items, passed on as it is: its items are checked by the
    service that knows what they mean (`child` documents them in the schema)."""

    default_error_messages = {
        "type": "Must be a JSON array, not {kind}.",
        "empty": "Must not be empty.",
        "too_long": "At most {max_length} items; this has {length}.",
    }

    def to_internal_value(self, data):
        if not isinstance(data, list):
            self.fail("type", kind=json_kind(data))
        if not data:
            self.fail("empty")
        if len(data) > self.max_length:
            self.fail("too_long", max_length=self.max_length, length=len(data))
        return data


class StrictSerializer(serializers.Serializer):
    """Refuses a body that is not a JSON object, and every field it does not declare."""

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError(
                {"non_field_errors": [f"The body must be a JSON object, not {json_kind(data)}."]}
            )
        unknown = sorted(set(data) - set(self.fields))
        errors = {}
        if unknown:
            known = ", ".join(sorted(self.fields))
            errors = {name: [f"Unknown field. Fields: {known}."] for name in unknown}
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            errors = {**exc.detail, **errors}
        if errors:
            raise serializers.ValidationError(errors)
        return value


def json_kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "a string"
