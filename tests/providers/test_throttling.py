"""Throttling, the same for every provider: each one's own way of saying "too fast" (HTTP 429
in its error format; Vonage's SMS API status 1 in a 200 answer), as its emulator speaks it,
becomes a retryable error marked `throttled`, and a server error does not. The sender leaves a
gap in the shared schedule for a throttled send (tests/test_pacing.py)."""

import pytest
import requests

from devtools.emulator.base import Emulator
from messaging.providers.base import RetryableSendError

from . import test_infobip, test_sinch, test_twilio, test_vonage_messages, test_vonage_sms
from .test_twilio import sms  # an E.164 sender and recipient every provider accepts

CONFIGURE = {
    "vonage-sms": test_vonage_sms.configure,
    "vonage-messages": test_vonage_messages.configure,
    "sinch": test_sinch.configure,
    "infobip": test_infobip.configure,
    "twilio": test_twilio.configure,
}


@pytest.fixture(scope="module")
def emulator():
    with Emulator(receipt_delay=60, webhook_base="http://127.0.0.1:9") as emu:
        yield emu


@pytest.mark.parametrize("name", CONFIGURE)
def test_a_providers_throttling_is_marked_throttled_and_a_server_error_is_not(
    settings, emulator, name
):
    provider = CONFIGURE[name](settings, BASE_URL=emulator.url)
    try:
        emulator.faults.rate_429, emulator.faults.rate_5xx = 1.0, 0.0
        with pytest.raises(RetryableSendError) as throttled:
            provider.send(sms(), requests.Session())
        emulator.faults.rate_429, emulator.faults.rate_5xx = 0.0, 1.0
        with pytest.raises(RetryableSendError) as server_error:
            provider.send(sms(), requests.Session())
    finally:
        emulator.faults.rate_429 = emulator.faults.rate_5xx = 0.0
    assert throttled.value.throttled, str(throttled.value)
    assert not server_error.value.throttled, str(server_error.value)
