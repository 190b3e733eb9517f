"""Every non-2xx answer under /api/ is an RFC 9457 problem document (README, "Errors").

    {"type": "/api/v1/problems/validation-error", "title": "...", "status": 400,
     "detail": "...", "code": "validation-error",
     "errors": [{"pointer": "#/to", "detail": "...", "code": "invalid"}]}

`type` is a relative URI reference (RFC 9457 section 3.1.1), the same in every deployment and
dereferenceable against the API's base: GET /api/v1/problems/<code> describes the problem.
`code` repeats the last path segment of `type` for clients that match on a short string.

Three layers produce them, so that no path can answer HTML:
- `exception_handler`: DRF's exceptions and Herald's domain errors inside API views;
- `ProblemMiddleware`: everything that never reaches a DRF view under /api/ (a URL that does not
  resolve, a body over API_MAX_BODY_BYTES, an exception that escaped the view: 500), whatever
  DEBUG is, because it answers before Django's technical pages get a chance;
- the middleware also resolves a POST without its trailing slash to the slashed URL, instead of
  CommonMiddleware's APPEND_SLASH redirect (a RuntimeError for POST under DEBUG, and a redirect
  that clients would follow with a GET).
"""

import json
import logging
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpResponse
from django.urls import Resolver404, get_script_prefix, resolve
from rest_framework import exceptions
from rest_framework.views import set_rollback

from messaging.errors import (
    AlreadyResent,
    CallbackNotConfigured,
    HeraldError,
    IdempotencyConflict,
    InvalidHeader,
    InvalidRequest,
    NotCancellable,
    NotResendable,
    OptedOut,
    ProviderNotEnabled,
)

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/problem+json"
API_PREFIX = "/api/"
TYPE_BASE = "/api/v1/problems/"


@dataclass(frozen=True)
class ProblemType:
    code: str
    status: int
    title: str
    description: str

    @property
    def type(self) -> str:
        return TYPE_BASE + self.code


_TYPES = [
    ProblemType("validation-error", 400, "The request is not valid.",
                "One or more fields are missing, of the wrong JSON type or not acceptable; "
                "`errors` has one entry per field, with a JSON pointer into the request body."),
    ProblemType("malformed-request", 400, "The request body cannot be read.",
                "The body is not valid JSON, or not a JSON object."),
    ProblemType("invalid-header", 400, "A request header is not valid.",
                "For example an Idempotency-Key longer than 255 characters."),
    ProblemType("not-authenticated", 401, "No valid API key was given.",
                "Send `Authorization: Bearer <key>` with a live or test key of your client."),
    ProblemType("permission-denied", 403, "This key may not do that.",
                "The key is valid but not allowed to perform this request."),
    ProblemType("not-found", 404, "Not found.",
                "No such URL, or no message with this id belongs to your client."),
    ProblemType("method-not-allowed", 405, "Method not allowed.",
                "The URL exists but does not accept this HTTP method; see the Allow header."),
    ProblemType("not-acceptable", 406, "Not acceptable.",
                "The API answers application/json (and application/problem+json for errors)."),
    ProblemType("idempotency-conflict", 409, "This Idempotency-Key was used with another body.",
                "A repeated Idempotency-Key must come with the same request body."),
    ProblemType("not-resendable", 409, "This message cannot be resent.",
                "Only failed, expired, rejected, cancelled and unknown messages can be resent."),
    ProblemType("not-cancellable", 409, "This message cannot be cancelled.",
                "Only queued (including scheduled) messages can be cancelled."),
    ProblemType("too-large", 413, "The request body is too large.",
                "Bodies over API_MAX_BODY_BYTES are refused before they are read."),
    ProblemType("unsupported-media-type", 415, "Unsupported media type.",
                "Send JSON with `Content-Type: application/json`."),
    ProblemType("opted-out", 422, "The recipient has opted out.",
                "The number replied STOP (or was opted out by staff or a provider error)."),
    ProblemType("rate-limited", 429, "Too many requests.",
                "Over your client's rate limit; retry after the Retry-After header's seconds."),
    ProblemType("server-error", 500, "Internal server error.",
                "Herald failed to answer; nothing was created. The error is logged."),
]  # fmt: skip
TYPES = {t.code: t for t in _TYPES}
_BY_STATUS = {}
for _t in _TYPES:
    _BY_STATUS.setdefault(_t.status, _t)

DOMAIN = {
    OptedOut: "opted-out",
    NotResendable: "not-resendable",
    AlreadyResent: "not-resendable",
    NotCancellable: "not-cancellable",
    ProviderNotEnabled: "validation-error",
    InvalidRequest: "validation-error",
    IdempotencyConflict: "idempotency-conflict",
    InvalidHeader: "invalid-header",
}
# Domain errors about one request field name it, like DRF's own 400s.
FIELD = {
    OptedOut: "to",
    ProviderNotEnabled: "provider",
    CallbackNotConfigured: "callback_url",
}  # ProviderNotAllowed is one too
DRF = [
    (exceptions.ValidationError, "validation-error"),
    (exceptions.ParseError, "malformed-request"),
    (exceptions.NotAuthenticated, "not-authenticated"),
    (exceptions.AuthenticationFailed, "not-authenticated"),
    (exceptions.PermissionDenied, "permission-denied"),
    (exceptions.NotFound, "not-found"),
    (exceptions.MethodNotAllowed, "method-not-allowed"),
    (exceptions.NotAcceptable, "not-acceptable"),
    (exceptions.UnsupportedMediaType, "unsupported-media-type"),
    (exceptions.Throttled, "rate-limited"),
]


def problem(code: str, detail: str = "", *, errors=None, headers=None, **extra) -> HttpResponse:
    kind = TYPES[code]
    body = {"type": kind.type, "title": kind.title, "status": kind.status, "code": code}
    body["detail"] = detail or kind.title
    if errors is not None:
        body["errors"] = errors
    body.update(extra)
    response = HttpResponse(
        json.dumps(body, ensure_ascii=False), status=kind.status, content_type=CONTENT_TYPE
    )
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def field_errors(detail, pointer: str = "#") -> list[dict]:
    """DRF's nested error detail as a flat list of {pointer, detail, code}, one per message."""
    out = []
    if isinstance(detail, dict):
        for key, value in detail.items():
            if key == "non_field_errors":
                out.extend(field_errors(value, pointer))
            else:
                out.extend(field_errors(value, f"{pointer}/{_escape(key)}"))
    elif isinstance(detail, list):
        if all(isinstance(item, str) for item in detail):  # messages of one field
            out.extend(_one(pointer, item) for item in detail)
        else:
            for index, item in enumerate(detail):
                if item:  # a list serializer gives {} for the items that were valid
                    out.extend(field_errors(item, f"{pointer}/{index}"))
    else:
        out.append(_one(pointer, detail))
    return out


def _one(pointer, message) -> dict:
    return {"pointer": pointer, "detail": str(message), "code": getattr(message, "code", "invalid")}


def _escape(key) -> str:
    return str(key).replace("~", "~0").replace("/", "~1")  # RFC 6901


def _summary(errors) -> str:
    if len(errors) == 1:
        only = errors[0]
        field = only["pointer"].removeprefix("#/") or "request"
        return f"{field}: {only['detail']}"
    return f"{len(errors)} fields are not valid; see errors."


def exception_handler(exc, context):
    """DRF's EXCEPTION_HANDLER: every exception a view raises, as a problem document."""
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(exc.messages)
    elif isinstance(exc, RequestDataTooBig):
        return problem("too-large", str(exc))
    if isinstance(exc, HeraldError):
        set_rollback()
        code = next((c for cls, c in DOMAIN.items() if isinstance(exc, cls)), "validation-error")
        field = getattr(exc, "field", None) or next(
            (f for cls, f in FIELD.items() if isinstance(exc, cls)), None
        )
        errors = (
            [{"pointer": f"#/{field}", "detail": str(exc), "code": exc.code}] if field else None
        )
        return problem(code, str(exc), errors=errors)
    if not isinstance(exc, exceptions.APIException):
        return None  # unexpected: the middleware answers 500 and logs it
    code = next((c for cls, c in DRF if isinstance(exc, cls)), None)
    if code is None:
        code = _BY_STATUS.get(exc.status_code, TYPES["server-error"]).code
    set_rollback()
    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None) is not None:
        headers["Retry-After"] = str(max(1, int(exc.wait)))
    if code == "method-not-allowed" and context.get("view") is not None:
        headers["Allow"] = ", ".join(context["view"].allowed_methods)
    if code == "validation-error":
        errors = field_errors(exc.detail)
        return problem(code, _summary(errors), errors=errors, headers=headers)
    detail = exc.detail if isinstance(exc.detail, str) else TYPES[code].title
    return problem(code, str(detail), headers=headers)


class ProblemMiddleware:
    """Problem documents for what never reaches a DRF view under /api/ (see the module doc).
    Goes before CommonMiddleware, so its slash handling comes first."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not request.path_info.startswith(API_PREFIX):
            return self.get_response(request)
        too_large = self._too_large(request)
        if too_large:
            return too_large
        self._add_slash(request)
        response = self.get_response(request)
        if response.status_code >= 400 and not response.get("Content-Type", "").startswith(
            CONTENT_TYPE
        ):
            return self._convert(response)
        return response

    def process_exception(self, request, exception):
        if not request.path_info.startswith(API_PREFIX):
            return None
        if isinstance(exception, Http404):
            return problem("not-found")
        log.exception("unhandled error in %s %s", request.method, request.path_info)
        return problem("server-error")

    @staticmethod
    def _too_large(request):
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return problem("malformed-request", "Content-Length is not a number.")
        limit = settings.API_MAX_BODY_BYTES
        if length > limit:
            return problem(
                "too-large", f"The body is {length} bytes; the limit is {limit}.", limit=limit
            )
        return None

    @staticmethod
    def _add_slash(request):
        path = request.path_info
        if path.endswith("/"):
            return
        try:
            resolve(path)
        except Resolver404:
            try:
                resolve(path + "/")
            except Resolver404:
                return
            request.path_info = path + "/"
            request.path = get_script_prefix().rstrip("/") + request.path_info

    @staticmethod
    def _convert(response):
        kind = _BY_STATUS.get(response.status_code)
        if kind is None:
            kind = TYPES["server-error"] if response.status_code >= 500 else None
        if kind is None:
            return response
        converted = problem(kind.code)
        for header in ("Allow", "Retry-After", "WWW-Authenticate"):
            if response.has_header(header):
                converted[header] = response[header]
        return converted


def describe(request, code: str):
    """GET /api/v1/problems/<code>: what a problem type means (its `type` dereferenced)."""
    kind = TYPES.get(code)
    if kind is None:
        return problem("not-found", f"There is no problem type '{code}'.")
    body = {"type": kind.type, "title": kind.title, "status": kind.status}
    body["description"] = kind.description
    return HttpResponse(json.dumps(body), content_type="application/json")
