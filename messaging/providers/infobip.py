"""Infobip SMS API (providers.md section 4): send with POST /sms/3/messages, delivery reports
and inbound messages as {"results": [...]} batches, reconciliation with GET /sms/3/logs.

Identity: Infobip is the one provider that lets us choose its message id, so every destination
carries `messageId` = our message id and `callbackData` repeats it. A report can therefore
always be matched, even one that arrives before the send response is stored.

Authenticity: Infobip does not sign SMS webhooks per message (the HMAC scheme of subscription
profiles is UNCONFIRMED, providers.md 4.7). Herald accepts HTTP Basic credentials (a
subscription profile with BASIC security) and/or a secret `token` query parameter, which we
append to every per-message delivery URL ourselves.
"""

import base64
import binascii
from datetime import UTC, datetime
from urllib.parse import urlencode

import requests
from django.conf import settings

from messaging.providers.base import (
    AmbiguousSendError,
    DeliveryReport,
    InboundSms,
    OutboundSms,
    PermanentSendError,
    Provider,
    SendRequest,
    SendResult,
    WebhookAuthError,
    WebhookInput,
    WebhookParseError,
)
from messaging.status import Status

# Status groups (IJAVA MessageGeneralStatus; group ids from Infobip's "Response codes" page).
# Infobip renames statuses (id 26 is MESSAGE_ACCEPTED in the SDK fixture, PENDING_ACCEPTED in
# the status table), so we decide on ids and keep the names only as evidence.
GROUP_ACCEPTED = 0  # UNCONFIRMED: 0 per a third-party list only
GROUP_PENDING = 1
GROUP_UNDELIVERABLE = 2
GROUP_DELIVERED = 3
GROUP_EXPIRED = 4
GROUP_REJECTED = 5

STATUS_BY_GROUP = {
    GROUP_ACCEPTED: Status.SENT,
    GROUP_PENDING: Status.SENT,  # 3 waiting delivery, 7 enroute, 26 accepted
    GROUP_UNDELIVERABLE: Status.FAILED,
    GROUP_DELIVERED: Status.DELIVERED,
    GROUP_EXPIRED: Status.EXPIRED,
    GROUP_REJECTED: Status.REJECTED,
}
# Statuses whose meaning differs from their group's.
STATUS_BY_ID = {
    2: Status.SENT,  # DELIVERED_TO_OPERATOR: in the DELIVERED group, but a later DLR follows
    5: Status.DELIVERED,  # DELIVERED_TO_HANDSET
    29: Status.UNKNOWN,  # EXPIRED_DLR_UNKNOWN: expired without the operator saying what happened
}
# Only for a report that carries no ids at all (never seen in the SDK models; tolerance).
STATUS_MAP = {
    "accepted": Status.SENT,
    "pending": Status.SENT,
    "undeliverable": Status.FAILED,
    "delivered": Status.DELIVERED,
    "expired": Status.EXPIRED,
    "rejected": Status.REJECTED,
}

DUPLICATE_MESSAGE_ID = 23  # REJECTED_DUPLICATE_MESSAGE_ID
NO_ERROR = 0


class DuplicateMessageId(PermanentSendError):
    """REJECTED_DUPLICATE_MESSAGE_ID in a 200: `send` decides, knowing the attempt number."""

    def __init__(self, message, *, result: SendResult, **kwargs):
        super().__init__(message, **kwargs)
        self.result = result


def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def parse_time(value):
    """Infobip writes `2019-11-09T16:00:00.000+0000` (no colon; the SDK tests also show
    `+05:30`). Python 3.12's fromisoformat reads both. A timestamp is evidence, not identity:
    one we cannot read is dropped rather than failing the whole batch."""
    if not value:
        return None
    try:
        stamp = datetime.fromisoformat(str(value).strip())
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


class InfobipProvider(Provider):
    WEBHOOK_AUTH_OPTIONS = ("WEBHOOK_PASSWORD", "WEBHOOK_TOKEN")
    EMULATOR = "devtools.emulator.infobip.InfobipEmulator"
    STATUS_MAP = STATUS_MAP
    # GET /sms/3/logs keeps 48 hours (providers.md 4.9): reconcile must ask well before that,
    # or it never finds a log (RECEIPT_TIMEOUT_HOURS defaults to 72).
    MAX_RECEIPT_TIMEOUT_HOURS = 36

    @classmethod
    def check(cls, options, env=None) -> list:
        from django.core.checks import Error

        if not cls.signing_on(options) or str(options.get("WEBHOOK_TOKEN") or "").strip():
            return []
        # Herald gives every message its own webhooks.delivery.url, and Infobip posts those
        # reports with no credentials (providers.md 4.7): only the URL's token can pass.
        return [
            Error(
                "Provider 'infobip' verifies webhooks but INFOBIP_WEBHOOK_TOKEN is not set: "
                "Infobip sends the delivery reports of a per-message webhooks.delivery.url "
                "without credentials (no HTTP Basic), so every one would be refused.",
                hint="Set INFOBIP_WEBHOOK_TOKEN (Herald appends it to each message's delivery "
                "URL), or INFOBIP_WEBHOOK_SIGNING=false (check --deploy warns about that).",
                id="herald.E012",
            )
        ]

    # --- send ---

    @property
    def base_url(self) -> str:
        # The portal shows the base URL without a scheme ("xxxxx.api.infobip.com").
        base = self.option("BASE_URL").strip().rstrip("/")
        return base if "://" in base else f"https://{base}"

    def auth_headers(self) -> dict:
        return {"Authorization": f"App {self.option('API_KEY')}", "Accept": "application/json"}

    def delivery_url(self, callback_url: str) -> str:
        """Our status webhook plus the secret token, since Infobip adds no credentials to a
        per-message delivery URL."""
        tokens = self.secrets("WEBHOOK_TOKEN")
        if not tokens:
            return callback_url
        joiner = "&" if "?" in callback_url else "?"
        return f"{callback_url}{joiner}{urlencode({'token': tokens[0]})}"

    def build_send_request(self, sms: OutboundSms) -> SendRequest:
        message = {
            "destinations": [{"to": sms.to.lstrip("+"), "messageId": sms.message_id}],
            "content": {"text": sms.body},
            "webhooks": {
                "delivery": {
                    "url": self.delivery_url(sms.callback_url),
                    # Intermediate reports tell us DELIVERED_TO_OPERATOR before the handset
                    # report; the state machine keeps them in order.
                    "intermediateReport": True,
                    "notify": True,
                },
                "contentType": "application/json",
                "callbackData": sms.message_id,
            },
        }
        if sms.sender:  # empty: Infobip uses the account's default sender
            message = {"sender": sms.sender, **message}
        return SendRequest(
            method="POST",
            url=f"{self.base_url}/sms/3/messages",
            headers=self.auth_headers(),
            json={"messages": [message], "options": {"includeSmsCountInResponse": True}},
        )

    def send(self, sms: OutboundSms, session) -> SendResult:
        # Our messageId travels with every attempt. After a 429 or 5xx the sender retries with
        # the same id; if the earlier attempt did reach Infobip, the retry is refused as
        # REJECTED_DUPLICATE_MESSAGE_ID (id 23) instead of texting the recipient twice.
        try:
            result = super().send(sms, session)
        except DuplicateMessageId as exc:
            if sms.attempt == 1:
                raise PermanentSendError(str(exc), code=exc.code, raw=exc.raw) from None
            # Only a retry can collide with our own (UUID) id: the earlier attempt that
            # answered 5xx reached Infobip, which holds the message under this id. Its
            # receipts carry the same id, so the message is sent, not rejected.
            result = exc.result
        if not any(result.provider_message_ids):
            result.provider_message_ids = [sms.message_id]  # the id we chose is Infobip's id
        return result

    def parse_send_response(self, response: requests.Response) -> SendResult:
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code >= 300:
            code, text = _http_error(data, response)
            error = self.http_error_class(response.status_code)
            raise error(
                f"Infobip HTTP {response.status_code}: {text}",
                code=code,
                retry_after=self.retry_after(response),
                raw=data if data is not None else response.text[:2000],
            )
        messages = data.get("messages") if isinstance(data, dict) else None
        if not isinstance(messages, list) or not messages or not isinstance(messages[0], dict):
            # A 2xx we cannot read may still mean Infobip took the message: never resend;
            # receipts or /sms/3/logs (we know its id) settle it.
            raise AmbiguousSendError(
                "Infobip answered 2xx without a messages[] entry",
                code="bad-response",
                raw=data if data is not None else response.text[:2000],
            )
        # One destination per request, so one entry.
        entry = messages[0]
        status = entry.get("status") if isinstance(entry.get("status"), dict) else {}
        group, status_id = _int(status.get("groupId")), _int(status.get("id"))
        name = _status_name(status)
        message_id = str(entry.get("messageId") or "")
        if group == GROUP_REJECTED:
            if status_id == DUPLICATE_MESSAGE_ID:
                raise DuplicateMessageId(
                    f"Infobip already holds message id {message_id}: {name}",
                    code=name,
                    raw=data,
                    result=self._result(entry, message_id, f"{name} (earlier attempt accepted)"),
                )
            # A REJECTED group inside a 200 is a per-message refusal; sending it again fails
            # the same way (REJECTED_SYSTEM_ERROR, id 21, might not, but a retry would carry
            # the same messageId and be refused as a duplicate: UNCONFIRMED, so not retried).
            raise PermanentSendError(
                f"Infobip rejected the message: {name} (status id {status_id}): "
                f"{status.get('description') or ''}".rstrip(": "),
                code=name or str(status_id),
                raw=data,
            )
        return self._result(entry, message_id, name)

    @staticmethod
    def _result(entry: dict, message_id: str, provider_status: str) -> SendResult:
        details = entry.get("details") if isinstance(entry.get("details"), dict) else {}
        # v3 puts the part count in details.messageCount; v2 answered smsCount.
        segments = _int(details.get("messageCount")) or _int(entry.get("smsCount"))
        return SendResult(
            provider_message_ids=[message_id] if message_id else [],
            provider_status=provider_status,
            segments=segments,
            raw=entry,
        )

    # --- webhooks ---

    def verify_webhook(self, request: WebhookInput, kind: str) -> None:
        if not self.webhook_signing_enabled:
            return
        usernames = self.secrets("WEBHOOK_USERNAME")
        passwords = self.secrets("WEBHOOK_PASSWORD")
        tokens = self.secrets("WEBHOOK_TOKEN")
        basic_configured = bool(usernames and passwords)
        if not basic_configured and not tokens:
            raise WebhookAuthError(
                "no Infobip webhook credentials configured (INFOBIP_WEBHOOK_USERNAME and "
                "INFOBIP_WEBHOOK_PASSWORD, or INFOBIP_WEBHOOK_TOKEN); refusing every request"
            )
        # Every credential presented for a configured method must be right, and at least one
        # configured method must pass: subscription posts bring Basic, per-message delivery
        # posts bring the token in the URL.
        passed = False
        presented_basic = _basic_credentials(request.headers.get("authorization", ""))
        if basic_configured and presented_basic is not None:
            user, password = presented_basic
            user_ok = self.constant_time_in(user, usernames)
            password_ok = self.constant_time_in(password, passwords)
            if not (user_ok and password_ok):
                raise WebhookAuthError("wrong HTTP Basic credentials")
            passed = True
        presented_tokens = [value for name, value in request.query if name == "token"]
        if tokens and presented_tokens:
            if not all(self.constant_time_in(t, tokens) for t in presented_tokens):
                raise WebhookAuthError("wrong webhook token")
            passed = True
        if not passed:
            expected = " or ".join(
                m for m, on in (("HTTP Basic", basic_configured), ("token", tokens)) if on
            )
            raise WebhookAuthError(f"missing credentials: expected {expected}")

    def parse_status_webhook(self, request: WebhookInput) -> list:
        # One POST can carry up to 100 reports. A report we cannot identify makes the whole
        # request invalid (400, stored for replay) rather than being dropped silently.
        return [self.report_from(item, n) for n, item in enumerate(_results(request))]

    def report_from(self, item, n: int = 0) -> DeliveryReport:
        """One DLR (v3 or v2) or one /sms/3/logs entry as a normalised report."""
        if not isinstance(item, dict):
            raise WebhookParseError(f"results[{n}] is not an object")
        message_id = str(item.get("messageId") or "")
        callback = item.get("callbackData")
        status = item.get("status")
        if not message_id and not callback:
            raise WebhookParseError(f"results[{n}] has neither messageId nor callbackData")
        if not isinstance(status, dict):
            raise WebhookParseError(f"results[{n}].status is missing or not an object")
        group, status_id = _int(status.get("groupId")), _int(status.get("id"))
        if group is None and status_id is None and not status.get("groupName"):
            raise WebhookParseError(f"results[{n}].status has no groupId, id or groupName")
        error = item.get("error") if isinstance(item.get("error"), dict) else {}
        price = item.get("price") if isinstance(item.get("price"), dict) else {}
        return DeliveryReport(
            status=self.status_of(status),
            provider_status=_status_name(status),
            documented=self.documents_status(status),
            provider_message_id=message_id,
            # callbackData is our id; without it (reports from an account-level subscription)
            # messageId is our id too, since we chose it.
            client_reference=str(callback or message_id)[:100],
            error_code=_error_code(error),
            error_text=_error_text(error),
            provider_timestamp=parse_time(item.get("doneAt") or item.get("sentAt")),
            # pricePerMessage as given: whether it covers all parts is UNCONFIRMED.
            price=self.decimal(price.get("pricePerMessage")),
            currency=str(price.get("currency") or ""),
            segments=_int(item.get("messageCount")) or _int(item.get("smsCount")),
            raw=item,
        )

    def documents_status(self, status: dict) -> bool:
        """Whether Infobip documents this status (by id, by group, or by name alone)."""
        status_id, group = _int(status.get("id")), _int(status.get("groupId"))
        if status_id in STATUS_BY_ID or group in STATUS_BY_GROUP:
            return True
        return group is None and status_id is None and self.documents(status.get("groupName", ""))

    def status_of(self, status: dict) -> Status:
        status_id, group = _int(status.get("id")), _int(status.get("groupId"))
        if status_id in STATUS_BY_ID:
            return STATUS_BY_ID[status_id]
        if group in STATUS_BY_GROUP:
            return STATUS_BY_GROUP[group]
        if group is None and status_id is None:
            return self.map_status(status.get("groupName", ""))
        return Status.UNKNOWN

    def parse_inbound_webhook(self, request: WebhookInput) -> list:
        messages = []
        for n, item in enumerate(_results(request)):
            if not isinstance(item, dict):
                raise WebhookParseError(f"results[{n}] is not an object")
            missing = [k for k in ("messageId", "from", "to") if not item.get(k)]
            text = item.get("text")  # SMS: the full text, keyword included (not cleanText)
            if not isinstance(text, str):
                text = _mms_text(item.get("message"))
            if missing or text is None:
                raise WebhookParseError(f"results[{n}] lacks {', '.join(missing) or 'text'}")
            messages.append(
                InboundSms(
                    provider_message_id=str(item["messageId"]),
                    from_number=str(item["from"]),  # digits without '+': normalised later
                    to_number=str(item["to"]),
                    text=text,
                    parts=_int(item.get("smsCount")) or 1,
                    received_at=parse_time(item.get("receivedAt")),
                    raw=item,
                )
            )
        return messages

    # --- reconciliation ---

    def fetch_reports(self, message, session: requests.Session) -> list:
        """The message's entry in GET /sms/3/logs (idempotent, kept 48 h, unlike /reports,
        which hands each report out once). Returns [] when Infobip has no log for it; raises
        requests.RequestException when the call fails."""
        message_id = message.provider_message_id or str(message.pk)  # we chose its id
        response = session.get(
            f"{self.base_url}/sms/3/logs",
            params={"messageId": message_id},
            headers=self.auth_headers(),
            timeout=(5, settings.SENDER_HTTP_TIMEOUT),
        )
        response.raise_for_status()
        try:
            results = response.json().get("results") or []
        except (ValueError, AttributeError) as exc:
            raise requests.RequestException(f"Infobip logs answer is not JSON: {exc}") from exc
        reports = []
        for n, item in enumerate(results):
            try:
                reports.append(self.report_from(item, n))
            except WebhookParseError:
                continue  # an entry we cannot read says nothing about this message
        return reports


# --- helpers ---------------------------------------------------------------------------------


def _mms_text(segments):
    """An MMS inbound report's text: its `message` segments (MmsWebhookInboundReport in
    Infobip's SDKs) of a text/* content type, joined by new lines; the media segments (`url`)
    stay in the stored raw payload. None when it is no segment list."""
    if not isinstance(segments, list):
        return None
    texts = [
        s["value"]
        for s in segments
        if isinstance(s, dict)
        and str(s.get("contentType") or "").lower().startswith("text/")
        and isinstance(s.get("value"), str)
    ]
    return "\n".join(texts)


def _results(request: WebhookInput) -> list:
    data = request.json_object()
    results = data.get("results")
    if not isinstance(results, list):
        raise WebhookParseError("body has no results[] list")
    return results


def _status_name(status: dict) -> str:
    """The name for the audit trail; ids when Infobip sent no names."""
    name = status.get("name") or status.get("groupName")
    if name:
        return str(name)[:64]
    ids = [f"{k} {status[k]}" for k in ("id", "groupId") if status.get(k) is not None]
    return ", ".join(ids)


def _basic_credentials(header: str):
    """(user, password) from an `Authorization: Basic ...` header, or None."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ("", "")  # presented but unreadable: wrong, not absent
    user, _, password = decoded.partition(":")
    return user, password


def _error_code(error: dict) -> str:
    error_id = _int(error.get("id"))
    if error_id is None or error_id == NO_ERROR:
        return ""
    return str(error_id)


def _error_text(error: dict) -> str:
    if _int(error.get("id")) in (None, NO_ERROR):
        return ""
    text = ": ".join(str(error[k]) for k in ("name", "description") if error.get(k))
    if error.get("permanent") is True:  # Infobip's hint: resending unchanged fails the same way
        text += " (permanent)"
    return text


def _http_error(data, response) -> tuple:
    """(code, text) from either error body shape (providers.md 4.5)."""
    if isinstance(data, dict):
        exception = (data.get("requestError") or {}).get("serviceException")
        if isinstance(exception, dict):  # legacy shape
            text = str(exception.get("text") or "")
            errors = exception.get("validationErrors")
            if isinstance(errors, dict) and errors:
                text += " " + "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in errors.items())
            return str(exception.get("messageId") or response.status_code), text.strip()
        if data.get("errorCode"):  # current shape
            text = str(data.get("description") or "")
            violations = data.get("violations")
            if isinstance(violations, list) and violations:
                text += " " + "; ".join(
                    f"{v.get('property')}: {v.get('violation')}"
                    for v in violations
                    if isinstance(v, dict)
                )
            return str(data["errorCode"]), text.strip()
    return str(response.status_code), (response.text or "")[:500]
