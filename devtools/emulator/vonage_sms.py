"""The emulated Vonage SMS API (providers.md section 1): `POST /sms/json`, form-encoded.

It checks credentials and fields as the real API does and answers in its format (HTTP 200 with
a per-part `messages[].status`, even for errors), splits long texts into parts with one
`message-id` each, and posts one delivery receipt per part, signed with `sig` when
SIGNATURE_SECRET is set. Receipts go as POST JSON by default; set `webhook_format` on the
instance to "GET" or "POST" (form) to exercise the other two dashboard settings.

The signing code here is written independently of messaging/providers/vonage_sms.py, after
providers.md appendix A, so the round trip cross-checks the provider rather than mirroring it.
"""

import hashlib
import hmac
import json
import re
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from urllib.parse import urlencode, urlsplit

from devtools.emulator.base import EmulatedProvider, EmuReply, Webhook, register
from messaging.encoding import GSM7, analyse

PART_PRICE = Decimal("0.04120000")
NETWORK = "23410"

# Emulator scenario step -> the receipt's (status, err-code when the step carries an error).
RECEIPT_STATUS = {
    "accepted": ("accepted", "0"),
    "delivered": ("delivered", "0"),
    "failed": ("failed", "8"),  # network error
    "expired": ("expired", "2"),  # absent subscriber, held in the retry scheme until expiry
    "rejected": ("rejected", "6"),  # anti-spam rejection
    "unknown": ("unknown", "1"),
}

NUMBER = re.compile(r"^\d{7,15}$")


def _sig(params: dict, secret: str, method: str) -> str:
    s = "".join(
        "&%s=%s" % (k, str(params[k]).replace("&", "_").replace("=", "_"))  # noqa: UP031
        for k in sorted(params)
        if k != "sig"
    )
    if method == "md5hash":
        return hashlib.md5((s + secret).encode("utf-8")).hexdigest()  # noqa: S324 (Vonage's)
    return hmac.new(secret.encode("utf-8"), s.encode("utf-8"), getattr(hashlib, method)).hexdigest()


def _parts(text: str, kind: str) -> int:
    encoding, segments = analyse(text)
    if kind == "unicode" and encoding == GSM7:  # GSM text sent as unicode takes UCS-2 space
        units = len(text)
        return 1 if units <= 70 else -(-units // 67)
    return segments


def _refused(code: str, text: str) -> EmuReply:
    return EmuReply(200, {"message-count": "1", "messages": [{"status": code, "error-text": text}]})


@register
class VonageSmsEmulator(EmulatedProvider):
    name = "vonage-sms"
    per_part_receipts = True
    webhook_format = "POST-JSON"  # or "GET" / "POST", as the dashboard's "Webhook format"

    def __init__(self, emulator):
        super().__init__(emulator)
        self.balance = Decimal("100.00000000")

    def routes(self):
        return [("POST", r"^/sms/json$", self.send)]

    # --- send ---

    def send(self, req, match) -> EmuReply:
        try:
            form = {k: v[-1] for k, v in req.form().items()}
        except UnicodeDecodeError:
            return _refused("3", "Invalid request: body is not UTF-8")
        refusal = self._authenticate(form) or self._validate(form)
        if refusal:
            return refusal
        kind = form.get("type", "text")
        count = _parts(form["text"], kind)
        ids = [str(uuid.uuid4()) for _ in range(count)]
        self.accept(
            to="+" + form["to"],
            provider_ids=ids,
            callback_url=form.get("callback", ""),
            client_ref=form.get("client-ref", ""),
            body=form["text"],
            segments=count,
            sender=form["from"],
        )
        messages = []
        with self.lock:
            for pid in ids:
                self.balance -= PART_PRICE
                entry = {
                    "to": form["to"],
                    "message-id": pid,
                    "status": "0",
                    "remaining-balance": f"{self.balance:.8f}",
                    "message-price": f"{PART_PRICE:.8f}",
                    "network": NETWORK,
                }
                if form.get("client-ref"):
                    entry["client-ref"] = form["client-ref"]
                messages.append(entry)
        return EmuReply(200, {"message-count": str(count), "messages": messages})

    def _secrets(self, key) -> list:
        return [s.strip() for s in str(self.options.get(key) or "").split(",") if s.strip()]

    def _authenticate(self, form) -> EmuReply | None:
        key = str(self.options.get("API_KEY") or "")
        if not form.get("api_key"):
            return _refused("2", "Missing api_key")
        if "sig" in form and "api_secret" in form:
            return _refused("32", "Signature and API secret disallowed")
        if "sig" in form:
            method = str(self.options.get("SIGNATURE_METHOD") or "sha256").lower()
            good = [_sig(form, s, method) for s in self._secrets("SIGNATURE_SECRET")]
            matched = any(hmac.compare_digest(form["sig"].lower(), g) for g in good)
            if form["api_key"] != key or not matched:
                return _refused("14", "Invalid Signature")
            return None
        secret = form.get("api_secret", "")
        if form["api_key"] != key or secret not in self._secrets("API_SECRET"):
            return _refused("4", "Bad Credentials")
        return None

    def _validate(self, form) -> EmuReply | None:
        for name in ("from", "to", "text"):
            if not form.get(name):
                return _refused("2", f"Missing {name} param")
        if not NUMBER.match(form["to"]):
            return _refused("3", "Invalid to address")
        if form.get("type", "text") not in ("text", "unicode", "binary"):
            return _refused("3", "Invalid message type")
        if len(form.get("client-ref", "")) > 40:
            return _refused("3", "Invalid client-ref")
        callback = form.get("callback", "")
        if callback and (urlsplit(callback).scheme not in ("http", "https") or len(callback) > 100):
            return _refused("23", "Invalid callback url")
        return None

    def error_reply(self, status) -> EmuReply:
        if status == 429:
            # The SMS API's documented throttle: HTTP 200, part status 1, the wait in ms.
            return _refused("1", "Throughput Rate Exceeded - please wait [ 250 ] and retry")
        return EmuReply(status, b"Service Unavailable", content_type="text/plain")

    # --- receipts ---

    def receipt(self, sent, step, part_index) -> Webhook:
        status, code = RECEIPT_STATUS.get(step.status, ("unknown", "1"))
        if not step.error and status not in ("delivered", "accepted"):
            code = "1"  # no particular reason given: "unknown"
        stamp = datetime.fromtimestamp(sent.accepted_at + step.offset_ms / 1000, UTC)
        params = {
            "msisdn": sent.to.removeprefix("+"),  # the recipient, as Vonage names it
            "to": sent.sender,  # our sender id
            "network-code": NETWORK,
            "messageId": sent.provider_ids[part_index],
            "price": f"{PART_PRICE:.8f}",
            "status": status,
            "scts": stamp.strftime("%y%m%d%H%M"),
            "err-code": code,
            "api-key": str(self.options.get("API_KEY") or ""),
            "message-timestamp": stamp.strftime("%Y-%m-%d %H:%M:%S"),
        }
        if sent.client_ref:
            params["client-ref"] = sent.client_ref
        secret = self.first_secret("SIGNATURE_SECRET")
        if secret:
            method = str(self.options.get("SIGNATURE_METHOD") or "sha256").lower()
            params["timestamp"] = str(int(time.time()))
            params["nonce"] = str(uuid.uuid4())
            params["sig"] = _sig(params, secret, method)
        url = sent.callback_url or self.default_webhook_url("status")
        if self.webhook_format == "GET":
            joiner = "&" if "?" in url else "?"
            return Webhook(url=url + joiner + urlencode(params), body=b"", method="GET",
                           headers={"User-Agent": "Vonage/MessagingHUB/v1.0"})  # fmt: skip
        if self.webhook_format == "POST":
            return Webhook(
                url=url,
                body=urlencode(params).encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"},
            )
        return Webhook(
            url=url,
            body=json.dumps(params, separators=(",", ":")).encode(),
            headers={"Content-Type": "application/json"},
        )
