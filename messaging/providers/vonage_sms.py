"""Vonage SMS API (the legacy REST API, `POST {BASE_URL}/sms/json`). providers.md section 1.

Send: a form-encoded POST authenticated by `api_key` + `api_secret`, or, when SIGNATURE_SECRET
is set, by `api_key` + `timestamp` + `sig` (and then never `api_secret`: Vonage answers status
32 when both are present). A long message is split by Vonage itself: the response has one entry,
one `message-id` and later one delivery receipt per part.

Webhooks: the dashboard's "Webhook format" decides whether receipts arrive as a GET query, a
POST form or a POST JSON body; all three are read here. Signed webhooks (enabled by Vonage
support) carry `timestamp`, `nonce` and `sig` among the parameters; the signature covers the
decoded parameter set, not the raw bytes. Field names are inverted in receipts: `msisdn` is the
RECIPIENT of our message and `to` is our sender id.
"""

import hashlib
import hmac
import re
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlsplit

from config.providers import VONAGE_SIGNATURE_METHODS as SIGNATURE_METHODS
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

# Signed webhooks carry a unix `timestamp`; Vonage publishes no replay window, so the base
# class's +-5 minutes is our choice (providers.md 1.8, UNCONFIRMED as a Vonage rule).

# Vonage caps nothing here that we know of, but the Python SDK refuses callbacks over 100
# characters; a longer one is left out and the dashboard's default receipt URL is used instead.
MAX_CALLBACK_LENGTH = 100

# `messages[].status` codes worth trying again: 1 throttled, 5 internal error, 10 too many
# binds (providers.md 1.4). Every other non-zero code is refused the same way next time.
RETRYABLE_SEND_CODES = frozenset({"1", "5", "10"})

SEND_STATUS_TEXTS = {
    "1": "Throttled",
    "2": "Missing parameters",
    "3": "Invalid parameters",
    "4": "Invalid credentials",
    "5": "Internal error",
    "6": "Invalid message",
    "7": "Number barred",
    "8": "Partner account barred",
    "9": "Partner quota violation",
    "10": "Too many existing binds",
    "11": "Account not enabled for HTTP",
    "12": "Message too long",
    "14": "Invalid signature",
    "15": "Invalid sender address",
    "22": "Invalid network code",
    "23": "Invalid callback URL",
    "29": "Non-whitelisted destination",
    "32": "Signature and API secret disallowed",
    "33": "Number de-activated",
}

# "Throughput Rate Exceeded - please wait [ 250 ] and retry": N is milliseconds. The PHP SDK
# waits max(N / 1000, 1) seconds, and so do we.
THROTTLE_WAIT = re.compile(r"please wait \[\s*(\d+)\s*\]", re.IGNORECASE)

# Receipt `err-code` meanings (providers.md 1.5), kept as the report's error text.
DLR_ERROR_TEXTS = {
    "1": "Unknown",
    "2": "Absent subscriber - temporary",
    "3": "Absent subscriber - permanent",
    "4": "Call barred by user",
    "5": "Portability error",
    "6": "Anti-spam rejection",
    "7": "Handset busy",
    "8": "Network error",
    "9": "Illegal number",
    "10": "Illegal message",
    "11": "Unroutable",
    "12": "Destination unreachable",
    "13": "Subscriber age restriction",
    "14": "Number blocked by carrier",
    "15": "Prepaid - insufficient funds",
    "99": "General error",
}


def string_to_sign(params: dict) -> str:
    """`&k1=v1&k2=v2...`: every parameter but `sig`, sorted by name, `&` and `=` in values
    replaced by `_`, nothing URL-encoded (providers.md 1.8)."""
    return "".join(
        "&{}={}".format(key, str(params[key]).replace("&", "_").replace("=", "_"))
        for key in sorted(params)
        if key != "sig"
    )


def signature(params: dict, secret: str, method: str) -> str:
    """The `sig` for a parameter set, lower-case hex. `method` is the dashboard setting:
    "md5hash" (md5 of the string with the secret appended) or an HMAC digest name."""
    text = string_to_sign(params)
    if method == "md5hash":
        # Vonage's historical scheme, not our choice of hash.
        return hashlib.md5((text + secret).encode("utf-8")).hexdigest()  # noqa: S324
    if method not in SIGNATURE_METHODS:
        raise ValueError(f"unsupported signature method {method!r}")
    digest = getattr(hashlib, method)
    return hmac.new(secret.encode("utf-8"), text.encode("utf-8"), digest).hexdigest()


class ConfigurationError(WebhookAuthError):
    """Our own configuration cannot verify the webhook. Answered 503, not 401: Vonage retries
    5xx for 24 hours, so receipts arrive once the configuration is fixed."""

    status_code = 503


class VonageSmsProvider(Provider):
    WEBHOOK_AUTH_OPTIONS = ("SIGNATURE_SECRET",)
    EMULATOR = "devtools.emulator.vonage_sms.VonageSmsEmulator"

    @classmethod
    def check(cls, options, env=None) -> list:
        from django.core.checks import Error

        method = str(options.get("SIGNATURE_METHOD") or "")
        if not method or method in SIGNATURE_METHODS:
            return []
        return [
            Error(
                f"VONAGE_SIGNATURE_METHOD '{method}' is not one of "
                + ", ".join(SIGNATURE_METHODS)
                + ".",
                id="herald.E006",
            )
        ]

    #: receipt err-code -> meaning, for the admin (send refusals carry their own error-text)
    ERROR_MEANINGS = DLR_ERROR_TEXTS

    # Receipt `status` -> canonical (providers.md 6). `accepted` and `buffered` mean the
    # carrier has it but the handset does not yet: that is our `sent`.
    STATUS_MAP = {
        "accepted": Status.SENT,
        "buffered": Status.SENT,
        "delivered": Status.DELIVERED,
        "expired": Status.EXPIRED,
        "failed": Status.FAILED,
        "rejected": Status.REJECTED,
        "unknown": Status.UNKNOWN,
    }

    @property
    def signature_method(self) -> str:
        return str(self.option("SIGNATURE_METHOD", "sha256")).strip().lower()

    # --- send ---------------------------------------------------------------------------------

    def build_send_request(self, sms: OutboundSms) -> SendRequest:
        data = {
            "api_key": self.option("API_KEY"),
            "from": _sender(sms.sender or self.option("FROM")),
            "to": sms.to.removeprefix("+"),
            "text": sms.body,
            "type": "unicode" if sms.encoding == "UCS-2" else "text",
            # Our message id (a 36-character UUID, within Vonage's 40) comes back in the
            # response and in every receipt, so a receipt that beats the response still matches.
            "client-ref": sms.message_id,
            "status-report-req": "1",
        }
        if sms.callback_url and len(sms.callback_url) <= MAX_CALLBACK_LENGTH:
            data["callback"] = sms.callback_url
        secrets = self.secrets("SIGNATURE_SECRET")
        if secrets and self.signature_method not in SIGNATURE_METHODS:
            # Vonage would answer 14 (invalid signature): refuse before sending, as plainly.
            raise PermanentSendError(
                f"unsupported VONAGE_SIGNATURE_METHOD {self.signature_method!r}",
                code="bad-signature-method",
            )
        if secrets:
            # Signed request: api_key is inside the signed set and api_secret must be absent.
            # With several secrets (rotation) the first one signs.
            data["timestamp"] = str(int(self.now()))
            data["sig"] = signature(data, secrets[0], self.signature_method)
        else:
            # A comma list allows rotation; Vonage takes one secret per request: the first.
            data["api_secret"] = (self.secrets("API_SECRET") or [""])[0]
        return SendRequest(
            method="POST",
            url=self.option("BASE_URL", "https://rest.nexmo.com").rstrip("/") + "/sms/json",
            headers={"Accept": "application/json"},
            data=data,
        )

    def parse_send_response(self, response) -> SendResult:
        status = response.status_code
        if status == 429 or status >= 500:
            raise RetryableSendError(
                f"Vonage answered HTTP {status}",
                code=f"http-{status}",
                retry_after=self.retry_after(response),
                raw=_body(response),
            )
        try:
            data = response.json()
        except ValueError:
            data = None
        if status >= 300:
            raise PermanentSendError(
                f"Vonage answered HTTP {status}: {_error_text(data) or response.text[:200]}",
                code=f"http-{status}",
                raw=_body(response),
            )
        parts = data.get("messages") if isinstance(data, dict) else None
        if not isinstance(parts, list) or not parts:
            if isinstance(data, dict) and _error_text(data):
                # The other error shapes the PHP SDK knows: {"error-code", "error-code-label"}
                # and {"title", "detail"}; neither carries a message, so nothing was sent.
                code = str(data.get("error-code") or data.get("status") or "error")
                raise self.http_error_class(_int(code, 400))(
                    f"Vonage refused the request: {_error_text(data)}", code=code, raw=data
                )
            # A 2xx we cannot read may still mean Vonage queued the message: never resend it.
            raise AmbiguousSendError(
                "Vonage answered 2xx without a readable messages list", code="bad-response",
                raw=_body(response),
            )  # fmt: skip
        return self._result(data, parts)

    def _result(self, data: dict, parts: list) -> SendResult:
        ok = [isinstance(p, dict) and str(p.get("status")) == "0" for p in parts]
        accepted = [p for p, good in zip(parts, ok, strict=True) if good]
        refused = [p for p, good in zip(parts, ok, strict=True) if not good]
        if accepted:
            # Partial failure (e.g. part 2 throttled): the accepted parts ARE on their way to
            # the handset and there is no idempotency key. Raising a retryable error here would
            # resend the whole text and deliver the accepted parts twice, so the message counts
            # as sent with the ids Vonage gave; the refused parts are named in provider_status
            # and the raw response is kept on the `sent` event.
            ids = [str(p["message-id"]) for p in accepted if p.get("message-id")]
            prices = [self.decimal(p.get("message-price")) for p in accepted]
            provider_status = "0"
            if refused:
                codes = ",".join(str(p.get("status", "?")) for p in refused if isinstance(p, dict))
                provider_status = f"partial: {len(refused)}/{len(parts)} parts refused ({codes})"
            return SendResult(
                provider_message_ids=ids,
                provider_status=provider_status[:64],
                segments=_int(data.get("message-count"), len(parts)),
                price=sum(prices) if prices and None not in prices else None,
                currency="",  # the account's currency; Vonage does not say which
                raw=data,
                refused_parts=[
                    (str(p.get("status", "")), str(p.get("error-text", "")))
                    for p in refused
                    if isinstance(p, dict)
                ],
            )
        raise self._refusal(refused, data)

    def _refusal(self, refused: list, data: dict):
        """The error for a response in which no part was accepted."""
        codes = [str(p.get("status", "")) if isinstance(p, dict) else "" for p in refused]
        permanent = [i for i, code in enumerate(codes) if code not in RETRYABLE_SEND_CODES]
        # A retry is safe only when nothing was accepted AND every refusal is transient.
        index = permanent[0] if permanent else 0
        part = refused[index] if isinstance(refused[index], dict) else {}
        code = codes[index] or "unknown"
        text = part.get("error-text") or SEND_STATUS_TEXTS.get(code, "refused")
        message = f"Vonage status {code}: {text}"
        if permanent:
            return PermanentSendError(message, code=code, raw=data)
        wait = THROTTLE_WAIT.search(str(part.get("error-text", "")))
        retry_after = max(int(wait.group(1)) / 1000, 1) if wait else None
        return RetryableSendError(
            message, code=code, retry_after=retry_after, raw=data, throttled=code == "1"
        )

    # --- webhooks -----------------------------------------------------------------------------

    def verify_webhook(self, request: WebhookInput, kind: str) -> None:
        if not self.webhook_signing_enabled:
            return  # explicitly switched off; `manage.py check --deploy` warns about it
        secrets = self.secrets("SIGNATURE_SECRET")
        if not secrets:
            raise ConfigurationError(
                "webhook signing is on but VONAGE_SIGNATURE_SECRET is empty "
                "(set it, or set VONAGE_SMS_WEBHOOK_SIGNING=false)"
            )
        if self.signature_method not in SIGNATURE_METHODS:
            raise ConfigurationError(
                f"unsupported VONAGE_SIGNATURE_METHOD {self.signature_method!r}"
            )
        try:
            params = webhook_params(request)
        except WebhookParseError as exc:
            # The signature lives inside the parameters: an unreadable body cannot carry one.
            raise WebhookAuthError(f"unsigned: {exc}") from None
        sig = params.get("sig", "")
        stamp = params.get("timestamp", "")
        if not sig or not stamp:
            raise WebhookAuthError("missing sig or timestamp parameter")
        self.check_fresh(stamp)
        # Vonage emits upper- or lower-case hex depending on the method: compare lower-cased.
        expected = [signature(params, secret, self.signature_method) for secret in secrets]
        if not self.constant_time_in(sig.lower(), expected):
            raise WebhookAuthError("signature mismatch")

    def parse_status_webhook(self, request: WebhookInput) -> list:
        params = webhook_params(request)
        message_id, raw_status = params.get("messageId", ""), params.get("status", "")
        if not message_id or not raw_status:
            raise WebhookParseError("receipt without messageId or status")
        # err-code "0" means "no error" (it accompanies `delivered`); keep it only in raw.
        code = params.get("err-code", "")
        code = "" if code == "0" else code
        return [
            DeliveryReport(
                status=self.map_status(raw_status),
                provider_status=raw_status,
                documented=self.documents(raw_status),
                provider_message_id=message_id,  # the id of this PART of the message
                client_reference=params.get("client-ref", ""),
                error_code=code,
                error_text=DLR_ERROR_TEXTS.get(code, ""),
                provider_timestamp=_receipt_time(params),
                price=self.decimal(params.get("price")),
                currency="",  # the account's currency; Vonage does not say which
                raw=params,
            )
        ]

    def parse_inbound_webhook(self, request: WebhookInput) -> list:
        params = webhook_params(request)
        missing = [k for k in ("messageId", "msisdn", "to") if not params.get(k)]
        if missing:
            raise WebhookParseError(f"inbound SMS without {', '.join(missing)}")
        if "text" not in params and params.get("type") != "binary":
            raise WebhookParseError("inbound SMS without text")
        # Each part of a concatenated SMS arrives on its own, with its own messageId and the
        # shared concat-ref; we store each part and record how many the whole message has.
        parts = _int(params.get("concat-total"), 1)
        return [
            InboundSms(
                provider_message_id=params["messageId"],
                from_number=params["msisdn"],  # inbound: msisdn is the SENDER
                to_number=params["to"],
                text=params.get("text", ""),
                parts=max(parts, 1),
                received_at=_vonage_time(params.get("message-timestamp", "")),
                raw=params,
            )
        ]

    # --- reconciliation -----------------------------------------------------------------------

    def fetch_reports(self, message, session):
        # providers.md documents no report endpoint for the SMS API (the Reports API is
        # UNCONFIRMED there), so there is nothing to pull: reconciliation marks a message that
        # never got a final receipt `unknown` after the timeout.
        return None


# --- helpers ----------------------------------------------------------------------------------


def webhook_params(request: WebhookInput) -> dict:
    """The webhook's parameters as {name: str}, from the query (GET), a JSON body or a form
    body. Vonage says mixing query and body in one POST is unsupported, so a POST is read from
    its body; a bodyless POST falls back to its query string (tolerance, UNCONFIRMED)."""
    body = request.body.strip()
    if request.method == "GET" or not body:
        query = urlsplit(request.url).query
        pairs = _strict_pairs(query.encode("ascii", "replace")) if query else request.query
    elif "json" in request.content_type or (not request.content_type and body[:1] == b"{"):
        data = request.json_object()
        pairs = list(data.items())
    else:
        pairs = _strict_pairs(body)
    params = {}
    for key, value in pairs:
        # A repeated name keeps its last value, as PHP (Vonage's reference verifier) does.
        params[str(key)] = _scalar(key, value)
    if not params:
        raise WebhookParseError("no parameters")
    return params


def _strict_pairs(raw: bytes) -> list:
    """Form or query pairs; a value that is not UTF-8 once unescaped is malformed (the lenient
    default would turn it into U+FFFD and store a receipt for an id nobody sent)."""
    try:
        return parse_qsl(raw.decode("utf-8"), keep_blank_values=True, errors="strict")
    except UnicodeDecodeError as exc:
        raise WebhookParseError("parameters are not valid UTF-8") from exc


def _scalar(key, value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, str | int | float):
        return str(value)
    raise WebhookParseError(f"parameter {key!r} is not a scalar")


def _receipt_time(params: dict):
    """When the receipt happened, in UTC. `message-timestamp` is documented as UTC; `scts` is
    the carrier's stamp with minute resolution and, judging by Vonage's own example (scts
    1810251310 beside message-timestamp 2018-10-25 12:10:29), in the carrier's local time, so
    it is used only when message-timestamp is absent."""
    stamp = _vonage_time(params.get("message-timestamp", ""))
    if stamp is None:
        stamp = _scts_time(params.get("scts", ""))
    return stamp


def _vonage_time(text: str):
    try:
        return datetime.strptime(text.strip(), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return None


def _scts_time(text: str):
    """`YYMMDDHHMM` (some carriers add seconds). Vonage's own examples include nonsense such as
    `1234567890`, so an invalid value is ignored rather than refusing the receipt."""
    formats = {10: "%y%m%d%H%M", 12: "%y%m%d%H%M%S"}
    fmt = formats.get(len(text.strip()))
    if not fmt:
        return None
    try:
        return datetime.strptime(text.strip(), fmt).replace(tzinfo=UTC)
    except ValueError:
        return None


def _sender(value: str) -> str:
    """A number goes without '+' or '00'; an alphanumeric sender id is sent as it is."""
    value = str(value or "").strip()
    if value.startswith("+"):
        return value[1:]
    if value.startswith("00") and value.isdigit():
        return value[2:]
    return value


def _int(value, default: int) -> int:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return default


def _error_text(data) -> str:
    if not isinstance(data, dict):
        return ""
    for keys in (("error-code-label",), ("title", "detail")):
        text = " - ".join(str(data[k]) for k in keys if data.get(k))
        if text:
            return text
    return ""


def _body(response):
    try:
        return response.json()
    except ValueError:
        return {"body": response.text[:2000]}
