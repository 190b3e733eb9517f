"""The emulated Vonage Messages API, SMS channel (providers.md section 2): `POST /v1/messages`.

It authenticates as Vonage does (an RS256 application JWT checked with the application's public
key, or HTTP Basic api_key:api_secret), validates the body, answers 202 {"message_uuid"} or an
RFC 7807 problem, and posts ONE aggregated status callback per message in the v1 format, with
`Authorization: Bearer <HS256 JWT>` signed with the signature secret and carrying the SHA-256
of the exact body. SMS outcomes arrive as Vonage maps them: accepted -> `submitted`, and
failed/expired/unknown/rejected all as `rejected` with the error code that tells them apart.

The JWT code here is written with the standard library, independently of PyJWT and of
messaging/providers/vonage_messages.py, so a round trip cross-checks the provider.
"""

import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from devtools.emulator.base import EmulatedProvider, EmuReply, Webhook, register
from messaging.encoding import UCS2, analyse

PROBLEM = "application/problem+json"
ERRORS_URL = "https://developer.nexmo.com/api-errors/messages-olympus"
PRICE, CURRENCY, NETWORK = "0.0333", "EUR", "23410"

# Emulator scenario step -> (Messages status, error code or None, detail). For SMS, Vonage
# folds the DLR's expired/failed/unknown/rejected into `rejected` (providers.md 2.5).
RECEIPT_STATUS = {
    "accepted": ("submitted", None, ""),
    "delivered": ("delivered", None, ""),
    "failed": ("rejected", 1230, "Network error"),
    "expired": ("rejected", 1360, "TTL was activated, no delivery receipt was received"),
    "rejected": ("rejected", 1050, "Number barred"),
    "unknown": ("rejected", 1330, "Unknown"),
}

MSISDN = re.compile(r"^\d{7,15}$")
SENDER = re.compile(r"^(\d{3,15}|[A-Za-z0-9 ]{1,11})$")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def signed_webhook_jwt(body: bytes, secret: str, api_key: str, application_id: str = "") -> str:
    """The HS256 token Vonage puts in a webhook's Authorization header (providers.md 2.7)."""
    claims = {
        "iat": int(time.time()),
        "jti": str(uuid.uuid4()),
        "iss": "Vonage",
        "payload_hash": hashlib.sha256(body).hexdigest(),
        "api_key": api_key,
    }
    if application_id:
        claims["application_id"] = application_id
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    mac = hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64url(mac)}"


def problem(status: int, code: str, title: str, detail: str, **extra) -> EmuReply:
    body = {"type": code, "title": title, "detail": detail, "instance": uuid.uuid4().hex}
    return EmuReply(status, {**body, **extra}, content_type=PROBLEM)


def unauthorized(detail="Check that you are using the correct credentials.") -> EmuReply:
    return problem(
        401,
        "https://developer.nexmo.com/api-errors/#unathorized",
        "You did not provide correct credentials.",
        detail,
    )


def invalid(name: str, reason: str) -> EmuReply:
    return problem(
        422,
        "https://developer.vonage.com/api-errors/messages#1150",
        "Invalid params",
        "The value of one or more parameters is invalid.",
        invalid_parameters=[{"name": name, "reason": reason}],
    )


def _stamp(seconds: float) -> str:
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@register
class VonageMessagesEmulator(EmulatedProvider):
    name = "vonage-messages"

    def routes(self):
        return [("POST", r"^/v1/messages$", self.send)]

    def new_id(self) -> str:
        return str(uuid.uuid4())  # Vonage's message_uuid is a dashed UUID

    # --- send ---

    def send(self, req, match) -> EmuReply:
        refusal = self._authenticate(req.headers.get("authorization", ""))
        if refusal:
            return refusal
        try:
            data = req.json()
        except (UnicodeDecodeError, ValueError):
            return invalid("body", "must be a JSON object")
        if not isinstance(data, dict):
            return invalid("body", "must be a JSON object")
        refusal = self._validate(data)
        if refusal:
            return refusal
        sms = data.get("sms") or {}
        kind = sms.get("encoding_type", "auto")
        encoding, segments = analyse(data["text"])
        if kind == "unicode" and encoding != UCS2:  # GSM text forced to UCS-2 takes more parts
            segments = 1 if len(data["text"]) <= 70 else -(-len(data["text"]) // 67)
        message_uuid = self.new_id()
        self.accept(
            to="+" + data["to"],
            provider_ids=[message_uuid],
            callback_url=data.get("webhook_url", ""),
            client_ref=data.get("client_ref", ""),
            body=data["text"],
            segments=segments,
            sender=data["from"],
            # Vonage sends no webhooks for a request authenticated with Basic auth (no
            # application): the message is accepted and its status is never posted.
            webhooks=not req.headers.get("authorization", "").startswith("Basic "),
        )
        return EmuReply(202, {"message_uuid": message_uuid})

    def _authenticate(self, header: str) -> EmuReply | None:
        scheme, _, credentials = header.partition(" ")
        if scheme == "Bearer":
            return self._check_application_jwt(credentials.strip())
        if scheme == "Basic":
            try:
                key, _, secret = base64.b64decode(credentials).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return unauthorized()
            secrets = [s.strip() for s in str(self.options.get("API_SECRET") or "").split(",")]
            if key != self.options.get("API_KEY") or not secret or secret not in secrets:
                return unauthorized()
            return None
        return unauthorized("Missing Authorization: use a JWT or Basic credentials.")

    def _check_application_jwt(self, token: str) -> EmuReply | None:
        """RS256, verified with the public half of the configured application key, as Vonage
        holds it; then the claims Vonage requires of an application JWT."""
        public_key = self._public_key()
        if public_key is None:
            return unauthorized("No application key is configured at the emulated Vonage.")
        try:
            head64, claims64, sig64 = token.split(".")
            header = json.loads(_unb64url(head64))
            claims = json.loads(_unb64url(claims64))
            public_key.verify(
                _unb64url(sig64),
                f"{head64}.{claims64}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except (ValueError, InvalidSignature):
            return unauthorized("Invalid Token")
        now = time.time()
        if (
            header.get("alg") != "RS256"
            or claims.get("application_id") != self.options.get("APPLICATION_ID")
            or not claims.get("jti")
            or not isinstance(claims.get("iat"), int)
            or claims["iat"] > now + 60
            or not isinstance(claims.get("exp"), int)
            or claims["exp"] <= now
        ):
            return unauthorized("Invalid Token")
        return None

    def _public_key(self):
        value = str(self.options.get("PRIVATE_KEY") or "").strip()
        if not value:
            return None
        try:
            pem = (
                value.replace("\\n", "\n").encode()
                if "-----BEGIN" in value
                else Path(value).expanduser().read_bytes()
            )
            return serialization.load_pem_private_key(pem, password=None).public_key()
        except (OSError, ValueError, TypeError):
            return None

    def _validate(self, data: dict) -> EmuReply | None:
        if data.get("message_type") != "text":
            return invalid("message_type", "must be text")
        if data.get("channel") != "sms":
            return invalid("channel", "must be sms")
        for name in ("to", "from", "text"):
            if not isinstance(data.get(name), str) or not data[name]:
                return invalid(name, "is required")
        if not MSISDN.match(data["to"]):
            return invalid("to", "must be an E.164 number without '+'")
        if not SENDER.match(data["from"]):
            return invalid("from", "must be a number or up to 11 alphanumeric characters")
        if len(data["text"]) > 1000:
            return invalid("text", "must be at most 1000 characters")
        if len(str(data.get("client_ref", ""))) > 100:
            return invalid("client_ref", "must be at most 100 characters")
        url = data.get("webhook_url")
        if url is not None and urlsplit(str(url)).scheme not in ("http", "https"):
            return invalid("webhook_url", "must be an http(s) URL")
        if data.get("webhook_version", "v1") not in ("v0.1", "v1"):
            return invalid("webhook_version", "must be v0.1 or v1")
        sms = data.get("sms", {})
        if not isinstance(sms, dict) or sms.get("encoding_type", "auto") not in (
            "text",
            "unicode",
            "auto",
        ):
            return invalid("sms.encoding_type", "must be text, unicode or auto")
        return None

    # --- receipts ---

    def receipt(self, sent, step, part_index) -> Webhook:
        status, code, detail = RECEIPT_STATUS.get(step.status, RECEIPT_STATUS["unknown"])
        stamp = sent.accepted_at + self.emulator.receipt_delay + step.offset_ms / 1000
        data = {
            "message_uuid": sent.provider_ids[0],
            "to": sent.to.lstrip("+"),
            "from": sent.sender,
            "timestamp": _stamp(stamp),
            "status": status,
            "channel": "sms",
        }
        if sent.client_ref:
            data["client_ref"] = sent.client_ref
        if code is not None:
            data["error"] = {
                "type": f"{ERRORS_URL}#{code}",
                "title": code,  # a JSON number, as Vonage sends it
                "detail": detail,
                # fixed per message and code, so a retried callback is byte-identical
                "instance": hashlib.md5(f"{sent.provider_ids[0]}{code}".encode()).hexdigest(),  # noqa: S324
            }
        if status in ("submitted", "delivered"):
            data["usage"] = {"currency": CURRENCY, "price": PRICE}
        data["destination"] = {"network_code": NETWORK}
        if status == "delivered" and sent.segments > 1:
            # The aggregated multi-segment shape (docs "Multi-segment SMS Status Handling").
            data["sms"] = {
                "total_count": str(sent.segments),
                "segments": [
                    {"timestamp": _stamp(stamp), "status": "delivered"}
                    for _ in range(sent.segments)
                ],
            }
        else:
            data["sms"] = {"count_total": str(sent.segments)}  # the VJAVA shape
        body = json.dumps(data, separators=(",", ":")).encode()
        return Webhook(
            url=sent.callback_url or self.default_webhook_url("status"),
            body=body,
            headers=self._headers(body),
        )

    def inbound(self, *, sender: str, to: str, text: str, parts: int = 1) -> Webhook:
        """An inbound SMS to the application's Inbound URL, for development and tests."""
        data = {
            "channel": "sms",
            "message_uuid": self.new_id(),
            "to": to.lstrip("+"),
            "from": sender.lstrip("+"),
            "timestamp": _stamp(time.time()),
            "message_type": "text",
            "text": text,
            "sms": {"num_messages": str(parts)},
        }
        body = json.dumps(data, separators=(",", ":")).encode()
        return Webhook(self.default_webhook_url("inbound"), body, self._headers(body))

    def _headers(self, body: bytes) -> dict:
        headers = {"Content-Type": "application/json"}
        secret = self.first_secret("SIGNATURE_SECRET")
        if secret:  # without one, Vonage's rare unsigned callback
            token = signed_webhook_jwt(
                body,
                secret,
                str(self.options.get("API_KEY") or ""),
                str(self.options.get("APPLICATION_ID") or ""),
            )
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def error_reply(self, status: int) -> EmuReply:
        if status == 429:
            return problem(
                429, f"{ERRORS_URL}#1010", "Rate Limit Hit", "Please wait, then retry your request"
            )
        return problem(
            status,
            "https://developer.nexmo.com/api-errors/#internal-error",
            "Internal Error",
            "An internal error occurred, please try again later.",
        )
