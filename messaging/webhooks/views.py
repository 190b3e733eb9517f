"""One webhook view for every provider: authenticate on the raw body, store, then answer.

Answers: 2xx only once the request is stored; 401 when authentication fails (its headers,
size, hash and first 2 KB stored within a per-provider budget a minute, beyond it only counted);
400 when the body cannot be parsed (stored); 413 over WEBHOOK_MAX_BODY_BYTES; 429
over the per-source rate limit (providers retry 429); 503 when it cannot be stored, so the
provider retries (Sinch retries only 5xx and 429).
"""

import logging
import traceback
from urllib.parse import parse_qsl

from django.conf import settings
from django.db import DatabaseError, transaction
from django.http import HttpResponse, JsonResponse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from django_ratelimit.core import is_ratelimited

from messaging import applier, metrics, providers
from messaging.models import WebhookRequest
from messaging.providers.base import WebhookAuthError, WebhookInput, WebhookParseError
from messaging.services import webhooks

log = logging.getLogger("herald.webhooks")


def _answer(status: int, error: str = "", **extra):
    if status < 300 and not error:
        return HttpResponse(status=status)
    return JsonResponse({"error": error, **extra}, status=status)


def webhook_input(request, body: bytes) -> WebhookInput:
    """The request as providers see it. The URL is the public one (PUBLIC_BASE_URL), because
    that is what a provider signs (Twilio), whatever host or scheme reached us behind a proxy."""
    path = request.get_full_path()
    headers = {k.lower(): v for k, v in request.headers.items()}
    return WebhookInput(
        method=request.method,
        url=f"{settings.PUBLIC_BASE_URL}{path}",
        headers=headers,
        body=body,
        # parse_qsl, not request.GET: Django refuses more than DATA_UPLOAD_MAX_NUMBER_FIELDS
        # parameters there (TooManyFieldsSent) before anything could be stored.
        query=parse_qsl(request.META.get("QUERY_STRING", ""), keep_blank_values=True),
        remote_addr=request.META.get("REMOTE_ADDR", ""),
    )


@method_decorator(csrf_exempt, name="dispatch")
class WebhookView(View):
    provider_name = ""
    kind = "status"  # or "inbound"
    http_method_names = ["get", "post"]

    def get(self, request):
        # Vonage SMS API can deliver receipts as GET query strings (a dashboard setting).
        return self.receive(request)

    def post(self, request):
        return self.receive(request)

    def receive(self, request):
        if settings.RATELIMIT_ENABLE and is_ratelimited(
            request,
            group=f"webhook:{self.provider_name}",
            key="ip",
            rate=settings.WEBHOOK_RATE_LIMIT,
            increment=True,
        ):
            response = _answer(429, "rate limited")
            response["Retry-After"] = "60"
            return response
        length = int(request.META.get("CONTENT_LENGTH") or 0)
        if length > settings.WEBHOOK_MAX_BODY_BYTES:
            return self._too_large(request, length)
        try:
            body = request.read(settings.WEBHOOK_MAX_BODY_BYTES + 1)
        except OSError:
            return _answer(400, "could not read the request body")
        if len(body) > settings.WEBHOOK_MAX_BODY_BYTES:  # no (or a false) Content-Length
            return self._too_large(request, len(body), body)
        try:
            provider = providers.get_provider(self.provider_name)
        except providers.UnknownProvider:
            return _answer(404, f"provider '{self.provider_name}' is not enabled")
        winput = webhook_input(request, body)
        path = request.path

        try:
            provider.verify_webhook(winput, self.kind)
        except WebhookAuthError as exc:
            return self._refuse(winput, path, getattr(exc, "status_code", 401), str(exc))
        except Exception as exc:  # a verifier crashing on hostile input has not authenticated it
            log.exception("webhook verifier raised", extra={"provider": self.provider_name})
            return self._refuse(winput, path, 401, f"verifier error: {type(exc).__name__}: {exc}")

        # Parse before storing, only to know the answer: what can never be applied is stored as
        # invalid and answered 400 (the sender's fault), everything else is stored `received`.
        try:
            items = webhooks.parse(self.provider_name, self.kind, winput)
        except WebhookParseError as exc:
            detail = str(exc)[:2000]
            return self._store_answer(
                winput, path, 400, lambda row: _answer(400, "malformed payload", detail=detail,
                                                       id=row.pk),
                state=WebhookRequest.State.INVALID, error=detail,
            )  # fmt: skip
        except Exception as exc:  # a parser bug is ours: keep the request for replay, answer 2xx
            log.exception("webhook parser raised", extra={"provider": self.provider_name})
            status, response = self._ack(provider)
            return self._store_answer(
                winput, path, status, lambda row: response,
                state=WebhookRequest.State.FAILED, error=f"{type(exc).__name__}: {exc}"[:2000],
                traceback=traceback.format_exc(),
            )  # fmt: skip
        status, response = self._ack(provider)
        fields = dict(authenticated=True, state=WebhookRequest.State.RECEIVED,
                      report_count=len(items), response_status=status)  # fmt: skip
        try:
            if applier.inline_enabled():
                # Store and apply in one transaction: one commit (one WAL flush) per request.
                # A failure to apply rolls back to a savepoint inside it and is recorded on the
                # row (replayable); the row itself commits, or the answer is 503.
                with transaction.atomic():
                    stored = webhooks.store(self.provider_name, self.kind, winput, path, **fields)
                    try:
                        applier.apply_stored(stored, items)
                    except DatabaseError:  # rolled back to its savepoint; the row stays
                        log.exception("inline apply failed; left for the applier",
                                      extra={"id": stored.pk})  # fmt: skip
            else:  # deferred (the default): one INSERT; an applier drains `received`
                webhooks.store(self.provider_name, self.kind, winput, path, row=False, **fields)
        except DatabaseError:
            log.exception("could not store a webhook", extra={"provider": self.provider_name})
            return _answer(503, "temporarily unable to store the request")
        return response

    def _refuse(self, winput, path, status, reason):
        """Keep a request that failed authentication (within the provider's budget, else only
        counted), then refuse it."""
        metrics.webhook_auth_failed(self.provider_name, self.kind)
        try:
            webhooks.refuse(
                self.provider_name, self.kind, winput, path,
                authenticated=False, auth_error=reason[:255],
                state=WebhookRequest.State.UNAUTHENTICATED, response_status=status,
            )  # fmt: skip
        except DatabaseError:
            log.exception("could not store an unauthenticated webhook")
            return _answer(503, "temporarily unable to store the request")
        log.warning(
            "webhook authentication failed",
            extra={"provider": self.provider_name, "kind": self.kind, "reason": reason[:255]},
        )
        return _answer(status, "authentication failed")

    def _ack(self, provider):
        status, content, content_type = provider.webhook_ack(self.kind)
        return status, HttpResponse(content, status=status, content_type=content_type)

    def _store_answer(self, winput, path, status, respond, **fields):
        """Store an authenticated request that will not be applied, then answer respond(row)."""
        try:
            row = webhooks.store(self.provider_name, self.kind, winput, path, authenticated=True,
                                 response_status=status, **fields)  # fmt: skip
        except DatabaseError:
            log.exception("could not store a webhook", extra={"provider": self.provider_name})
            return _answer(503, "temporarily unable to store the request")
        return respond(row)

    def _too_large(self, request, size, body=b""):
        try:
            winput = webhook_input(request, body)
            webhooks.refuse(
                self.provider_name, self.kind, winput, request.path, size=size,
                authenticated=False, state=WebhookRequest.State.TOO_LARGE,
                error=f"body of {size} bytes exceeds WEBHOOK_MAX_BODY_BYTES "
                f"({settings.WEBHOOK_MAX_BODY_BYTES})",
                response_status=413,
            )  # fmt: skip
        except DatabaseError:
            return _answer(503, "temporarily unable to store the request")
        return _answer(413, "payload too large", limit=settings.WEBHOOK_MAX_BODY_BYTES)
