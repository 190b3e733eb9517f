"""The emulated Infobip SMS API: POST /sms/3/messages, GET /sms/3/logs, and delivery reports
posted as {"results": [...]} to each message's webhooks.delivery.url (providers.md section 4).

Shapes follow the official clients (IJAVA/IPY): the v3 send response with `details.messageCount`,
REJECTED statuses inside a 200 for per-message refusals (invalid destination, duplicate
messageId), the legacy `requestError.serviceException` body for 401 and 429 and the current
`errorCode`/`violations` body for 400 and 5xx (both shapes occur). Infobip adds no credentials to
a per-message delivery URL; the emulator sends the HTTP Basic credentials Herald is configured
with (as a BASIC subscription profile would) and keeps the `token` Herald put in the URL.
"""

import base64
import hmac
import json
import re
import time
from datetime import UTC, datetime
from urllib.parse import urlencode

from devtools.emulator.base import (
    DEFAULT_SCENARIO,
    SCENARIOS,
    EmulatedProvider,
    EmuReply,
    Webhook,
    register,
)

# Emulator step -> (status, error) in Infobip's terms. "accepted" is the intermediate report a
# message gets with intermediateReport=true: DELIVERED_TO_OPERATOR, in the DELIVERED group but
# not final, which is exactly the quirk Herald must handle.
STATUS = {
    "accepted": (3, "DELIVERED", 2, "DELIVERED_TO_OPERATOR", "Message delivered to operator"),
    "delivered": (3, "DELIVERED", 5, "DELIVERED_TO_HANDSET", "Message delivered to handset"),
    "failed": (2, "UNDELIVERABLE", 9, "UNDELIVERABLE_NOT_DELIVERED", "Message sent not delivered"),
    "expired": (4, "EXPIRED", 15, "EXPIRED_EXPIRED", "Message expired"),
    "rejected": (5, "REJECTED", 6, "REJECTED_NETWORK", "Network is forbidden"),
    "unknown": (4, "EXPIRED", 29, "EXPIRED_DLR_UNKNOWN", "Message expired, outcome unknown"),
}
PENDING = (1, "PENDING", 26, "PENDING_ACCEPTED", "Message sent to next instance")
NO_ERROR = (0, "OK", 0, "NO_ERROR", "No Error", False)
ERRORS = {  # step.error == "error": the error Infobip would give with that outcome
    "failed": (1, "HANDSET_ERRORS", 27, "EC_ABSENT_SUBSCRIBER", "Absent subscriber", False),
    "expired": (1, "HANDSET_ERRORS", 27, "EC_ABSENT_SUBSCRIBER", "Absent subscriber", False),
    "rejected": (3, "OPERATOR_ERRORS", 34, "EC_SYSTEM_FAILURE", "System failure", False),
}
REJECTED_DUPLICATE = (5, "REJECTED", 23, "REJECTED_DUPLICATE_MESSAGE_ID", "Duplicate message id")
REJECTED_DESTINATION = (5, "REJECTED", 52, "REJECTED_DESTINATION", "Invalid destination address")
PRICE = {"pricePerMessage": 0.0065, "currency": "EUR"}
GSM_SINGLE, GSM_PART = 160, 153  # segment arithmetic for messageCount (GSM-7 only: enough here)


def status_json(entry) -> dict:
    group, group_name, sid, name, description = entry
    return {"groupId": group, "groupName": group_name, "id": sid, "name": name,
            "description": description}  # fmt: skip


def error_json(entry) -> dict:
    group, group_name, eid, name, description, permanent = entry
    return {"groupId": group, "groupName": group_name, "id": eid, "name": name,
            "description": description, "permanent": permanent}  # fmt: skip


def infobip_time(epoch: float) -> str:
    """`2019-11-09T16:00:00.000+0000`, as Infobip writes it."""
    stamp = datetime.fromtimestamp(epoch, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}+0000"


def legacy_error(message_id: str, text: str) -> dict:
    return {"requestError": {"serviceException": {"messageId": message_id, "text": text}}}


def api_error(code: str, description: str, violations=()) -> dict:
    return {
        "errorCode": code,
        "description": description,
        "action": "Check the syntax, violations and adjust the request.",
        "violations": [{"property": p, "violation": v} for p, v in violations],
        "resources": [],
    }


@register
class InfobipEmulator(EmulatedProvider):
    name = "infobip"
    #: GET /sms/3/logs answers for the last 48 hours only (providers.md 4.9)
    LOG_RETENTION_SECONDS = 48 * 3600

    def routes(self):
        return [
            ("POST", r"^/sms/3/messages$", self.send),
            ("GET", r"^/sms/3/logs$", self.logs),
        ]

    # --- auth and errors ---

    def _unauthorized(self, req):
        header = req.headers.get("authorization", "")
        key = str(self.options.get("API_KEY") or "")
        if key and hmac.compare_digest(header.encode(), f"App {key}".encode()):
            return None
        return EmuReply(401, legacy_error("UNAUTHORIZED", "Invalid login details"))

    def error_reply(self, status) -> EmuReply:
        if status == 429:
            return EmuReply(429, legacy_error("TOO_MANY_REQUESTS", "Too many requests"))
        return EmuReply(status, api_error(f"E{status}", "Something went wrong."))

    # --- POST /sms/3/messages ---

    def send(self, req, match) -> EmuReply:
        refused = self._unauthorized(req)
        if refused:
            return refused
        try:
            data = req.json()
        except ValueError:
            return EmuReply(400, api_error("E400", "Request cannot be processed.",
                                           [("body", "is not valid JSON")]))  # fmt: skip
        violations = _violations(data)
        if violations:
            return EmuReply(400, api_error("E400", "Request cannot be processed.", violations))
        bulk_id = str((data.get("options") or {}).get("schedule", {}).get("bulkId") or "")
        bulk_id = bulk_id or self.new_id()
        include_count = bool((data.get("options") or {}).get("includeSmsCountInResponse"))
        answers = []
        for message in data["messages"]:
            for destination in message["destinations"]:
                answers.append(self._send_one(message, destination, bulk_id, include_count))
        return EmuReply(200, {"bulkId": bulk_id, "messages": answers})

    def _send_one(self, message, destination, bulk_id, include_count) -> dict:
        to = str(destination["to"])
        message_id = str(destination.get("messageId") or self.new_id())
        text = str(message["content"]["text"])
        count = 1 if len(text) <= GSM_SINGLE else -(-len(text) // GSM_PART)
        answer = {"messageId": message_id, "destination": to}
        if include_count:
            answer["details"] = {"messageCount": count}
        if not re.fullmatch(r"\d{6,15}", to):
            return {**answer, "status": status_json(REJECTED_DESTINATION)}
        if self.lookup(message_id):
            return {**answer, "status": status_json(REJECTED_DUPLICATE)}
        webhooks = message.get("webhooks") or {}
        delivery = webhooks.get("delivery") or {}
        notify = delivery.get("notify", True) is not False
        self.accept(
            to="+" + to,
            provider_ids=[message_id],
            callback_url=str(delivery.get("url") or "") if notify else "",
            client_ref=str(webhooks.get("callbackData") or ""),
            body=text,
            segments=count,
            sender=str(message.get("sender") or "InfoSMS"),
            bulk_id=bulk_id,
            notify=notify,
            intermediate=bool(delivery.get("intermediateReport")),
        )
        return {**answer, "status": status_json(PENDING)}

    # --- receipts ---

    def report(self, sent, step_status: str, error: str = "", offset_ms: int = 0) -> dict:
        status = STATUS.get(step_status, STATUS["unknown"])
        done = sent.accepted_at + offset_ms / 1000
        report = {
            "bulkId": sent.extra.get("bulk_id", ""),
            "messageId": sent.provider_ids[0],
            "to": sent.to.lstrip("+"),
            "sender": sent.sender,
            "sentAt": infobip_time(sent.accepted_at),
            "doneAt": infobip_time(done),
            "messageCount": sent.segments,
            "mccMnc": "23415",
            "price": PRICE,
            "status": status_json(status),
            "error": error_json(ERRORS.get(step_status, NO_ERROR) if error else NO_ERROR),
        }
        if sent.client_ref:
            report["callbackData"] = sent.client_ref
        return report

    def receipt(self, sent, step, part_index) -> Webhook:
        body = {"results": [self.report(sent, step.status, step.error, step.offset_ms)]}
        headers = {"Content-Type": "application/json"}
        if sent.callback_url:
            # A per-message webhooks.delivery.url / notifyUrl: Infobip adds no credentials
            # (providers.md 4.7), so the report carries only what the URL itself carries.
            return Webhook(url=sent.callback_url, body=json.dumps(body).encode(), headers=headers)
        url = self.default_webhook_url("status")
        token = self.first_secret("WEBHOOK_TOKEN")
        if token:  # the account-level URL: as a subscription profile would carry it
            url += ("&" if "?" in url else "?") + urlencode({"token": token})
        user = self.first_secret("WEBHOOK_USERNAME")
        password = self.first_secret("WEBHOOK_PASSWORD")
        if user and password:
            credentials = base64.b64encode(f"{user}:{password}".encode()).decode()
            headers["Authorization"] = f"Basic {credentials}"
        return Webhook(url=url, body=json.dumps(body).encode(), headers=headers)

    # --- GET /sms/3/logs ---

    def logs(self, req, match) -> EmuReply:
        refused = self._unauthorized(req)
        if refused:
            return refused
        try:
            limit = min(1000, int(req.query.get("limit", ["50"])[0]))
        except ValueError:
            return EmuReply(400, api_error("E400", "Bad request", [("limit", "not a number")]))
        wanted_ids = set(req.query.get("messageId", []))
        wanted_bulks = set(req.query.get("bulkId", []))
        with self.lock:
            sent_all = list({id(s): s for s in self.sent.values()}.values())
        results = []
        forgotten_before = time.time() - self.LOG_RETENTION_SECONDS
        for sent in sent_all:
            if sent.accepted_at < forgotten_before:
                continue  # Infobip keeps logs for 48 h
            if wanted_ids and sent.provider_ids[0] not in wanted_ids:
                continue
            if wanted_bulks and sent.extra.get("bulk_id") not in wanted_bulks:
                continue
            results.append(self.log_entry(sent))
        return EmuReply(200, {"results": results[:limit]})

    def log_entry(self, sent) -> dict:
        """A v3 log (IPY SmsLog): the latest status, `destination` and `content` rather than the
        report's `to`; no callbackData."""
        final = sent.status != "accepted"
        status = status_json(STATUS.get(sent.status, STATUS["unknown"]) if final else PENDING)
        step = next((s for s in _steps(sent) if s.status == sent.status), None)
        offset = step.offset_ms if step else 0
        error = ERRORS.get(sent.status, NO_ERROR) if step and step.error else NO_ERROR
        return {
            "sender": sent.sender,
            "destination": sent.to.lstrip("+"),
            "bulkId": sent.extra.get("bulk_id", ""),
            "messageId": sent.provider_ids[0],
            "sentAt": infobip_time(sent.accepted_at),
            "doneAt": infobip_time(sent.accepted_at + offset / 1000),
            "messageCount": sent.segments,
            "price": PRICE,
            "status": status,
            "error": error_json(error),
            "content": {"text": sent.body},
            "mccMnc": "23415",
        }


def _steps(sent):
    digits = re.sub(r"\D", "", sent.to)
    return SCENARIOS.get(digits[-1:] if digits else "", DEFAULT_SCENARIO)


def _violations(data) -> list:
    """What Infobip's validation would refuse, as (property, violation) pairs."""
    if not isinstance(data, dict):
        return [("body", "must be an object")]
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        return [("messages", "must not be empty")]
    found = []
    for n, message in enumerate(messages):
        if not isinstance(message, dict):
            found.append((f"messages[{n}]", "must be an object"))
            continue
        destinations = message.get("destinations")
        if not isinstance(destinations, list) or not destinations:
            found.append((f"messages[{n}].destinations", "must not be empty"))
        else:
            for d, destination in enumerate(destinations):
                if not isinstance(destination, dict) or not destination.get("to"):
                    found.append((f"messages[{n}].destinations[{d}].to", "must not be blank"))
        content = message.get("content")
        if not isinstance(content, dict) or not isinstance(content.get("text"), str):
            found.append((f"messages[{n}].content.text", "must not be blank"))
    return found
