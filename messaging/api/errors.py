"""API errors: DRF's field-by-field 400s, plus domain errors mapped to their HTTP status."""

from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from messaging.errors import (
    HeraldError,
    IdempotencyConflict,
    NotCancellable,
    NotResendable,
    OptedOut,
    ProviderNotAllowed,
    ProviderNotEnabled,
)

STATUS = {OptedOut: 422, NotResendable: 409, NotCancellable: 409, IdempotencyConflict: 409}
# Errors about one request field also name it, like DRF's own 400s.
FIELD = {OptedOut: "to", ProviderNotAllowed: "provider", ProviderNotEnabled: "provider"}


def exception_handler(exc, context):
    if isinstance(exc, HeraldError):
        status = next((s for cls, s in STATUS.items() if isinstance(exc, cls)), 400)
        body = {"code": exc.code, "detail": str(exc)}
        field = next((f for cls, f in FIELD.items() if isinstance(exc, cls)), None)
        if field:
            body[field] = [str(exc)]
        return Response(body, status=status)
    return drf_exception_handler(exc, context)
