"""Sinch SMS REST API (xms/v1, service-plan variant with a Bearer API token).

Wire contract: docs/providers.md section 3.
  send        POST {base}/xms/v1/{plan}/batches, one recipient per batch, so the batch id names
              exactly one of our messages (Sinch has no per-recipient message id).
  receipts    JSON callbacks to the batch's callback_url: recipient_delivery_report_sms (one per
              status change, as we ask for `per_recipient`) and delivery_report_sms (batch
              summary, only if a batch was sent with another delivery_report mode).
  inbound     mo_text callbacks to the service plan's default callback URL.
  signature   x-sinch-webhook-signature = base64 HMAC-SHA256(secret,
              raw_body + "." + nonce + "." + timestamp), enabled per service plan by Sinch.
  reconcile   GET {base}/xms/v1/{plan}/batches/{batch_id}/delivery_report/{recipient}.
"""

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import requests
from django.conf import settings

from messaging.providers.base import (
    AmbiguousSendError,
    DeliveryReport,
    InboundSms,
    OutboundSms,
    Provider,
    RetryableSendError,
    SendRequest,
    SendResult,
    WebhookAuthError,
    WebhookInput,
    WebhookParseError,
)
from messaging.status import Status

SIGNATURE = "x-sinch-webhook-signature"
NONCE = "x-sinch-webhook-signature-nonce"
TIMESTAMP = "x-sinch-webhook-signature-timestamp"
ALGORITHM = "x-sinch-webhook-signature-algorithm"

RECIPIENT_REPORTS = ("recipient_delivery_report_sms", "recipient_delivery_report_mms")
BATCH_REPORTS = ("delivery_report_sms", "delivery_report_mms")
INBOUND_TEXT = "mo_text"
INBOUND_MEDIA = "mo_media"  # MMS: body {subject, message, media: [{url, content_type, ...}]}

#: Descriptions of Sinch's own delivery-report codes (providers.md 3.6), kept as error_text.
#: Other values are SMPP error codes whose meaning we do not copy (UNCONFIRMED which appear).
CODE_TEXT = {
    402: "Message unroutable",
    403: "Internal error",
    404: "Temporary delivery failure",
    405: "Unmatched parameter",
    406: "Internal expiry",
    407: "Cancelled",
    408: "Internal reject",
    410: "Unmatched default originator",
    411: "Exceeded parts limit",
    412: "Unprovisioned region",
    413: "Blocked",
    414: "Bad media",
    415: "DR rejected",
    416: "Not supported",
    417: "Unreachable",
    418: "Unrecognized",
}


def sign(secret: str, body: bytes, nonce: str, timestamp: str) -> str:
    """base64 HMAC-SHA256 over raw_body "." nonce "." timestamp, as Sinch signs callbacks."""
    data = body + b"." + nonce.encode() + b"." + timestamp.encode()
    return base64.b64encode(hmac.new(secret.encode(), data, hashlib.sha256).digest()).decode()


def _timestamp(value, field: str) -> datetime | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise WebhookParseError(f"'{field}' is not an ISO 8601 string")
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError as exc:
        raise WebhookParseError(f"'{field}' is not an ISO 8601 time: {value!r}") from exc
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)  # Sinch times are UTC


def _media_text(body):
    """A mo_media body's text parts (SDK MOMediaBody: `subject` and `message`), subject first,
    joined by a new line; the media items stay in the stored raw payload. None when the body is
    not an object."""
    if not isinstance(body, dict):
        return None
    parts = [body.get(k) for k in ("subject", "message")]
    return "\n".join(p for p in parts if isinstance(p, str) and p)


def _text(data: dict, field: str, required: bool = True) -> str:
    value = data.get(field)
    if value is None or value == "":
        if required:
            raise WebhookParseError(f"Sinch callback has no '{field}'")
        return ""
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise WebhookParseError(f"Sinch callback field '{field}' is not a string")
    return str(value)


def _code(value) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise WebhookParseError("'code' is not a number")
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise WebhookParseError(f"'code' is not a number: {value!r}") from exc


class SinchProvider(Provider):
    WEBHOOK_AUTH_OPTIONS = ("WEBHOOK_SECRET",)
    EVIDENCE_HEADERS = (
        "x-sinch-webhook-signature",
        "x-sinch-webhook-signature-nonce",
        "x-sinch-webhook-signature-timestamp",
        "x-sinch-webhook-signature-algorithm",
    )
    EMULATOR = "devtools.emulator.sinch.SinchEmulator"
    #: error code -> meaning, for the admin's timeline and dashboard (providers.md 3.6)
    ERROR_MEANINGS = {str(code): text for code, text in CODE_TEXT.items()}

    # Wire values are Capitalised ("Delivered"); map_status lower-cases before looking up.
    STATUS_MAP = {
        "queued": Status.SENT,
        "dispatched": Status.SENT,
        "delivered": Status.DELIVERED,
        "failed": Status.FAILED,
        "deleted": Status.FAILED,
        "expired": Status.EXPIRED,
        "rejected": Status.REJECTED,
        "aborted": Status.REJECTED,
        "cancelled": Status.REJECTED,
        "unknown": Status.UNKNOWN,
    }
    #: statuses whose code is progress, not an error worth showing on the message
    NOT_ERRORS = frozenset({Status.SENT, Status.DELIVERED})

    # --- endpoints ---

    @property
    def base_url(self) -> str:
        base = self.option("BASE_URL") or f"https://{self.option('REGION', 'us')}.sms.api.sinch.com"
        return base.rstrip("/")

    def api_url(self, *path: str) -> str:
        plan = quote(self.option("SERVICE_PLAN_ID"), safe="")
        tail = "/".join(quote(p, safe="+") for p in path)
        return f"{self.base_url}/xms/v1/{plan}/{tail}"

    def headers(self) -> dict:
        return {
            "Authorization": f"Bearer {self.option('API_TOKEN')}",
            "Accept": "application/json",
        }

    # --- send ---

    def build_send_request(self, sms: OutboundSms) -> SendRequest:
        body = {
            "to": [sms.to],  # one recipient per batch: the batch id identifies this message
            "body": sms.body,
            # per_recipient (not _final) so Dispatched arrives too and `sent` is confirmed.
            "delivery_report": "per_recipient",
            "callback_url": sms.callback_url,
            "client_reference": sms.message_id,  # matches a receipt that beats the 201
        }
        sender = sms.sender or self.option("FROM")
        if sender:  # else Sinch uses the service plan's default originator
            body["from"] = sender
        return SendRequest(
            method="POST",
            url=self.api_url("batches"),
            headers={**self.headers(), "Content-Type": "application/json"},
            json=body,
        )

    def parse_send_response(self, response: requests.Response) -> SendResult:
        data = _json_or_none(response)
        if 200 <= response.status_code < 300:
            batch_id = data.get("id") if isinstance(data, dict) else None
            if not batch_id:
                # The batch may exist, but we cannot name it: never resend, reconcile instead.
                raise AmbiguousSendError(
                    f"Sinch answered {response.status_code} without a batch id", raw=data
                )
            return SendResult(
                provider_message_ids=[str(batch_id)],
                provider_status="accepted",
                raw=data,
            )
        code, text = _error(data, response)
        error = self.http_error_class(response.status_code)
        raise error(
            f"Sinch HTTP {response.status_code}: {text}",
            code=code,
            retry_after=self.retry_after(response),
            raw=data if data is not None else {"body": response.text[:2000]},
        )

    # --- webhooks ---

    def verify_webhook(self, request: WebhookInput, kind: str) -> None:
        if not self.webhook_signing_enabled:
            return  # explicit opt-out; `check --deploy` warns (herald.W001)
        secrets = self.secrets("WEBHOOK_SECRET")
        if not secrets:
            raise WebhookAuthError("SINCH_WEBHOOK_SECRET is not set, so nothing can be verified")
        signature = request.headers.get(SIGNATURE, "")
        nonce = request.headers.get(NONCE, "")
        stamp = request.headers.get(TIMESTAMP, "")
        if not (signature and nonce and stamp):
            raise WebhookAuthError(f"missing {SIGNATURE}, -nonce or -timestamp header")
        algorithm = request.headers.get(ALGORITHM, "")
        if algorithm and algorithm.lower() != "hmacsha256":
            raise WebhookAuthError(f"unsupported signature algorithm {algorithm[:32]!r}")
        # No Sinch SDK enforces a window (providers.md 3.8); the base's 5 minutes is our
        # choice. A Sinch retry is a new request, so it carries a fresh timestamp.
        self.check_fresh(stamp, TIMESTAMP)
        expected = [sign(secret, request.body, nonce, stamp) for secret in secrets]
        if not self.constant_time_in(signature.strip(), expected):
            raise WebhookAuthError("signature mismatch")

    def parse_status_webhook(self, request: WebhookInput) -> list:
        data = request.json_object()
        kind = data.get("type")
        if kind in RECIPIENT_REPORTS:
            return [self.recipient_report(data)]
        if kind in BATCH_REPORTS:
            return self.batch_reports(data)
        if isinstance(kind, str) and kind.startswith("mo_"):
            raise WebhookParseError(
                f"inbound '{kind}' sent to the status URL: set the service plan's callback URL "
                "to /webhooks/sinch/inbound/"
            )
        raise WebhookParseError(f"not a Sinch delivery report (type {kind!r})")

    def recipient_report(self, data: dict) -> DeliveryReport:
        """One recipient delivery report (callback or the reconciliation GET)."""
        status = _text(data, "status")
        _text(data, "recipient")  # required by the contract; the batch id alone matches it
        code = _code(data.get("code"))
        canonical = self.map_status(status)
        parts = data.get("number_of_message_parts")
        return DeliveryReport(
            # Decide on `status`, never `code`: Sinch can send code 0 with a non-delivered
            # status (release notes: it stopped altering such codes from 0 to 34).
            status=canonical,
            provider_status=status,
            documented=self.documents(status),
            provider_message_id=_text(data, "batch_id"),
            client_reference=_text(data, "client_reference", required=False),
            error_code=self._error_code(canonical, code),
            error_text=self._error_text(canonical, code),
            # The SMSC's own time of the status when given, else when Sinch made the report.
            provider_timestamp=_timestamp(data.get("operator_status_at"), "operator_status_at")
            or _timestamp(data.get("at"), "at"),
            segments=parts if isinstance(parts, int) and parts > 0 else None,
            raw=data,
        )

    def batch_reports(self, data: dict) -> list:
        """One report per status entry of a batch summary (`summary` / `full` modes)."""
        batch_id = _text(data, "batch_id")
        reference = _text(data, "client_reference", required=False)
        statuses = data.get("statuses")
        if not isinstance(statuses, list):
            raise WebhookParseError("Sinch batch report has no 'statuses' list")
        reports = []
        for entry in statuses:
            if not isinstance(entry, dict):
                raise WebhookParseError("Sinch batch report status entry is not an object")
            status = _text(entry, "status")
            code = _code(entry.get("code"))
            canonical = self.map_status(status)
            recipients = entry.get("recipients")
            if recipients is not None and not isinstance(recipients, list):
                raise WebhookParseError("'recipients' is not a list")
            reports.append(
                DeliveryReport(
                    status=canonical,
                    provider_status=status,
                    documented=self.documents(status),
                    provider_message_id=batch_id,
                    client_reference=reference,
                    error_code=self._error_code(canonical, code),
                    error_text=self._error_text(canonical, code),
                    # The batch, narrowed to this entry (recipients listed only in `full`).
                    raw={**data, "statuses": [entry]},
                )
            )
        return reports

    def parse_inbound_webhook(self, request: WebhookInput) -> list:
        data = request.json_object()
        kind = data.get("type")
        if kind in RECIPIENT_REPORTS or kind in BATCH_REPORTS:
            raise WebhookParseError(
                f"delivery report '{kind}' sent to the inbound URL: batches carry "
                "callback_url /webhooks/sinch/status/"
            )
        if kind == INBOUND_MEDIA:
            body = _media_text(data.get("body"))
        elif kind != INBOUND_TEXT:
            # mo_binary (base64 + UDH) has no text for us to store.
            raise WebhookParseError(f"unsupported Sinch inbound type {kind!r}")
        else:
            body = data.get("body")
        if not isinstance(body, str):
            raise WebhookParseError(f"Sinch {kind} has no text body")
        return [
            InboundSms(
                provider_message_id=_text(data, "id"),
                from_number=_text(data, "from"),
                to_number=_text(data, "to"),  # often without '+'; normalised when stored
                text=body,
                received_at=_timestamp(data.get("received_at"), "received_at"),
                raw=data,
            )
        ]

    def _error_code(self, canonical: Status, code: int | None) -> str:
        if code is None or canonical in self.NOT_ERRORS:
            return ""  # Queued 400 / Dispatched 401 / Delivered 0 are not errors (kept in raw)
        return str(code)

    def _error_text(self, canonical: Status, code: int | None) -> str:
        if code is None or canonical in self.NOT_ERRORS:
            return ""
        return CODE_TEXT.get(code, "")

    # --- reconciliation ---

    def fetch_reports(self, message, session: requests.Session) -> list:
        """The recipient delivery report for a message; [] when Sinch has none (404).

        A message whose 201 was never stored (ambiguous send) has no batch id, so Sinch's list
        of recipient reports is searched by our client reference instead. Raises a SendError
        (retryable for 429/5xx/transport errors, permanent otherwise) when Sinch cannot answer.
        """
        if message.provider_message_id:
            # The recipient as we sent it (E.164 with '+'); Sinch's docs name the path segment
            # recipient_msisdn and do not say whether the '+' is required (UNCONFIRMED).
            url = self.api_url(
                "batches", message.provider_message_id, "delivery_report", message.to_number
            )
            response = self._get(session, url)
            if response.status_code == 404:
                return []
            return [self.recipient_report(self._report_json(response))]
        since = message.created_at - timedelta(minutes=5)
        params = {
            "client_reference": str(message.pk),
            "start_date": since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "page_size": 100,
        }
        response = self._get(session, self.api_url("delivery_reports"), params=params)
        if response.status_code == 404:
            return []
        data = self._report_json(response)
        items = data.get("delivery_reports") or []
        if not isinstance(items, list):
            raise WebhookParseError("Sinch delivery_reports is not a list")
        return [self.recipient_report(item) for item in items if isinstance(item, dict)]

    def _get(self, session, url, params=None) -> requests.Response:
        try:
            return session.get(
                url,
                headers=self.headers(),
                params=params,
                timeout=(5, settings.SENDER_HTTP_TIMEOUT),
            )
        except requests.RequestException as exc:  # a GET is safe to repeat
            raise RetryableSendError(f"Sinch report fetch failed: {exc}", code="transport") from exc

    def _report_json(self, response) -> dict:
        data = _json_or_none(response)
        if not 200 <= response.status_code < 300:
            code, text = _error(data, response)
            raise self.http_error_class(response.status_code)(
                f"Sinch report fetch HTTP {response.status_code}: {text}",
                code=code,
                retry_after=self.retry_after(response),
                raw=data,
            )
        if not isinstance(data, dict):
            raise WebhookParseError("Sinch report response is not a JSON object")
        return data


def _json_or_none(response):
    try:
        return response.json()
    except ValueError:
        return None


def _error(data, response) -> tuple:
    """(code, text) from Sinch's error body, else from the HTTP status.

    400 and 403 carry {"code": "syntax_invalid_json", "text": "..."}; other statuses get "the
    standard response from the server" (Sinch status-codes doc). One copy of that doc shows a
    Google-style {"error": {"code": 400, "message": ..., "status": ...}} body: UNCONFIRMED for
    the service-plan API, so it is read too.
    """
    if isinstance(data, dict):
        if isinstance(data.get("error"), dict):
            error = data["error"]
            code = error.get("status") or error.get("code") or f"http-{response.status_code}"
            return str(code), str(error.get("message") or "")
        if data.get("code"):
            return str(data["code"]), str(data.get("text") or "")
    return f"http-{response.status_code}", response.reason or response.text[:200]
