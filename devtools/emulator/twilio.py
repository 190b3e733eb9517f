"""Emulated Twilio Programmable Messaging API (providers.md section 5).

Serves the Messages resource at its real paths:
  POST /2010-04-01/Accounts/{AccountSid}/Messages.json          create (form-encoded, HTTP Basic)
  GET  /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json    fetch (reconciliation)
and posts status callbacks as Twilio does: a form post to the message's StatusCallback URL
(exactly as given, our `?ref=` included), signed with X-Twilio-Signature over that URL.

Errors use Twilio's legacy JSON shape {"code", "message", "more_info", "status"}. Numbers in
`unsubscribed` answer 21610, as Twilio does for a recipient who texted STOP.
"""

import base64
import binascii
import email.utils
import re
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlencode, urlsplit

from devtools.emulator.base import EmulatedProvider, EmuReply, Webhook, register
from messaging.encoding import analyse
from messaging.providers.twilio import API_VERSION, compute_signature

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
MAX_BODY_CHARS = 1600  # Twilio error 21617

# The framework's neutral step -> (MessageStatus, ErrorCode). Twilio posts no callback for the
# initial queued/accepted status; `sent` is the first one. Twilio has no "expired": a message
# whose ValidityPeriod ran out is `failed` with 30036. It has no "unknown" either.
STEP_STATUS = {
    "accepted": ("sent", ""),
    "delivered": ("delivered", ""),
    "failed": ("undelivered", "30003"),  # Unreachable destination handset
    "expired": ("failed", "30036"),  # Validity Period Expired
    "rejected": ("failed", "30008"),
    "unknown": ("sent", ""),
}
# RawDlrDoneDate comes only with the carrier's final DLR (providers.md 5.4).
DLR_STATUSES = frozenset({"delivered", "undelivered"})


def error(status: int, code: int, message: str) -> EmuReply:
    return EmuReply(
        status,
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
    )


def rfc2822(timestamp: float) -> str:
    """Twilio's date format: "Tue, 26 Jul 2016 12:50:07 +0000"."""
    return email.utils.format_datetime(datetime.fromtimestamp(timestamp, UTC))


@register
class TwilioEmulator(EmulatedProvider):
    name = "twilio"

    def __init__(self, emulator):
        super().__init__(emulator)
        self.unsubscribed: set = set()  # destinations that answer 21610

    def routes(self):
        account = r"^/2010-04-01/Accounts/(?P<sid>[^/]+)/Messages"
        return [
            ("POST", account + r"\.json$", self.send),
            ("GET", account + r"/(?P<message_sid>[^/]+)\.json$", self.fetch),
        ]

    def new_id(self) -> str:
        return "SM" + uuid.uuid4().hex

    def error_reply(self, status):
        if status == 429:
            return error(429, 20429, "Too Many Requests")
        return error(status, 20500, "An internal server error has occurred")

    # --- auth ---

    def _authenticated(self, req, sid) -> bool:
        header = req.headers.get("authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        tokens = [t.strip() for t in str(self.options.get("AUTH_TOKEN") or "").split(",")]
        account = str(self.options.get("ACCOUNT_SID") or "")
        return bool(account) and user == account == sid and password in [t for t in tokens if t]

    # --- create ---

    def send(self, req, match) -> EmuReply:
        if not self._authenticated(req, match["sid"]):
            return error(401, 20003, "Authenticate")
        try:
            form = {k: v[-1] for k, v in req.form().items()}
        except UnicodeDecodeError:
            return error(400, 20001, "Invalid request body")
        to = form.get("To", "")
        sender, service = form.get("From", ""), form.get("MessagingServiceSid", "")
        body = form.get("Body", "")
        if not to:
            return error(400, 21604, "A 'To' phone number is required.")
        if not E164.match(to):
            return error(400, 21211, f"Invalid 'To' Phone Number: {to}")
        if not sender and not service:
            return error(
                400, 21603, "A 'From' or 'MessagingServiceSid' parameter is required to send a "
                "message."
            )  # fmt: skip
        if not body and not form.get("MediaUrl"):
            return error(400, 21602, "Message body is required.")
        if len(body) > MAX_BODY_CHARS:
            return error(
                400, 21617, "The concatenated message body exceeds the 1600 character limit."
            )
        if to in self.unsubscribed:
            return error(400, 21610, "Attempt to send to unsubscribed recipient")

        callback = form.get("StatusCallback", "")
        ref = parse_qs(urlsplit(callback).query).get("ref", [""])[0]
        sid = self.new_id()
        _, segments = analyse(body)
        # With a Messaging Service the message is `accepted` and num_segments is 0 until the
        # service has picked a sender (providers.md 5.2).
        status = "accepted" if service else "queued"
        sent = self.accept(
            to=to,
            provider_ids=[sid],
            callback_url=callback,
            client_ref=ref,
            body=body,
            segments=segments,
            sender=sender,
            messaging_service_sid=service,
            twilio_status=status,
            error_code=None,
        )
        return EmuReply(201, self.resource(sent, sid, num_segments=0 if service else segments))

    def resource(self, sent, sid, *, num_segments=None) -> dict:
        """The Message resource as Twilio renders it (TPY MessageInstance fields)."""
        account = str(self.options.get("ACCOUNT_SID") or "")
        created = rfc2822(sent.accepted_at)
        final = sent.extra["twilio_status"] in DLR_STATUSES
        return {
            "account_sid": account,
            "api_version": API_VERSION,
            "body": sent.body,
            "date_created": created,
            "date_sent": None if sent.extra["twilio_status"] in ("queued", "accepted") else created,
            "date_updated": rfc2822(sent.extra.get("updated_at", sent.accepted_at)),
            "direction": "outbound-api",
            "error_code": sent.extra["error_code"],
            "error_message": None,
            "from": sent.sender or None,
            "messaging_service_sid": sent.extra["messaging_service_sid"] or None,
            "num_media": "0",
            "num_segments": str(sent.segments if num_segments is None else num_segments),
            "price": f"-{0.0079 * sent.segments:.5f}" if final else None,
            "price_unit": "USD",
            "sid": sid,
            "status": sent.extra["twilio_status"],
            "subresource_uris": {
                "media": f"/{API_VERSION}/Accounts/{account}/Messages/{sid}/Media.json",
            },
            "to": sent.to,
            "uri": f"/{API_VERSION}/Accounts/{account}/Messages/{sid}.json",
        }

    # --- fetch ---

    def fetch(self, req, match) -> EmuReply:
        if not self._authenticated(req, match["sid"]):
            return error(401, 20003, "Authenticate")
        sid = match["message_sid"]
        sent = self.lookup(sid)
        if sent is None:
            return error(404, 20404, f"The requested resource {req.path} was not found")
        return EmuReply(200, self.resource(sent, sid))

    # --- status callbacks ---

    def receipt(self, sent, step, part_index) -> Webhook:
        status, code = STEP_STATUS.get(step.status, ("sent", ""))
        sid = sent.provider_ids[0]
        sent.extra.update(twilio_status=status, error_code=int(code) if code else None)
        sent.extra["updated_at"] = sent.accepted_at + step.offset_ms / 1000
        # Parameters in the order Twilio sends them; the signature sorts them anyway.
        params = [
            ("SmsSid", sid),
            ("SmsStatus", status),
            ("MessageStatus", status),
            ("To", sent.to),
        ]
        if sent.extra["messaging_service_sid"]:
            params.append(("MessagingServiceSid", sent.extra["messaging_service_sid"]))
        params += [("MessageSid", sid), ("AccountSid", str(self.options.get("ACCOUNT_SID") or ""))]
        if sent.sender:
            params.append(("From", sent.sender))
        params.append(("ApiVersion", API_VERSION))
        if code:
            params.append(("ErrorCode", code))
        if status in DLR_STATUSES:
            # The carrier's done date: minute precision, no time zone. Derived from the step's
            # offset, so a retried (duplicate) callback is byte-identical.
            done = datetime.fromtimestamp(sent.accepted_at, UTC) + timedelta(
                milliseconds=step.offset_ms
            )
            params.append(("RawDlrDoneDate", done.strftime("%y%m%d%H%M")))
        url = sent.callback_url or self.default_webhook_url("status")
        return Webhook(
            url=url,
            body=urlencode(params).encode(),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "User-Agent": "TwilioProxy/1.1",
                "X-Twilio-Signature": compute_signature(
                    url, params, self.first_secret("AUTH_TOKEN")
                ),
            },
        )

    # --- inbound (for tests and demos) ---

    def inbound(self, *, from_number, to_number, body, url=None) -> Webhook:
        """A signed inbound-message webhook, as Twilio posts it to a number's messaging URL."""
        sid = self.new_id()
        params = [
            ("ToCountry", "US"),
            ("SmsMessageSid", sid),
            ("NumMedia", "0"),
            ("SmsSid", sid),
            ("SmsStatus", "received"),
            ("Body", body),
            ("To", to_number),
            ("NumSegments", str(analyse(body)[1])),
            ("MessageSid", sid),
            ("AccountSid", str(self.options.get("ACCOUNT_SID") or "")),
            ("From", from_number),
            ("ApiVersion", API_VERSION),
        ]
        url = url or self.default_webhook_url("inbound")
        return Webhook(
            url=url,
            body=urlencode(params).encode(),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": compute_signature(
                    url, params, self.first_secret("AUTH_TOKEN")
                ),
            },
        )
