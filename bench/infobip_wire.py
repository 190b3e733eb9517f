"""Infobip delivery reports as Infobip posts them (providers.md 4.6): `{"results": [...]}`, many
reports per request, authenticated with the subscription's HTTP Basic credentials (4.7)."""

import base64
import json

USERNAME, PASSWORD = "bench-infobip", "bench-infobip-password"
ENV = {
    "INFOBIP_API_KEY": "bench-api-key",
    "INFOBIP_BASE_URL": "http://127.0.0.1:9",  # never called: the bench sends no SMS
    "INFOBIP_FROM": "Herald",
    "INFOBIP_WEBHOOK_USERNAME": USERNAME,
    "INFOBIP_WEBHOOK_PASSWORD": PASSWORD,
    # Required with signing on (herald.E012: per-message delivery URLs carry it); the bench's
    # requests authenticate with HTTP Basic, as a subscription's reports do.
    "INFOBIP_WEBHOOK_TOKEN": "bench-infobip-token",
}
DONE_AT = "2026-11-23T10:00:00.000+0000"


def report(message_id: str) -> dict:
    return {
        "bulkId": "bench-bulk",
        "messageId": message_id,
        "to": "447700900123",
        "sentAt": DONE_AT,
        "doneAt": DONE_AT,
        "messageCount": 1,
        "callbackData": message_id,
        "price": {"pricePerMessage": 0.01, "currency": "EUR"},
        "status": {"groupId": 3, "groupName": "DELIVERED", "id": 5,
                   "name": "DELIVERED_TO_HANDSET", "description": "Message delivered to handset"},
        "error": {"groupId": 0, "groupName": "OK", "id": 0, "name": "NO_ERROR",
                  "description": "No Error", "permanent": False},
    }  # fmt: skip


def batch(pairs) -> tuple:
    """(body, headers) of one request carrying a delivered report for each (our id, pid)."""
    body = json.dumps({"results": [report(pid) for _, pid in pairs]}).encode()
    credentials = base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
    return body, {"Content-Type": "application/json", "Authorization": f"Basic {credentials}"}
