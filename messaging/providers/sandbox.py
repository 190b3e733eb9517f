"""The sandbox provider: accepts sends like a real provider and posts signed receipts back
through the real webhook path (POST /webhooks/sandbox/status/) after SANDBOX_RECEIPT_DELAY
seconds. The destination's last digit chooses what happens:

  0  sent, then failed (absent subscriber)      5  throttled on the first attempt, then delivered
  1  sent, then expired                         6  send times out (ambiguous -> unknown), then
  2  delivered, a late `accepted`, then the        a receipt says delivered
     same `delivered` again (duplicate and     7-9 sent, then delivered
     out of order)
  3  accepted, never a receipt
  4  refused at send (permanent error)

Multipart messages get one id and one receipt per part, like the Vonage SMS API.
Signature: X-Sandbox-Signature = hex HMAC-SHA256(secret, X-Sandbox-Timestamp + "." + raw body).
"""

import hashlib
import hmac
import json
import time
import uuid
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from messaging.models import SandboxReceipt
from messaging.providers.base import (
    AmbiguousSendError,
    DeliveryReport,
    InboundSms,
    OutboundSms,
    PermanentSendError,
    Provider,
    RetryableSendError,
    SendResult,
    WebhookAuthError,
    WebhookInput,
    WebhookParseError,
)
from messaging.status import Status

# (status, error code, provider timestamp offset in ms) per scenario, in posting order. In "2"
# the `accepted` is older than the `delivered` posted before it, and the last receipt repeats
# the first exactly, as a provider's retry would.
SCENARIOS = {
    "0": [("accepted", "", 0), ("failed", "absent-subscriber", 500)],
    "1": [("accepted", "", 0), ("expired", "ttl-expired", 500)],
    "2": [("delivered", "", 500), ("accepted", "", 0), ("delivered", "", 500)],
    "3": [],
    "6": [("delivered", "", 500)],
}
DEFAULT_SCENARIO = [("accepted", "", 0), ("delivered", "", 500)]


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class SandboxProvider(Provider):
    WEBHOOK_AUTH_OPTIONS = ("WEBHOOK_SECRET",)
    EVIDENCE_HEADERS = ("x-sandbox-signature", "x-sandbox-timestamp")
    STATUS_MAP = {
        "accepted": Status.SENT,
        "delivered": Status.DELIVERED,
        "failed": Status.FAILED,
        "expired": Status.EXPIRED,
        "rejected": Status.REJECTED,
        "unknown": Status.UNKNOWN,
    }

    def send(self, sms: OutboundSms, session) -> SendResult:
        digit = sms.to[-1]
        if digit == "4":
            raise PermanentSendError("sandbox: destination refused", code="invalid-destination")
        if digit == "5" and sms.attempt == 1:
            raise RetryableSendError("sandbox: throttled, try again", code="throttled")
        base = uuid.uuid4().hex
        ids = [base] if sms.segments == 1 else [f"{base}-{i + 1}" for i in range(sms.segments)]
        self._schedule(sms, ids, SCENARIOS.get(digit, DEFAULT_SCENARIO))
        if digit == "6":
            raise AmbiguousSendError("sandbox: read timed out after sending", code="timeout")
        return SendResult(
            provider_message_ids=ids,
            provider_status="accepted",
            segments=sms.segments,
            raw={"ids": ids, "status": "accepted"},
        )

    def _schedule(self, sms, ids, steps):
        delay = float(self.option("RECEIPT_DELAY", "2"))
        start = timezone.now() + timedelta(seconds=delay)
        rows = []
        for n, (status, error, offset) in enumerate(steps):
            for part_id in ids:
                payload = {
                    "message_id": part_id,
                    "client_ref": sms.message_id,
                    "status": status,
                    "error_code": error,
                    "timestamp": (start + timedelta(milliseconds=offset)).isoformat(),
                }
                due = start + timedelta(milliseconds=200 * n)
                rows.append(SandboxReceipt(message_id=sms.message_id, due_at=due, payload=payload))
        SandboxReceipt.objects.bulk_create(rows)

    def verify_webhook(self, request: WebhookInput, kind: str) -> None:
        secrets = self.secrets("WEBHOOK_SECRET")
        signature = request.headers.get("x-sandbox-signature", "")
        stamp = request.headers.get("x-sandbox-timestamp", "")
        if not signature or not stamp:
            raise WebhookAuthError("missing X-Sandbox-Signature or X-Sandbox-Timestamp")
        self.check_fresh(stamp, "X-Sandbox-Timestamp")
        expected = [sign(secret, stamp, request.body) for secret in secrets]
        if not self.constant_time_in(signature.lower(), expected):
            raise WebhookAuthError("signature mismatch")

    def parse_status_webhook(self, request: WebhookInput) -> list:
        data = request.json_object()
        try:
            return [
                DeliveryReport(
                    status=self.map_status(data["status"]),
                    provider_status=str(data["status"]),
                    documented=self.documents(data["status"]),
                    provider_message_id=str(data["message_id"]),
                    client_reference=str(data.get("client_ref", "")),
                    error_code=str(data.get("error_code") or ""),
                    provider_timestamp=datetime.fromisoformat(data["timestamp"])
                    if data.get("timestamp")
                    else None,
                    raw=data,
                )
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise WebhookParseError(f"sandbox receipt missing or bad field: {exc}") from exc

    def parse_inbound_webhook(self, request: WebhookInput) -> list:
        data = request.json_object()
        try:
            return [
                InboundSms(
                    provider_message_id=str(data["message_id"]),
                    from_number=str(data["from"]),
                    to_number=str(data["to"]),
                    text=str(data["text"]),
                    raw=data,
                )
            ]
        except KeyError as exc:
            raise WebhookParseError(f"sandbox inbound missing field {exc}") from exc


def signed_post(session, url: str, payload: dict, secret: str):
    body = json.dumps(payload, separators=(",", ":")).encode()
    stamp = str(int(time.time()))
    return session.post(
        url,
        data=body,
        headers={
            "Content-Type": "application/json",
            "X-Sandbox-Timestamp": stamp,
            "X-Sandbox-Signature": sign(secret, stamp, body),
        },
        timeout=10,
    )


def deliver_due_receipts(session, limit: int = 100) -> int:
    """Post due sandbox receipts to the webhook; a failed post is tried again later."""
    from messaging.providers import get_provider, is_enabled

    if not is_enabled("sandbox"):
        return 0
    provider = get_provider("sandbox")
    secret = provider.secrets("WEBHOOK_SECRET")[0]
    url = provider.webhook_url("status")
    now = timezone.now()
    due = list(
        SandboxReceipt.objects.filter(delivered_at__isnull=True, due_at__lte=now).order_by(
            "due_at", "id"
        )[:limit]
    )
    delivered = 0
    for receipt in due:
        try:
            ok = signed_post(session, url, receipt.payload, secret).status_code < 300
        except Exception:
            ok = False
        with transaction.atomic():
            if ok:
                SandboxReceipt.objects.filter(pk=receipt.pk).update(delivered_at=timezone.now())
                delivered += 1
            else:
                wait = min(300, 2 ** min(receipt.attempts, 8))
                SandboxReceipt.objects.filter(pk=receipt.pk).update(
                    attempts=receipt.attempts + 1, due_at=now + timedelta(seconds=wait)
                )
    return delivered
