"""API errors: DRF's field-by-field 400s, plus domain errors mapped to their HTTP status."""

from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from messaging.errors import HeraldError, NotCancellable, NotResendable, OptedOut

STATUS = {OptedOut: 422, NotResendable: 409, NotCancellable: 409}


def exception_handler(exc, context):
    if isinstance(exc, HeraldError):
        status = next((s for cls, s in STATUS.items() if isinstance(exc, cls)), 400)
        body = {"code": exc.code, "detail": str(exc)}
        if isinstance(exc, OptedOut):
            body["to"] = [str(exc)]
        return Response(body, status=status)
    return drf_exception_handler(exc, context)
