"""What the OpenAPI schema says beyond the views' own annotations: the problem document, the
responses every operation can give (401, 406, 413, 415, 429, 500 and the rate-limit headers),
added by one postprocessing hook so no view can forget them, and the examples.

The schema must tell the whole truth: tests/api/test_schemathesis.py checks every answer's
status code, content type and body against it (schemathesis' positive and negative cases)."""

from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse
from rest_framework import serializers

from messaging.api.problems import CONTENT_TYPE, TYPES


class ProblemErrorSerializer(serializers.Serializer):
    pointer = serializers.CharField(help_text="JSON pointer into the request body, e.g. #/to.")
    detail = serializers.CharField()
    code = serializers.CharField()


class ProblemSerializer(serializers.Serializer):
    """RFC 9457 problem details; `errors` only for validation errors."""

    type = serializers.CharField(help_text="URI reference of the problem type.")
    title = serializers.CharField()
    status = serializers.IntegerField()
    detail = serializers.CharField()
    code = serializers.CharField(help_text="The problem type's short name.")
    errors = ProblemErrorSerializer(many=True, required=False)


class BatchMessageSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    id = serializers.UUIDField()
    to = serializers.CharField()
    client_reference = serializers.CharField()
    segments = serializers.IntegerField()
    encoding = serializers.CharField()
    provider = serializers.CharField(help_text="The provider this message goes through.")


class BatchSkippedSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    to = serializers.CharField()


class BatchInvalidSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    errors = ProblemErrorSerializer(many=True)


class BatchResultSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    provider = serializers.CharField(
        allow_null=True,
        help_text="The one provider of every message; null when routing split the batch "
        "between providers (each message's own is under `messages`).",
    )
    recipients = serializers.IntegerField()
    accepted = serializers.IntegerField()
    messages = BatchMessageSerializer(many=True)
    opted_out = BatchSkippedSerializer(many=True)
    invalid = BatchInvalidSerializer(many=True, help_text="Only with partial: true.")


IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    location=OpenApiParameter.HEADER,
    required=False,
    description="Repeat a create safely: the same key and body return the original (200, "
    "header Idempotent-Replayed: true); the same key with another body is refused (409). At "
    "most 255 characters (400 otherwise). Keys are per client.",
)

WHEN = {
    400: "Not valid: a problem document with one entry per field in `errors`.",
    404: "No such message in your client (another client's ids are 404 too).",
    409: "Conflicts with the message's state, or an Idempotency-Key reused with another body.",
    422: "The recipient has opted out.",
}
# Every operation can answer these (added by `postprocess`).
COMMON = {
    401: "No valid API key.",
    406: "The Accept header allows no JSON.",
    413: "The body is over API_MAX_BODY_BYTES.",
    415: "The body is not JSON.",
    429: "Over the rate limit; see Retry-After.",
    500: "Herald failed; nothing was created.",
}
RATE_LIMIT_HEADERS = {
    "RateLimit-Limit": "Requests allowed in the current window (the tightest limit).",
    "RateLimit-Remaining": "Requests left in the current window.",
    "RateLimit-Reset": "Seconds until the window resets.",
}


def responses(success: dict, *errors: int) -> dict:
    """`success` plus the endpoint's own error codes as problem documents."""
    out = dict(success)
    for code in errors:
        out[code] = OpenApiResponse(ProblemSerializer, description=WHEN[code])
    return out


def postprocess(result, generator, request, public):
    """SPECTACULAR_SETTINGS POSTPROCESSING_HOOKS: the common problem answers and rate-limit
    headers on every API operation, and problem+json as the content type of every error."""
    headers = {
        name: {"description": text, "schema": {"type": "integer"}}
        for name, text in RATE_LIMIT_HEADERS.items()
    }
    problem_ref = {"$ref": "#/components/schemas/Problem"}
    for path, operations in result.get("paths", {}).items():
        if not path.startswith("/api/v1/messages"):
            continue
        for operation in operations.values():
            answers = operation.setdefault("responses", {})
            for code, text in COMMON.items():
                answers.setdefault(str(code), {"description": text})
            if "{id}" in path:
                answers.setdefault("404", {"description": WHEN[404]})
            for code, answer in answers.items():
                if int(code) >= 400:
                    answer["content"] = {CONTENT_TYPE: {"schema": problem_ref}}
                answer.setdefault("headers", {}).update(headers)
                if code == "429":
                    answer["headers"]["Retry-After"] = {
                        "description": "Seconds to wait.",
                        "schema": {"type": "integer"},
                    }
    result.setdefault("components", {}).setdefault("schemas", {})
    return result


PROBLEM_TYPES_DESCRIPTION = "\n".join(
    f"- `{t.type}` ({t.status}): {t.title}" for t in TYPES.values()
)

SEND_EXAMPLES = [
    OpenApiExample(
        "A message",
        value={"to": "+447911123457", "body": "Your code is 123456", "client_reference": "o-1"},
        request_only=True,
    ),
    OpenApiExample(
        "Scheduled, with metadata",
        value={
            "to": "+447911123457",
            "body": "Your appointment is tomorrow at 10:00",
            "send_at": "2030-01-01T09:00:00Z",
            "metadata": {"appointment": 42},
        },
        request_only=True,
    ),
]
BATCH_EXAMPLES = [
    OpenApiExample(
        "Two recipients",
        value={
            "body": "Hello {{name}}, your order has shipped",
            "recipients": [
                {"to": "+447911123457", "client_reference": "o-1", "variables": {"name": "Ann"}},
                {"to": "+447911123458", "client_reference": "o-2", "variables": {"name": "Bo"}},
            ],
        },
        request_only=True,
    )
]
