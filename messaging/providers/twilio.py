"""Twilio Programmable Messaging (providers.md section 5).

Send: POST {BASE_URL}/2010-04-01/Accounts/{AccountSid}/Messages.json, form-encoded, HTTP Basic
AccountSid:AuthToken. Our message id travels in the StatusCallback URL's query (`?ref=<id>`):
Twilio has no client-reference field, and the query is covered by the callback's signature.

Webhooks (status callbacks and inbound messages) are form posts signed with X-Twilio-Signature:
base64 HMAC-SHA1, keyed with the auth token, over the full URL Twilio called followed by every
POST parameter (names sorted; each name's values sorted and de-duplicated) as name + value.
"""

import base64
import hashlib
import hmac
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests

from messaging.providers.base import (
    AmbiguousSendError,
    DeliveryReport,
    InboundSms,
    OutboundSms,
    PermanentSendError,
    Provider,
    RetryableSendError,
    SendRequest,
    SendResult,
    WebhookAuthError,
    WebhookInput,
    WebhookParseError,
)
from messaging.status import Status

API_VERSION = "2010-04-01"

# Twilio's error codes that mean "try again later" whatever the HTTP status says.
RETRYABLE_CODES = frozenset({"20429"})  # Too Many Requests
OPTED_OUT_CODE = "21610"  # "Attempt to send to unsubscribed recipient"

# An empty TwiML document: Twilio sends no auto-reply to an inbound message.
EMPTY_TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response></Response>'

PARTIALLY_DELIVERED = "partially_delivered"
PARTIAL_NOTE = "partially delivered: not every recipient of the group MMS got it"

# An error code that says more than the status does. Twilio reports a message whose
# ValidityPeriod ran out in its queue as `failed` with 30036 ("Validity Period Expired" error
# page): it expired, it was not refused.
ERROR_STATUS = {"30036": Status.EXPIRED}

# Short descriptions for the error codes providers.md lists. Only the 30003 and 30006 pages were
# read; the other titles are UNCONFIRMED wording (the code itself is always kept as is).
ERROR_TEXTS = {
    "30003": "Unreachable destination handset",
    "30005": "Unknown destination handset",
    "30006": "Landline or unreachable carrier",
    "30007": "Message filtered",
    "30008": "Unknown error",
    "30036": "Validity Period Expired",
    OPTED_OUT_CODE: "Attempt to send to unsubscribed recipient",
}


def compute_signature(url: str, params, token: str) -> str:
    """X-Twilio-Signature for `url` and POST `params` ([(name, value)] or {name: value|[values]}),
    as twilio-python's RequestValidator.compute_signature does it."""
    items = params.items() if isinstance(params, dict) else params
    grouped: dict = {}
    for name, value in items:
        values = value if isinstance(value, list | tuple) else [value]
        grouped.setdefault(name, set()).update(values)
    text = url + "".join(
        name + value for name in sorted(grouped) for value in sorted(grouped[name])
    )
    digest = hmac.new(token.encode("utf-8"), text.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def body_sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def url_variants(url: str) -> list:
    """The URL as given, with the scheme's default port added when it has none, and with any
    port removed: Twilio is inconsistent about the port it signs (twilio-python tries both)."""
    parts = urlsplit(url)
    variants = [url]
    if parts.port is None:
        port = 443 if parts.scheme == "https" else 80
        variants.append(urlunsplit(parts._replace(netloc=f"{parts.netloc}:{port}")))
    else:
        host = parts.netloc.rsplit(":", 1)[0]
        variants.append(urlunsplit(parts._replace(netloc=host)))
    return variants


def _first(header_value: str) -> str:
    """The first hop's value of a possibly comma-joined X-Forwarded-* header."""
    return header_value.split(",")[0].strip()


def _lenient_form(body: bytes) -> list:
    """Form pairs decoded the way Django's QueryDict (what Twilio's own Django helper signs
    against) decodes them: invalid UTF-8 replaced, never an error. Used only to verify the
    signature; parsing the payload is strict."""
    text = body.decode("utf-8", errors="replace")
    return parse_qsl(text, keep_blank_values=True, errors="replace")


def _strict_form(winput: WebhookInput) -> list:
    if winput.content_type == "application/json":
        raise WebhookParseError("Twilio messaging webhooks are form-encoded, not JSON")
    try:
        text = winput.body.decode("utf-8")
        return parse_qsl(text, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError as exc:
        raise WebhookParseError("body is not valid UTF-8") from exc


def _as_dict(pairs: list) -> dict:
    """Form pairs as a JSON-friendly dict: a repeated name keeps all its values in a list."""
    out: dict = {}
    for name, value in pairs:
        if name in out:
            previous = out[name]
            out[name] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            out[name] = value
    return out


def _field(data: dict, *names) -> str:
    """The first non-empty value among `names` (the first one when a name repeats)."""
    for name in names:
        value = data.get(name)
        if isinstance(value, list):
            value = value[0] if value else ""
        if value:
            return str(value)
    return ""


def _positive_int(value):
    try:
        number = int(str(value))
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def parse_raw_dlr_done_date(value: str):
    """RawDlrDoneDate is the carrier's DLR "done date", YYMMDDhhmm at minute precision and with
    no time zone (providers.md 5.4). Carriers generally report UTC, so it is read as UTC; an
    unreadable value is dropped rather than failing the whole callback."""
    if not value:
        return None
    try:
        return datetime.strptime(value.strip(), "%y%m%d%H%M").replace(tzinfo=UTC)
    except ValueError:
        return None


class TwilioProvider(Provider):
    WEBHOOK_AUTH_OPTIONS = ("AUTH_TOKEN",)
    EVIDENCE_HEADERS = ("x-twilio-signature",)
    EMULATOR = "devtools.emulator.twilio.TwilioEmulator"

    @classmethod
    def check(cls, options, env=None) -> list:
        from django.core.checks import Error

        if options.get("FROM") or options.get("MESSAGING_SERVICE_SID"):
            return []
        return [
            Error(
                "Provider 'twilio' needs TWILIO_FROM or TWILIO_MESSAGING_SERVICE_SID.",
                id="herald.E007",
            )
        ]

    #: error code -> meaning, for the admin's timeline and dashboard (providers.md 5.4)
    ERROR_MEANINGS = ERROR_TEXTS

    STATUS_MAP = {
        # Not final yet: Twilio has the message, or has handed it to the carrier.
        "queued": Status.SENT,
        "accepted": Status.SENT,
        "scheduled": Status.SENT,
        "sending": Status.SENT,
        "sent": Status.SENT,
        "delivered": Status.DELIVERED,
        "read": Status.DELIVERED,  # WhatsApp/RCS read receipt: delivered and then some
        # Group MMS only: delivered to some recipients, not all. Counted as delivered, and the
        # report says so in error_text (see parse_status_webhook).
        PARTIALLY_DELIVERED: Status.DELIVERED,
        "undelivered": Status.FAILED,  # the carrier reported non-delivery
        "failed": Status.REJECTED,  # Twilio could not send it at all (not charged)
        "canceled": Status.REJECTED,  # a scheduled message cancelled before sending
    }

    # --- send ---

    @property
    def account_sid(self) -> str:
        return self.option("ACCOUNT_SID")

    def api_url(self, path: str) -> str:
        base = self.option("BASE_URL", "https://api.twilio.com").rstrip("/")
        return f"{base}/{API_VERSION}/Accounts/{self.account_sid}/{path}"

    def api_auth(self) -> tuple:
        # With a rotation list the first token is the current (primary) one; the others are
        # only accepted on incoming webhooks.
        tokens = self.secrets("AUTH_TOKEN")
        return (self.account_sid, tokens[0] if tokens else "")

    @staticmethod
    def status_callback(callback_url: str, message_id: str) -> str:
        joiner = "&" if "?" in callback_url else "?"
        return f"{callback_url}{joiner}{urlencode({'ref': message_id})}"

    def build_send_request(self, sms: OutboundSms) -> SendRequest:
        service = self.option("MESSAGING_SERVICE_SID")
        sender = sms.sender
        if service and sender == self.option("FROM"):
            # The service's sender pool chooses the number; only a sender the message itself
            # names is passed on as From (Twilio accepts both together, error 21603 page).
            sender = ""
        if not service and not sender:
            raise PermanentSendError(
                "Twilio needs TWILIO_FROM or TWILIO_MESSAGING_SERVICE_SID", code="21603"
            )
        data = {"To": sms.to}
        if sender:
            data["From"] = sender
        if service:
            data["MessagingServiceSid"] = service
        data["Body"] = sms.body
        data["StatusCallback"] = self.status_callback(sms.callback_url, sms.message_id)
        return SendRequest(
            method="POST",
            url=self.api_url("Messages.json"),
            headers={"Accept": "application/json"},
            data=data,
            auth=self.api_auth(),
        )

    def parse_send_response(self, response: requests.Response) -> SendResult:
        if not 200 <= response.status_code < 300:
            raise self._error(response)
        try:
            data = response.json()
            sid = str(data["sid"])
        except (ValueError, KeyError, TypeError) as exc:
            # A 2xx means Twilio created the message; without its sid we cannot say more.
            raise AmbiguousSendError(
                f"Twilio answered {response.status_code} without a message sid",
                code="bad-response",
                raw=response.text[:2000],
            ) from exc
        price = self.decimal(data.get("price"))
        return SendResult(
            provider_message_ids=[sid],
            provider_status=str(data.get("status") or ""),
            # 0 while a Messaging Service has not sent it yet: the segment count is unknown.
            segments=_positive_int(data.get("num_segments")),
            # Twilio reports a charge as a negative amount ("-0.00750").
            price=abs(price) if price is not None else None,
            currency=str(data.get("price_unit") or "").upper() if price is not None else "",
            raw=data,
        )

    def _error(self, response: requests.Response):
        """The SendError for a non-2xx answer. Legacy bodies carry code/message; newer RFC 9457
        bodies carry code/title/detail (providers.md 5.3)."""
        try:
            data = response.json()
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        code = str(data.get("code") or f"http-{response.status_code}")
        text = data.get("message") or data.get("detail") or data.get("title") or response.reason
        message = f"Twilio {response.status_code} error {code}: {text}"
        raw = data or response.text[:2000]
        if code in RETRYABLE_CODES or self.http_error_class(response.status_code).retryable:
            retry_after = self.retry_after(response)
            return RetryableSendError(message, code=code, retry_after=retry_after, raw=raw)
        return PermanentSendError(message, code=code, raw=raw, opted_out=code == OPTED_OUT_CODE)

    # --- webhooks ---

    def candidate_urls(self, winput: WebhookInput) -> list:
        """URLs Twilio may have signed: the public one (PUBLIC_BASE_URL + path), and the one a
        reverse proxy reports in X-Forwarded-Proto / X-Forwarded-Host (or Host). Each with and
        without the default port. The path and query are always the ones that reached us. The
        forwarded headers are the sender's to choose, but they only select which URL is checked:
        without the auth token no URL can be made to match."""
        urls = [winput.url]
        headers = winput.headers
        host = _first(headers.get("x-forwarded-host", "")) or headers.get("host", "").strip()
        if host:
            parts = urlsplit(winput.url)
            scheme = _first(headers.get("x-forwarded-proto", "")).lower() or parts.scheme
            urls.append(urlunsplit((scheme, host, parts.path, parts.query, "")))
        out = []
        for url in urls:
            for variant in url_variants(url):
                if variant not in out:
                    out.append(variant)
        return out

    def verify_webhook(self, request: WebhookInput, kind: str) -> None:
        if not self.webhook_signing_enabled:
            return
        tokens = self.secrets("AUTH_TOKEN")
        if not tokens:
            raise WebhookAuthError("TWILIO_AUTH_TOKEN is not configured")
        signature = request.headers.get("x-twilio-signature", "").strip()
        if not signature:
            raise WebhookAuthError("missing X-Twilio-Signature")
        body_hash = dict(request.query).get("bodySHA256")
        if body_hash is not None:
            # JSON-body webhooks: the body is covered by its hash in the (signed) URL, and the
            # signature is computed over the URL alone.
            if not hmac.compare_digest(
                body_hash.lower().encode(), body_sha256(request.body).encode()
            ):
                raise WebhookAuthError("bodySHA256 does not match the body")
            params = []
        elif request.method == "GET":
            params = []  # a GET's parameters are in the URL, which is signed as a whole
        else:
            params = _lenient_form(request.body)
        expected = [
            compute_signature(url, params, token)
            for token in tokens
            for url in self.candidate_urls(request)
        ]
        if not self.constant_time_in(signature, expected):
            raise WebhookAuthError("X-Twilio-Signature mismatch")

    def parse_status_webhook(self, request: WebhookInput) -> list:
        data = _as_dict(_strict_form(request))
        sid = _field(data, "MessageSid", "SmsSid")
        status = _field(data, "MessageStatus", "SmsStatus")
        if not sid:
            raise WebhookParseError("status callback without MessageSid")
        if not status:
            raise WebhookParseError("status callback without MessageStatus")
        return [
            self.report(
                status,
                sid,
                error_code=_field(data, "ErrorCode"),
                client_reference=_field(dict(request.query), "ref"),
                provider_timestamp=parse_raw_dlr_done_date(_field(data, "RawDlrDoneDate")),
                segments=_positive_int(_field(data, "NumSegments")),
                raw=data,
            )
        ]

    def report(self, status: str, sid: str, *, error_code="", error_text="", **fields):
        """A DeliveryReport for a Twilio status and error code (callback or fetched)."""
        canonical = self.map_status(status)
        if canonical in (Status.FAILED, Status.REJECTED):
            canonical = ERROR_STATUS.get(error_code, canonical)
        error_text = error_text or ERROR_TEXTS.get(error_code, "")
        if status.lower() == PARTIALLY_DELIVERED:
            error_text = PARTIAL_NOTE
        return DeliveryReport(
            status=canonical,
            provider_status=status,
            documented=self.documents(status),
            # 21610: the recipient replied STOP. A Messaging Service send fails with it here, in
            # the status callback, not in the send response (which the send path handles).
            opted_out=error_code == OPTED_OUT_CODE,
            provider_message_id=sid,
            error_code=error_code,
            error_text=error_text,
            **fields,
        )

    def parse_inbound_webhook(self, request: WebhookInput) -> list:
        data = _as_dict(_strict_form(request))
        sid = _field(data, "MessageSid", "SmsSid", "SmsMessageSid")
        sender, recipient = _field(data, "From"), _field(data, "To")
        if not (sid and sender and recipient):
            raise WebhookParseError("inbound message without MessageSid, From or To")
        body = data.get("Body", "")
        return [
            InboundSms(
                provider_message_id=sid,
                from_number=sender,
                to_number=recipient,
                text=body[0] if isinstance(body, list) else body,
                parts=_positive_int(_field(data, "NumSegments")) or 1,
                raw=data,
            )
        ]

    def webhook_ack(self, kind: str):
        if kind == "inbound":
            return 200, EMPTY_TWIML, "text/xml"
        return 200, b"", "text/plain"

    # --- reconciliation ---

    def fetch_reports(self, message, session: requests.Session):
        """GET the Message resource and report its status. Returns [] when the message has no
        Twilio sid (Twilio cannot be asked by our reference); raises the SendError family on a
        failed request (RetryableSendError for 429/5xx and transport errors)."""
        sid = message.provider_message_id
        if not sid:
            return []
        try:
            response = session.get(
                self.api_url(f"Messages/{sid}.json"),
                headers={"Accept": "application/json"},
                auth=self.api_auth(),
                timeout=(5, 30),
            )
        except requests.RequestException as exc:
            raise RetryableSendError(f"Twilio fetch failed: {exc}", code="fetch") from exc
        if not 200 <= response.status_code < 300:
            raise self._error(response)
        try:
            data = response.json()
            status = str(data["status"])
        except (ValueError, KeyError, TypeError) as exc:
            raise RetryableSendError(
                "Twilio fetch answered without a status", code="fetch"
            ) from exc
        price = self.decimal(data.get("price"))
        return [
            self.report(
                status,
                str(data.get("sid") or sid),
                error_code=str(data.get("error_code") or ""),
                error_text=str(data.get("error_message") or ""),
                client_reference=str(message.pk),
                price=abs(price) if price is not None else None,
                currency=str(data.get("price_unit") or "").upper() if price is not None else "",
                segments=_positive_int(data.get("num_segments")),
                raw=data,
            )
        ]
