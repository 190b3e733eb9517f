"""Vonage Messages API, SMS channel (providers.md section 2).

Send:     POST {BASE_URL}/v1/messages, JSON, answered 202 {"message_uuid": ...}. Authenticated
          by an RS256 application JWT (APPLICATION_ID + PRIVATE_KEY), else HTTP Basic
          API_KEY:API_SECRET (Vonage says Basic lacks some features, so JWT is preferred).
Errors:   RFC 7807 problem+json; 429 and 5xx retryable, other 4xx permanent.
Webhooks: status and inbound are JSON POSTs carrying `Authorization: Bearer <JWT>`, HS256 with
          the account's signature secret; `payload_hash` is the SHA-256 of the raw body.
One uuid and one aggregated status callback per message, however many segments it has.
"""

import hashlib
import hmac
import re
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization

from messaging.encoding import UCS2
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

#: Application JWT lifetime; the SDKs default to 15 minutes (VPY generate_application_jwt).
JWT_LIFETIME = 15 * 60
#: How old (or how far in the future, for clock skew) a webhook JWT's `iat` may be. Vonage sets
#: no replay window; 5 minutes is our choice (providers.md 2.7, step 5).
WEBHOOK_MAX_AGE = 5 * 60
#: The only algorithm a webhook JWT may use. Pinned: the Node SDK also accepts RS256, which
#: would let anyone holding a public key forge receipts (providers.md 2.7, step 3).
WEBHOOK_ALGORITHMS = ["HS256"]

STATUS_MAP = {
    "submitted": Status.SENT,  # accepted by the SMS gateways (the chargeable event)
    "delivered": Status.DELIVERED,
    "read": Status.DELIVERED,  # OTT channels only; harmless for SMS
    "undeliverable": Status.FAILED,  # the Messages API could not reach the provider
    # Not in the SDK enum nor the status-callback docs (UNCONFIRMED): mapped defensively.
    "failed": Status.FAILED,
    # "rejected" is decided by its error code, see REJECTED_BY_CODE.
}

# For SMS, `rejected` covers the underlying DLR's expired, failed, unknown and rejected
# (providers.md 2.5, "SMS lifecycle"), so the error code decides. Codes from the 2021 list
# (VSPEC messages-olympus.yml) plus 1110 (VJAVA); anything not listed is `failed`.
REJECTED_BY_CODE = {
    "1360": Status.EXPIRED,  # TTL was activated (the SMS DLR said expired)
    "1330": Status.UNKNOWN,  # Unknown (the SMS DLR said unknown): soft, a later status may win
    # Refused before any delivery attempt: validation, account, policy and routing errors.
    **dict.fromkeys(
        (
            "1000",  # Throttled
            "1010",  # Missing params
            "1020",  # Invalid params
            "1040",  # Invalid message
            "1050",  # Number barred
            "1060",  # Partner account barred
            "1070",  # Partner quota exceeded
            "1080",  # Account not enabled for REST
            "1090",  # Message too long
            "1110",  # Invalid channel parameters
            "1120",  # Illegal sender address
            "1130",  # Invalid TTL
            "1140",  # Facility not allowed
            "1150",  # Invalid message class
            "1160",  # Non white-listed destination
            "1170",  # Invalid or missing msisdn
            "1210",  # Anti-spam rejection
            "1240",  # Illegal number (opted out)
            "1241",  # Too many send requests
            "1250",  # Unroutable
            "1270",  # Subscriber age restriction
            "1280",  # Number blocked by carrier
        ),
        Status.REJECTED,
    ),
}

_CODE_IN_TYPE = re.compile(r"#([A-Za-z0-9_-]+)$")


class VonageMessagesProvider(Provider):
    WEBHOOK_AUTH_OPTIONS = ("SIGNATURE_SECRET",)
    EMULATOR = "devtools.emulator.vonage_messages.VonageMessagesEmulator"

    @classmethod
    def check(cls, options, env=None) -> list:
        from django.core.checks import Error, Warning

        app, key = bool(options.get("APPLICATION_ID")), bool(options.get("PRIVATE_KEY"))
        if app != key:
            return [
                Error(
                    "Provider 'vonage-messages' needs both VONAGE_APPLICATION_ID and "
                    "VONAGE_PRIVATE_KEY (or neither, with VONAGE_API_SECRET).",
                    id="herald.E008",
                )
            ]
        if app:
            return []
        if not options.get("API_SECRET"):
            return [
                Error(
                    "Provider 'vonage-messages' needs VONAGE_APPLICATION_ID and "
                    "VONAGE_PRIVATE_KEY, or VONAGE_API_SECRET.",
                    id="herald.E008",
                )
            ]
        # Vonage sends no status webhooks for Messages API requests authenticated with Basic
        # auth (providers.md 2.1: "Basic auth on Messages does not support webhooks").
        return [
            Warning(
                "Provider 'vonage-messages' authenticates with Basic auth (no "
                "VONAGE_APPLICATION_ID): the Messages API sends no status webhooks for such "
                "requests, so its messages get no receipts.",
                hint="Create a Vonage application, set VONAGE_APPLICATION_ID and "
                "VONAGE_PRIVATE_KEY; until then its messages stay `sent` until reconcile "
                "marks them `unknown`.",
                id="herald.W002",
            )
        ]

    STATUS_MAP = STATUS_MAP

    def __init__(self, name, options):
        super().__init__(name, options)
        self._key_lock = threading.Lock()
        self._private_key = None

    # --- send ----------------------------------------------------------------------------

    def build_send_request(self, sms: OutboundSms) -> SendRequest:
        body = {
            "message_type": "text",
            "channel": "sms",
            "to": sms.to.lstrip("+"),  # E.164 without '+'
            "from": (sms.sender or self.option("FROM")).lstrip("+"),  # number or alphanumeric
            "text": sms.body,
            "client_ref": sms.message_id,  # echoed in every status webhook
            "sms": {"encoding_type": "unicode" if sms.encoding == UCS2 else "text"},
        }
        if sms.callback_url:
            body["webhook_url"] = sms.callback_url
            body["webhook_version"] = "v1"
        headers = {"Accept": "application/json"}
        auth = None
        if self.uses_jwt:
            headers["Authorization"] = f"Bearer {self.application_jwt()}"
        else:
            auth = (self.option("API_KEY"), self.option("API_SECRET"))
        url = f"{self.option('BASE_URL', 'https://api.nexmo.com').rstrip('/')}/v1/messages"
        return SendRequest("POST", url, headers=headers, json=body, auth=auth)

    @property
    def uses_jwt(self) -> bool:
        # As the Python SDK: JWT whenever an application is configured, else Basic.
        return bool(self.option("APPLICATION_ID") and self.option("PRIVATE_KEY"))

    def application_jwt(self, now=None) -> str:
        """A fresh RS256 application JWT. One per request, as the SDKs do: a `jti` is meant to
        identify one token, and signing costs about a millisecond."""
        iat = int(now if now is not None else time.time())
        claims = {
            "application_id": self.option("APPLICATION_ID"),
            "iat": iat,
            "jti": str(uuid.uuid4()),
            "exp": iat + JWT_LIFETIME,
        }
        return jwt.encode(claims, self.private_key(), algorithm="RS256", headers={"typ": "JWT"})

    def private_key(self):
        """The application's private key, loaded once. PRIVATE_KEY is PEM text (newlines may be
        written as a literal "\\n", as one-line environment variables need) or a file path."""
        with self._key_lock:
            if self._private_key is None:
                self._private_key = _load_private_key(str(self.option("PRIVATE_KEY")))
            return self._private_key

    def parse_send_response(self, response) -> SendResult:
        data = _json_or_none(response)
        if 200 <= response.status_code < 300:
            uuid_ = data.get("message_uuid") if isinstance(data, dict) else None
            if not uuid_:
                # Vonage took it (2xx) but we cannot tell which uuid it has: resending could
                # duplicate; the status webhook still matches by client_ref.
                raise AmbiguousSendError(
                    f"HTTP {response.status_code} without a message_uuid",
                    code="no-message-uuid",
                    raw=data,
                )
            return SendResult(
                provider_message_ids=[str(uuid_)], provider_status="submitted", raw=data
            )
        problem = data if isinstance(data, dict) else {}
        code = _problem_code(problem) or str(response.status_code)
        title = problem.get("title") or response.reason or "error"
        detail = problem.get("detail") or ""
        error_class = self.http_error_class(response.status_code)
        raise error_class(
            f"Vonage Messages HTTP {response.status_code}: {title}"
            + (f" - {detail}" if detail else ""),
            code=code,
            retry_after=self.retry_after(response),
            raw=problem or {"status": response.status_code, "text": response.text[:500]},
            opted_out=error_class is PermanentSendError and code == "1240",
        )

    # --- webhooks ------------------------------------------------------------------------

    def verify_webhook(self, request: WebhookInput, kind: str) -> None:
        if not self.webhook_signing_enabled:
            return
        header = request.headers.get("authorization", "").strip()
        if not header:
            # Vonage says that on rare internal errors it sends a callback unsigned and that a
            # 5xx would make it retry signed (providers.md 2.7). We still answer 401: Herald's
            # rule is that an unauthenticated request is refused with a 4xx, and an attacker
            # must not be able to make us look unavailable. The request is stored and counted,
            # so a genuine one can be found in the admin (and reconcile covers the status).
            raise WebhookAuthError("unsigned: no Authorization header")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise WebhookAuthError("Authorization is not a Bearer JWT")
        secrets = self.secrets("SIGNATURE_SECRET")
        if not secrets:
            # Our misconfiguration, not a forgery: 503, so Vonage keeps retrying (for 24 hours)
            # and the webhooks arrive once the secret is set.
            error = WebhookAuthError("VONAGE_SIGNATURE_SECRET is not configured")
            error.status_code = 503
            raise error
        claims = _decode_webhook_jwt(token.strip(), secrets)
        # The hash binds the token to these exact bytes; Vonage calls it optional on HTTPS and
        # the Python SDK skips it, so a token could otherwise be replayed with another body.
        expected = hashlib.sha256(request.body).hexdigest()
        if not hmac.compare_digest(str(claims.get("payload_hash", "")).lower(), expected):
            raise WebhookAuthError("payload_hash does not match the body")
        try:
            age = abs(time.time() - float(claims["iat"]))
        except (KeyError, TypeError, ValueError):
            raise WebhookAuthError("JWT has no usable iat") from None
        if age > WEBHOOK_MAX_AGE:
            raise WebhookAuthError("JWT iat outside the allowed window")
        if "iss" in claims and claims["iss"] != "Vonage":
            raise WebhookAuthError("JWT issuer is not Vonage")
        # `api_key` is not compared with API_KEY: sub-accounts sign with their own secret, which
        # belongs in SIGNATURE_SECRET's list; the signature itself decides.

    def parse_status_webhook(self, request: WebhookInput) -> list:
        data = request.json_object()
        uuid_ = _text(data, "message_uuid")
        status = data.get("status")
        if not uuid_ or not isinstance(status, str) or not status.strip():
            raise WebhookParseError("status webhook needs message_uuid and a status string")
        error = data.get("error")
        if error is not None and not isinstance(error, dict):
            raise WebhookParseError("error must be an object")
        code, text = _error_code_and_text(error or {})
        usage = _object(data, "usage")
        return [
            DeliveryReport(
                status=self.status_of(status, code),
                provider_status=status.strip(),
                documented=self.documents(status) or status.strip().lower() == "rejected",
                provider_message_id=uuid_,
                client_reference=_text(data, "client_ref"),
                error_code=code,
                error_text=text,
                provider_timestamp=_timestamp(data.get("timestamp")),
                price=self.decimal(usage.get("price")),
                currency=str(usage.get("currency") or ""),
                segments=_count(_object(data, "sms"), "count_total", "total_count"),
                raw=data,
            )
        ]

    def status_of(self, status: str, error_code: str) -> Status:
        if status.strip().lower() == "rejected":
            return REJECTED_BY_CODE.get(error_code, Status.FAILED)
        return self.map_status(status)

    def parse_inbound_webhook(self, request: WebhookInput) -> list:
        data = request.json_object()
        fields = {key: _text(data, key) for key in ("message_uuid", "from", "to")}
        missing = [key for key, value in fields.items() if not value]
        text = data.get("text")
        if missing or not isinstance(text, str):
            raise WebhookParseError(
                "inbound webhook needs message_uuid, from, to and text: "
                + ", ".join(missing or ["text"])
            )
        # `num_messages` vs `total_count` semantics are UNCONFIRMED (providers.md 2.6): both are
        # read as the number of concatenated parts, num_messages first.
        parts = _count(_object(data, "sms"), "num_messages", "total_count") or 1
        return [
            InboundSms(
                provider_message_id=fields["message_uuid"],
                from_number=fields["from"],
                to_number=fields["to"],
                text=text,
                parts=parts,
                received_at=_timestamp(data.get("timestamp")),
                raw=data,
            )
        ]

    # --- reconciliation -----------------------------------------------------------------

    def fetch_reports(self, message, session):
        # providers.md documents no per-message status lookup for the Messages API (Vonage's
        # Reports API is asynchronous, account-wide and not in the contract), so messages
        # without a receipt are left to the timeout that marks them `unknown`.
        return None


# --- helpers --------------------------------------------------------------------------------


def _load_private_key(value: str):
    text = value.strip()
    try:
        if "-----BEGIN" in text:
            pem = text.replace("\\n", "\n").encode()
        else:
            pem = Path(text).expanduser().read_bytes()
        return serialization.load_pem_private_key(pem, password=None)
    except (OSError, ValueError, TypeError) as exc:
        # Nothing was sent: safe to try again once the configuration is fixed. The message
        # names the problem, never the key.
        raise RetryableSendError(
            f"VONAGE_PRIVATE_KEY is not a usable PEM private key or file ({type(exc).__name__})",
            code="private-key",
        ) from None


def _decode_webhook_jwt(token: str, secrets: list) -> dict:
    """Claims of an HS256 token signed with any of `secrets` (rotation), else WebhookAuthError."""
    for secret in secrets:
        try:
            return jwt.decode(
                token,
                secret,
                algorithms=WEBHOOK_ALGORITHMS,
                # The freshness window is ours (below); PyJWT's own iat check only refuses a
                # future iat, so give it the same allowance for clock skew.
                leeway=WEBHOOK_MAX_AGE,
                options={"require": ["iat", "payload_hash"], "verify_aud": False},
            )
        except jwt.InvalidSignatureError:
            continue  # try the next secret; compare_digest is used inside PyJWT
        except jwt.InvalidTokenError as exc:
            raise WebhookAuthError(f"invalid JWT: {type(exc).__name__}") from None
    raise WebhookAuthError("JWT signature does not match any signature secret")


def _json_or_none(response):
    try:
        return response.json()
    except ValueError:
        return None


def _problem_code(problem: dict) -> str:
    """The code in an RFC 7807 `type` URL ('...messages#1150' -> '1150')."""
    match = _CODE_IN_TYPE.search(str(problem.get("type") or ""))
    return match.group(1) if match else ""


def _error_code_and_text(error: dict) -> tuple:
    """Status-webhook errors put the numeric code in `title`, sometimes as a JSON number
    (VJAVA test: "title": 1000); the `type` URL ends in the same code."""
    title, detail = error.get("title"), str(error.get("detail") or "")
    if isinstance(title, int) and not isinstance(title, bool):
        return str(title), detail
    title = str(title or "").strip()
    if title.isdigit():
        return title, detail
    return _problem_code(error), detail or title


def _text(data: dict, key: str) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str | int):
        raise WebhookParseError(f"{key} must be a string")
    return str(value).strip()


def _object(data: dict, key: str) -> dict:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WebhookParseError(f"{key} must be an object")
    return value


def _count(data: dict, *keys) -> int | None:
    """A count Vonage sends as a string ("3"); the first usable key wins."""
    for key in keys:
        try:
            value = int(str(data[key]))
        except (KeyError, TypeError, ValueError):
            continue
        if value > 0:
            return value
    return None


def _timestamp(value):
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise WebhookParseError("timestamp must be an ISO 8601 string")
    try:
        stamp = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise WebhookParseError(f"timestamp is not ISO 8601: {value[:40]!r}") from None
    # Vonage writes UTC with a 'Z'; a stamp without a zone is read as UTC too.
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
