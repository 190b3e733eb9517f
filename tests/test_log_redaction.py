"""No secret in any log line: every configured secret, logged every way a developer might
(message, %-args, f-string, extra fields flat and nested, objects, exc_info with chained
exceptions, stack_info, a dict as the message), through the configured JSON formatter."""

import io
import json
import logging
import secrets

import pytest
import requests
from django.utils.module_loading import import_string

from messaging.logging import RedactSecretsFilter, redact

API_KEY = "hk_live_" + secrets.token_urlsafe(24)
TEST_KEY = "hk_test_" + secrets.token_urlsafe(24)
TWILIO_TOKEN = secrets.token_hex(16)
INFOBIP_KEY = secrets.token_hex(20)
INFOBIP_PASSWORD = "pw-" + secrets.token_urlsafe(12)
INFOBIP_TOKEN = secrets.token_urlsafe(18)
SINCH_TOKEN = secrets.token_hex(16)
VONAGE_SIGNATURE = secrets.token_urlsafe(20)
SANDBOX_OLD, SANDBOX_NEW = "rotating-" + secrets.token_hex(6), "rotating-" + secrets.token_hex(6)
METRICS = "metrics-" + secrets.token_hex(10)
SECRET_KEY = "django-" + secrets.token_urlsafe(30)
URL_PASSWORD = "urlpw" + secrets.token_hex(6)

CONFIGURED = [TWILIO_TOKEN, INFOBIP_KEY, INFOBIP_PASSWORD, INFOBIP_TOKEN, SINCH_TOKEN,
              VONAGE_SIGNATURE, SANDBOX_OLD, SANDBOX_NEW, METRICS, SECRET_KEY]  # fmt: skip
# URL_PASSWORD is not configured anywhere: it is recognised by its place in a URL (below).
EVERY = [*CONFIGURED, API_KEY, TEST_KEY]


def _provider(backend, **options):
    return {"BACKEND": f"messaging.providers.{backend}", "OPTIONS": options, "ENV": {}}


@pytest.fixture
def configured(settings):
    settings.SECRET_KEY = SECRET_KEY
    settings.METRICS_TOKEN = METRICS
    settings.SMS_PROVIDERS = {
        "sandbox": _provider("sandbox.SandboxProvider",
                             WEBHOOK_SECRET=f"{SANDBOX_OLD},{SANDBOX_NEW}"),
        "twilio": _provider("twilio.TwilioProvider", ACCOUNT_SID="AC123456",
                            AUTH_TOKEN=TWILIO_TOKEN),
        "infobip": _provider("infobip.InfobipProvider", API_KEY=INFOBIP_KEY,
                             WEBHOOK_USERNAME="herald", WEBHOOK_PASSWORD=INFOBIP_PASSWORD,
                             WEBHOOK_TOKEN=INFOBIP_TOKEN),
        "sinch": _provider("sinch.SinchProvider", SERVICE_PLAN_ID="plan", API_TOKEN=SINCH_TOKEN),
        "vonage-sms": _provider("vonage_sms.VonageSmsProvider", API_KEY="abc12345",
                                SIGNATURE_SECRET=VONAGE_SIGNATURE),
    }  # fmt: skip


@pytest.fixture
def output(settings, configured):
    """A logger whose handler is built from settings.LOGGING (formatter and filter)."""
    spec = dict(settings.LOGGING["formatters"]["json"])
    formatter = import_string(spec.pop("()"))(**spec)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    for name in settings.LOGGING["handlers"]["console"]["filters"]:
        handler.addFilter(import_string(settings.LOGGING["filters"][name]["()"])())
    logger = logging.getLogger("herald.test-redaction")
    logger.propagate, logger.level = False, logging.DEBUG
    logger.addHandler(handler)
    yield logger, stream
    logger.removeHandler(handler)


class Carrier:
    """An object whose str() holds a secret (a client, a config object...)."""

    def __str__(self):
        return f"Carrier(token={SINCH_TOKEN})"


def log_every_way(logger, secret):
    logger.info(secret)
    logger.info("value: %s", secret)
    logger.info("values: %s and %r", secret, {"nested": secret})
    logger.info(f"f-string {secret}")
    logger.warning("extra", extra={"detail": secret, "n": 1})
    logger.warning("extra nested", extra={"ctx": {"a": [1, {"b": secret}], "t": (secret,)}})
    logger.warning("extra by name", extra={"password": secret, "api_key": secret})
    logger.warning("object", extra={"obj": Carrier()})
    logger.info({"msg_dict": secret, "deep": {"x": secret}})
    logger.error("bytes", extra={"body": f"payload {secret}".encode()})
    try:
        try:
            raise ValueError(f"inner failure with {secret}")
        except ValueError as exc:
            raise RuntimeError(f"outer failure with {secret}") from exc
    except RuntimeError:
        logger.exception("exc_info with chained exceptions")
        logger.error("exc_info=True", exc_info=True)
    logger.warning("stack", stack_info=True, extra={"s": secret})


@pytest.mark.parametrize("secret", EVERY)
def test_a_secret_never_reaches_the_output(output, secret):
    logger, stream = output
    log_every_way(logger, secret)
    text = stream.getvalue()
    lines = text.splitlines()
    assert len(lines) >= 13
    assert secret not in text
    for line in lines:  # still one JSON object per line
        assert isinstance(json.loads(line), dict)
    assert "[redacted]" in text


def test_url_shapes(output):
    logger, stream = output
    logger.info(f"calling https://herald:{URL_PASSWORD}@example.test/x")
    logger.info(
        "callback",
        extra={"url": f"https://h.example/webhooks/infobip/status/?token={INFOBIP_TOKEN}&a=1"},
    )
    logger.info(
        "unconfigured token in a URL", extra={"url": "https://x.test/cb?token=abcdef123456"}
    )
    session_error = requests.exceptions.ConnectionError(
        "HTTPSConnectionPool(host='x'): /send?api_key=zzsecret999&to=1"
    )
    try:
        raise session_error
    except requests.RequestException:
        logger.exception("provider call failed")
    text = stream.getvalue()
    for value in (URL_PASSWORD, INFOBIP_TOKEN, "abcdef123456", "zzsecret999"):
        assert value not in text
    assert "a=1" in text  # what is not a credential stays readable


def test_basic_credentials_in_every_encoding(output):
    import base64

    logger, stream = output
    basic = base64.b64encode(f"herald:{INFOBIP_PASSWORD}".encode()).decode()
    logger.info("header", extra={"headers": {"Authorization": f"Basic {basic}"}})
    logger.info("raw base64 %s", basic)
    logger.info("twilio auth", extra={"auth": base64.b64encode(
        f"AC123456:{TWILIO_TOKEN}".encode()).decode()})  # fmt: skip
    text = stream.getvalue()
    assert basic not in text and INFOBIP_PASSWORD not in text and TWILIO_TOKEN not in text


def test_ordinary_fields_are_left_alone(output):
    logger, stream = output
    logger.info("send", extra={"provider": "twilio", "status": "sent", "attempt": 2,
                               "message_id": "0b8a4c1e-1111-4222-8333-444455556666"})  # fmt: skip
    line = json.loads(stream.getvalue())
    assert (line["provider"], line["status"], line["attempt"]) == ("twilio", "sent", 2)
    assert line["message_id"] == "0b8a4c1e-1111-4222-8333-444455556666"


def test_redaction_of_credentials():
    assert "hunter2" not in redact("api_secret=hunter2&to=1")
    assert "abcdefgh12345" not in redact("Authorization: Bearer abcdefgh12345")
    assert "s3cr3t" not in redact('{"password": "s3cr3t"}')


def test_the_filter_masks_the_message_for_any_handler(configured):
    record = logging.LogRecord("x", logging.INFO, "", 0, "posting with %s", (SANDBOX_NEW,), None)
    RedactSecretsFilter().filter(record)
    assert SANDBOX_NEW not in record.getMessage()


def test_an_api_keys_visible_prefix_stays_the_rest_never(output):
    """ApiKey.prefix ("hk_live_" and 8 characters) identifies a key in logs; the rest of a key
    is its secret."""
    logger, stream = output
    prefix = API_KEY[: len("hk_live_") + 8]
    logger.info("request", extra={"api_key": prefix, "client": "alpha"})
    logger.info("oops %s", API_KEY, extra={"api_key": API_KEY})
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["api_key"] == prefix
    assert second["message"] == f"oops {prefix}[redacted]" and second["api_key"] == "[redacted]"
