"""The provider contract and the normalised types every provider module speaks.

A provider module (one per provider) supplies five things and nothing else:
  build_send_request   our OutboundSms -> the provider's HTTP request (SendRequest)
  parse_send_response  the provider's HTTP response -> SendResult, or a SendError that says
                       whether trying again is safe (retryable), pointless (permanent) or unsafe
                       because the provider may already have the message (ambiguous)
  verify_webhook       raw request -> None, or WebhookAuthError
  parse_status_webhook / parse_inbound_webhook   raw request -> normalised reports
  STATUS_MAP           provider status -> canonical Status, as data; unmapped -> unknown
The base class owns the flow (the HTTP call, transport-error classification, the fallback to
`unknown`), as django-anymail's backends do.
"""

import hashlib
import hmac
import json
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from urllib.parse import parse_qsl

import requests
from django.conf import settings

from messaging import metrics
from messaging.status import Status
from messaging.text import unstorable

# --- Normalised types -------------------------------------------------------------------------


@dataclass(frozen=True)
class OutboundSms:
    message_id: str  # our id; travels as the provider's client reference
    to: str  # E.164 with '+'
    sender: str  # alphanumeric sender id or E.164 number; provider default when empty
    body: str
    encoding: str  # "GSM-7" or "UCS-2"
    segments: int
    callback_url: str  # this provider's status webhook, from PUBLIC_BASE_URL
    attempt: int = 1


@dataclass
class SendRequest:
    method: str
    url: str
    headers: dict = field(default_factory=dict)
    data: dict | None = None  # form-encoded body
    json: dict | list | None = None  # JSON body
    auth: tuple | None = None  # HTTP Basic


@dataclass
class SendResult:
    provider_message_ids: list  # one per part where the provider gives several
    provider_status: str = ""
    segments: int | None = None
    price: Decimal | None = None
    currency: str = ""
    raw: dict | list | None = None
    #: parts the provider refused while accepting others: [(code, text)]. The accepted parts
    #: are on their way, so the message is not resent; it rolls up to `rejected`.
    refused_parts: list = field(default_factory=list)


@dataclass
class DeliveryReport:
    """One status report about one message (or one part of it)."""

    status: Status
    provider_status: str
    provider_message_id: str = ""
    client_reference: str = ""  # our message id, when the provider echoes it
    error_code: str = ""
    error_text: str = ""
    provider_timestamp: datetime | None = None
    price: Decimal | None = None
    currency: str = ""
    segments: int | None = None
    raw: dict | None = None
    # False for a status the provider does not document: recorded on the timeline, not applied.
    documented: bool = True
    # The provider says the recipient has opted out (Twilio 21610 in a status callback).
    opted_out: bool = False

    def dedupe_key(self, provider: str) -> str:
        """Identical receipts (provider retries, sandbox duplicates) share this key."""
        stamp = self.provider_timestamp.isoformat() if self.provider_timestamp else ""
        parts = [provider, self.provider_message_id or self.client_reference,
                 self.provider_status, self.error_code, stamp]  # fmt: skip
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()

    def to_json(self) -> dict:
        return {
            "status": str(self.status),
            "provider_status": self.provider_status,
            "provider_message_id": self.provider_message_id,
            "client_reference": self.client_reference,
            "error_code": self.error_code,
            "error_text": self.error_text,
            "provider_timestamp": self.provider_timestamp.isoformat()
            if self.provider_timestamp
            else None,
            "price": str(self.price) if self.price is not None else None,
            "currency": self.currency,
            "segments": self.segments,
            "raw": self.raw,
            "documented": self.documented,
            "opted_out": self.opted_out,
        }

    @classmethod
    def from_json(cls, data: dict) -> "DeliveryReport":
        stamp = data.get("provider_timestamp")
        return cls(
            status=Status(data["status"]),
            provider_status=data.get("provider_status", ""),
            provider_message_id=data.get("provider_message_id", ""),
            client_reference=data.get("client_reference", ""),
            error_code=data.get("error_code", ""),
            error_text=data.get("error_text", ""),
            provider_timestamp=datetime.fromisoformat(stamp) if stamp else None,
            price=Decimal(data["price"]) if data.get("price") is not None else None,
            currency=data.get("currency", ""),
            segments=data.get("segments"),
            raw=data.get("raw"),
            documented=data.get("documented", True),
            opted_out=data.get("opted_out", False),
        )


@dataclass
class InboundSms:
    provider_message_id: str
    from_number: str
    to_number: str
    text: str
    parts: int = 1
    received_at: datetime | None = None
    raw: dict | None = None


@dataclass
class WebhookInput:
    """A raw webhook request, independent of Django, as providers need to see it."""

    method: str
    url: str  # the public URL the provider called, including the query string
    headers: dict  # lower-cased names
    body: bytes
    query: list = field(default_factory=list)  # [(name, value), ...] in order
    remote_addr: str = ""

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    def form(self) -> list:
        """Form-encoded body as [(name, value)], strictly decoded as UTF-8."""
        try:
            text = self.body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise WebhookParseError("body is not valid UTF-8") from exc
        # NUL and the like are refused after parsing (check_items), not here: signature
        # verification must see the parameters exactly as sent.
        return parse_qsl(text, keep_blank_values=True, strict_parsing=False)

    def json(self):
        try:
            data = json.loads(
                self.body.decode("utf-8"),
                parse_constant=_refuse_constant,
                parse_float=_finite_float,
            )
        except RecursionError:
            raise WebhookParseError("JSON body is nested too deeply") from None
        except (UnicodeDecodeError, ValueError) as exc:
            raise WebhookParseError(f"body is not valid JSON: {exc}") from exc
        return data  # what it holds is bounded after parsing (check_items)

    def json_object(self) -> dict:
        data = self.json()
        if not isinstance(data, dict):
            raise WebhookParseError("JSON body must be an object")
        return data


# --- What the database can store ---------------------------------------------------------------
#
# A validly signed payload can still carry what no column takes: JSON's NaN and 1e999, a lone
# surrogate escape (not encodable as UTF-8), U+0000 (PostgreSQL text and jsonb refuse it), or an
# id longer than its column. Refusing them as unparseable keeps the answer a 400 and the row
# `invalid`, instead of a failed write after the request was acknowledged.

# Column sizes of what a parsed report or inbound message writes (messaging/models.py).
MAX_ID, MAX_NUMBER, MAX_CODE, MAX_REFERENCE = 128, 32, 64, 100


def _refuse_constant(name):
    raise WebhookParseError(f"JSON number {name} cannot be stored")


def _finite_float(text):
    value = float(text)
    if not math.isfinite(value):
        raise WebhookParseError(f"JSON number {text[:20]} is out of range")
    return value


def check_storable(value):
    """Refuse any string (or key) holding U+0000 or a lone surrogate, anywhere in `value`."""
    reason = unstorable(value)
    if reason:
        raise WebhookParseError(f"payload {reason}")


def _bounded(label, value, limit):
    if len(value or "") > limit:
        raise WebhookParseError(f"{label} is longer than {limit} characters")


def check_items(items: list) -> list:
    """Bound what parsed reports and inbound messages will write: over-long ids and numbers are
    refused (truncating an id would match the wrong message); free-text codes are cut."""
    for item in items:
        check_storable(item.raw)
        if isinstance(item, DeliveryReport):
            _bounded("provider message id", item.provider_message_id, MAX_ID)
            check_storable([item.provider_message_id, item.client_reference, item.error_text])
            if len(item.client_reference) > MAX_REFERENCE:
                item.client_reference = ""  # not one of our ids: match by provider id only
            item.provider_status = item.provider_status[:MAX_CODE]
            item.error_code = item.error_code[:MAX_CODE]
            item.currency = (item.currency or "")[:3]
        elif isinstance(item, InboundSms):
            _bounded("provider message id", item.provider_message_id, MAX_ID)
            _bounded("sender", item.from_number, MAX_NUMBER)
            _bounded("recipient", item.to_number, MAX_NUMBER)
            check_storable([item.provider_message_id, item.from_number, item.to_number, item.text])
    return items


# --- Errors ------------------------------------------------------------------------------------


class SendError(Exception):
    """A send that did not succeed. Exactly one of the three kinds below is raised."""

    retryable = False
    ambiguous = False

    def __init__(
        self, message, *, code="", retry_after=None, raw=None, opted_out=False, throttled=False
    ):
        super().__init__(message)
        self.code = str(code)
        self.retry_after = retry_after
        self.raw = raw
        self.opted_out = opted_out  # the provider says the recipient opted out (e.g. Twilio 21610)
        # the provider says we send too fast (HTTP 429, or a throttle code in a 200 answer)
        self.throttled = throttled


class RetryableSendError(SendError):
    """Nothing was accepted; trying again later is safe (429, 5xx, throttling, refused connect)."""

    retryable = True


class PermanentSendError(SendError):
    """The provider refused the message; trying again will fail the same way."""

    #: canonical status for the message: `rejected` (refused before any delivery attempt) by
    #: default; a provider may say `failed`.
    status = Status.REJECTED


class AmbiguousSendError(SendError):
    """The request may have reached the provider (timeout after writing it): never resend."""

    ambiguous = True


class WebhookAuthError(Exception):
    """The webhook failed authentication (answered 401 and recorded)."""


class WebhookParseError(Exception):
    """The webhook body could not be understood (answered 400 and recorded)."""


# --- The base class ----------------------------------------------------------------------------


class Provider:
    #: provider status (lower-cased) -> canonical Status. Anything unmapped becomes unknown.
    STATUS_MAP: dict = {}
    #: whether this provider signs or otherwise authenticates its webhooks
    supports_webhook_auth = True
    #: request headers its webhooks' authenticity depends on, kept as evidence (lower case)
    EVIDENCE_HEADERS: tuple = ()
    #: its emulator class (development and tests), as a dotted path so production never
    #: imports it; the emulator registers every provider that names one
    EMULATOR = ""
    # The OPTIONS that authenticate its webhooks (any one is enough): with signing on and none
    # set, `manage.py check` says so (herald.E005, messaging/checks.py).
    WEBHOOK_AUTH_OPTIONS: tuple = ()
    #: the longest receipt timeout (hours) that still lets reconcile ask the provider's report
    #: API: a provider whose reports are kept for less than RECEIPT_TIMEOUT_HOURS sets it.
    MAX_RECEIPT_TIMEOUT_HOURS = None
    #: how far a signed webhook's timestamp may be from our clock, in seconds. No provider
    #: publishes a window; five minutes is our choice against replays.
    TIMESTAMP_TOLERANCE = 300

    def __init__(self, name: str, options: dict):
        self.name = name
        self.options = options

    @classmethod
    def check(cls, options: dict, env: dict | None = None) -> list:
        """This provider's own `manage.py check` rules: django.core.checks messages for its
        OPTIONS (`env`: option -> (ENV_VAR, required), to name the variables). messaging/checks.py
        calls it for every enabled provider; the generic rules (required options, webhook
        authentication) stay there."""
        return []

    @staticmethod
    def signing_on(options: dict) -> bool:
        return str(options.get("WEBHOOK_SIGNING", "true")).lower() not in ("0", "false", "no")

    # --- helpers shared by every provider ---

    def option(self, key, default=""):
        return self.options.get(key) or default

    def secrets(self, key) -> list:
        """A secret option as a list: comma-separated values allow rotation without downtime."""
        return [s.strip() for s in str(self.options.get(key) or "").split(",") if s.strip()]

    @property
    def webhook_signing_enabled(self) -> bool:
        return str(self.options.get("WEBHOOK_SIGNING", "true")).lower() not in ("0", "false", "no")

    def map_status(self, provider_status) -> Status:
        return self.STATUS_MAP.get(str(provider_status).strip().lower(), Status.UNKNOWN)

    def documents(self, provider_status) -> bool:
        """Whether `provider_status` is one the provider documents (STATUS_MAP has it). An
        undocumented one maps to unknown but is not applied (services.receipts)."""
        return str(provider_status).strip().lower() in self.STATUS_MAP

    def webhook_url(self, kind="status") -> str:
        return f"{settings.PUBLIC_BASE_URL}/webhooks/{self.name}/{kind}/"

    @staticmethod
    def decimal(value):
        if value in (None, ""):
            return None
        try:
            return Decimal(str(value))
        except InvalidOperation:
            return None

    @staticmethod
    def now() -> float:
        """Unix time; one seam so tests can pin it."""
        return time.time()

    def check_fresh(self, stamp, label="timestamp"):
        """Refuse a signed timestamp that is not a unix time or is outside the window."""
        try:
            age = abs(self.now() - int(stamp))
        except (TypeError, ValueError):
            raise WebhookAuthError(f"{label} is not a unix time") from None
        if age > self.TIMESTAMP_TOLERANCE:
            raise WebhookAuthError(f"{label} outside the allowed window")

    @staticmethod
    def constant_time_in(candidate: str, expected: list) -> bool:
        """True when `candidate` equals any of `expected`, comparing every one in constant time."""
        ok = False
        for value in expected:
            ok |= hmac.compare_digest(candidate.encode(), value.encode())
        return ok

    # --- send ---

    def send(self, sms: OutboundSms, session: requests.Session) -> SendResult:
        request = self.build_send_request(sms)
        started = time.perf_counter()
        try:
            response = session.request(
                request.method,
                request.url,
                headers=request.headers,
                data=request.data,
                json=request.json,
                auth=request.auth,
                timeout=(5, settings.SENDER_HTTP_TIMEOUT),
            )
        except requests.ConnectTimeout as exc:
            raise RetryableSendError(f"connect timeout: {exc}", code="connect-timeout") from exc
        except requests.ConnectionError as exc:
            if _never_connected(exc):
                raise RetryableSendError(f"connection refused: {exc}", code="connect") from exc
            raise AmbiguousSendError(f"connection lost: {exc}", code="connection") from exc
        except requests.RequestException as exc:  # read timeout and the like: it may have arrived
            raise AmbiguousSendError(f"no response: {exc}", code="timeout") from exc
        finally:
            metrics.provider_request_seconds.labels(metrics.provider_label(self.name)).observe(
                time.perf_counter() - started
            )
        try:
            return self.parse_send_response(response)
        except SendError as exc:
            exc.throttled = exc.throttled or response.status_code == 429
            exc.http_status = response.status_code  # routing's proof of refusal (503, 429)
            raise

    def build_send_request(self, sms: OutboundSms) -> SendRequest:
        raise NotImplementedError

    def parse_send_response(self, response: requests.Response) -> SendResult:
        raise NotImplementedError

    @staticmethod
    def http_error_class(status_code: int):
        """429 and 5xx are worth retrying; other non-2xx are the caller's fault."""
        if status_code == 429 or status_code >= 500:
            return RetryableSendError
        return PermanentSendError

    @staticmethod
    def retry_after(response) -> float | None:
        try:
            return float(response.headers.get("Retry-After"))
        except (TypeError, ValueError):
            return None

    # --- webhooks ---

    def verify_webhook(self, request: WebhookInput, kind: str) -> None:
        raise NotImplementedError

    def parse_status_webhook(self, request: WebhookInput) -> list:
        raise NotImplementedError

    def parse_inbound_webhook(self, request: WebhookInput) -> list:
        raise NotImplementedError

    def webhook_ack(self, kind: str):
        """(status, body, content type) to answer a stored webhook with."""
        return 200, b"", "text/plain"

    # --- reconciliation ---

    def fetch_reports(self, message, session: requests.Session):
        """Pull the provider's report for a message; None when it has no such API."""
        return None


def _never_connected(exc) -> bool:
    """True when the TCP connection was never made, so the request cannot have been received."""
    text = repr(exc)
    return "NewConnectionError" in text or "Connection refused" in text or "NameResolution" in text
