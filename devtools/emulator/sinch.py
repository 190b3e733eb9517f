"""Emulated Sinch SMS REST API (xms/v1, service-plan variant). Wire contract: providers.md 3.

Endpoints (real paths):
  POST /xms/v1/{plan}/batches                                         send a batch (201)
  GET  /xms/v1/{plan}/batches/{batch_id}/delivery_report/{recipient}  recipient report
  GET  /xms/v1/{plan}/delivery_reports?client_reference=...           list recipient reports
Receipts are recipient_delivery_report_sms callbacks signed with HMAC-SHA256 over
raw_body "." nonce "." timestamp using SINCH_WEBHOOK_SECRET (the first one, when rotated).
"""

import base64
import hashlib
import hmac
import json
import os
import re
import time
from datetime import UTC, datetime

from devtools.emulator.base import EmulatedProvider, EmuReply, Sent, Step, Webhook, register

PLAN = r"(?P<plan>[^/]+)"
DELIVERY_REPORTS = ("none", "summary", "full", "per_recipient", "per_recipient_final")
MSISDN = re.compile(r"^\+?\d{7,15}$")
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

# Emulator outcome -> (Sinch status, code). Failed carries code 0 on purpose: Sinch stopped
# rewriting non-delivered codes from 0 to 34, so Herald must decide on `status` (providers.md 3.6).
OUTCOMES = {
    "accepted": ("Dispatched", 401),
    "delivered": ("Delivered", 0),
    "failed": ("Failed", 0),
    "expired": ("Expired", 406),
    "rejected": ("Rejected", 402),
    "unknown": ("Unknown", 0),
}


def ulid() -> str:
    """A ULID-like id (26 Crockford base32 characters), the shape of Sinch batch ids."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    return "".join(CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(26)))


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def digits(number: str) -> str:
    return str(number).lstrip("+")


def sign(secret: str, body: bytes, nonce: str, timestamp: str) -> str:
    data = body + b"." + nonce.encode() + b"." + timestamp.encode()
    return base64.b64encode(hmac.new(secret.encode(), data, hashlib.sha256).digest()).decode()


def error(status: int, code: str, text: str) -> EmuReply:
    """Sinch's 400/403 body: {"code": ..., "text": ...}."""
    return EmuReply(status, {"code": code, "text": text})


@register
class SinchEmulator(EmulatedProvider):
    name = "sinch"

    def __init__(self, emulator):
        super().__init__(emulator)
        self.recipients: dict = {}  # (batch id, recipient digits) -> Sent

    def routes(self):
        return [
            ("POST", rf"^/xms/v1/{PLAN}/batches$", self.send),
            (
                "GET",
                rf"^/xms/v1/{PLAN}/batches/(?P<batch>[^/]+)/delivery_report/(?P<recipient>[^/]+)$",
                self.recipient_report,
            ),
            ("GET", rf"^/xms/v1/{PLAN}/delivery_reports$", self.list_reports),
        ]

    # --- auth and errors ---

    def _unauthorised(self, req, match) -> EmuReply | None:
        """401 unless the plan and Bearer token are the configured ones (Sinch: a token is valid
        for one service plan only)."""
        tokens = [t.strip() for t in str(self.options.get("API_TOKEN") or "").split(",")]
        auth = req.headers.get("authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else ""
        plan_ok = match["plan"] == str(self.options.get("SERVICE_PLAN_ID") or "")
        if not (plan_ok and token and token in tokens):
            return EmuReply(401, b"", content_type="text/plain")
        return None

    def error_reply(self, status: int) -> EmuReply:
        # 429/5xx get "the standard response from the server", not a code/text body.
        reason = {429: "Too Many Requests", 500: "Internal Server Error"}.get(
            status, "Service Unavailable"
        )
        return EmuReply(status, reason.encode(), content_type="text/plain")

    # --- send ---

    def send(self, req, match) -> EmuReply:
        denied = self._unauthorised(req, match)
        if denied:
            return denied
        if req.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return EmuReply(415, b"", content_type="text/plain")
        try:
            data = req.json()
        except (UnicodeDecodeError, ValueError):
            return error(400, "syntax_invalid_json", "The JSON in the request is invalid")
        problem = self._invalid(data)
        if problem:
            return problem
        batch_id = ulid()
        created = iso(time.time())
        mode = data.get("delivery_report") or "none"
        for recipient in data["to"]:
            fields = dict(
                to=recipient,
                provider_ids=[batch_id],
                callback_url=data.get("callback_url") or "",
                client_ref=data.get("client_reference") or "",
                body=data["body"],
                sender=data.get("from") or "",
            )
            if mode == "none":  # Sinch sends no callbacks; reports can still be fetched
                sent = Sent(self.name, **fields)
                self.emulator.stats.record_send(self.name, recipient)
            else:
                # Every other mode is answered with per-recipient callbacks (what Herald asks
                # for); the batch summary modes are not emulated.
                sent = self.accept(**fields)
            with self.lock:
                self.recipients[(batch_id, digits(recipient))] = sent
        reply = {
            "id": batch_id,
            "to": data["to"],
            "canceled": False,
            "body": data["body"],
            "type": "mt_text",
            "created_at": created,
            "modified_at": created,
            "delivery_report": mode,
            "expire_at": iso(time.time() + 3 * 86400),
            "feedback_enabled": bool(data.get("feedback_enabled", False)),
            "flash_message": False,
            "truncate_concat": False,
        }
        for key in ("from", "callback_url", "client_reference"):
            if data.get(key):
                reply[key] = data[key]
        return EmuReply(201, reply)

    def _invalid(self, data) -> EmuReply | None:
        if not isinstance(data, dict):
            return error(400, "syntax_invalid_json", "The request body must be a JSON object")
        to, body = data.get("to"), data.get("body")
        if not isinstance(to, list) or not to or not isinstance(body, str) or not body:
            return error(400, "syntax_constraint_violation", "'to' and 'body' are required")
        bad = [n for n in to if not isinstance(n, str) or not MSISDN.match(n)]
        if bad:
            return error(400, "syntax_invalid_parameter_format", f"Invalid MSISDN: {bad[0]}")
        if data.get("delivery_report", "none") not in DELIVERY_REPORTS:
            return error(400, "syntax_invalid_parameter_format", "Invalid delivery_report")
        for key in ("from", "callback_url", "client_reference"):
            if key in data and not isinstance(data[key], str):
                return error(400, "syntax_invalid_parameter_format", f"Invalid {key}")
        return None

    # --- receipts ---

    def report(self, sent: Sent, step: Step) -> dict:
        """A recipient delivery report, keys in the order of Sinch's signed sample."""
        status, code = OUTCOMES.get(step.status, OUTCOMES["unknown"])
        stamp = sent.accepted_at + step.offset_ms / 1000
        report = {
            # `at` is derived from the step, so the duplicate in scenario 2 is byte-identical,
            # as a Sinch retry of the same callback is.
            "at": iso(stamp + 0.25),
            "batch_id": sent.provider_ids[0],
        }
        if sent.client_ref:
            report["client_reference"] = sent.client_ref
        report.update(
            {
                "code": code,
                "operator_status_at": iso(stamp),
                "recipient": digits(sent.to),  # Sinch often drops the '+'
                "status": status,
                "type": "recipient_delivery_report_sms",
            }
        )
        return report

    def receipt(self, sent: Sent, step: Step, part_index: int) -> Webhook:
        sent.extra["last_step"] = step
        body = json.dumps(self.report(sent, step), separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"}
        secret = self.first_secret("WEBHOOK_SECRET")
        if secret:
            nonce, stamp = ulid(), str(int(time.time()))
            headers.update(
                {
                    "x-sinch-webhook-signature": sign(secret, body, nonce, stamp),
                    "x-sinch-webhook-signature-nonce": nonce,
                    "x-sinch-webhook-signature-timestamp": stamp,
                    "x-sinch-webhook-signature-algorithm": "HmacSHA256",
                }
            )
        return Webhook(url=sent.callback_url or self.default_webhook_url("status"), body=body,
                       headers=headers)  # fmt: skip

    # --- reconciliation endpoints ---

    def _current(self, sent: Sent) -> dict:
        step = sent.extra.get("last_step") or Step("accepted")
        return self.report(sent, step)

    def recipient_report(self, req, match) -> EmuReply:
        denied = self._unauthorised(req, match)
        if denied:
            return denied
        with self.lock:
            sent = self.recipients.get((match["batch"], digits(match["recipient"])))
        if sent is None:
            return EmuReply(404, b"", content_type="text/plain")
        return EmuReply(200, self._current(sent))

    def list_reports(self, req, match) -> EmuReply:
        denied = self._unauthorised(req, match)
        if denied:
            return denied
        reference = (req.query.get("client_reference") or [""])[0]
        with self.lock:
            found = [
                s for s in self.recipients.values() if not reference or s.client_ref == reference
            ]
        reports = [self._current(s) for s in found][:100]
        return EmuReply(
            200, {"count": len(reports), "page": 0, "page_size": 100, "delivery_reports": reports}
        )
