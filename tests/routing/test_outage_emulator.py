"""Proof against the emulator (issue 16, item 4): one emulated provider starts answering 503
mid-run. Within 10 s every new message routes to the other, none is sent twice, and traffic
returns when it recovers. Real Sender (threads, claim, lease), real HTTP, real provider
modules; the scenario is bench/routing_failover.py's, at test scale."""

import pytest

from bench.routing_failover import FAST_HEALTH, double_sends, provider_settings, scenario
from devtools.emulator.base import Emulator
from devtools.emulator.infobip import InfobipEmulator
from devtools.emulator.sinch import SinchEmulator
from messaging.sender import Sender

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_outage_shifts_traffic_within_10s_without_double_sends(settings):
    down = Emulator(receipt_delay=3600, providers={"sinch": SinchEmulator})
    up = Emulator(receipt_delay=3600, providers={"infobip": InfobipEmulator})
    sender = Sender(concurrency=4, batch_size=20)
    try:
        with down, up:
            for key, value in FAST_HEALTH.items():
                setattr(settings, key, value)
            settings.SMS_PROVIDERS = provider_settings(down.url, up.url)
            settings.SMS_PROVIDERS_ENABLED = ["sinch", "infobip"]
            settings.SMS_DEFAULT_PROVIDER = "sinch"
            figures = scenario(sender, down, rate=15, before=2, outage=8, after=8)
            doubles = double_sends(down, up)
            up_sends = sum(up.stats.snapshot()["sends"].get("infobip", {}).values())
            down_sends = sum(down.stats.snapshot()["sends"].get("sinch", {}).values())
    finally:
        sender.pool.shutdown()

    assert doubles == 0  # no destination reached twice, over both providers
    assert figures["by_status"] == {"sent": figures["messages"]}  # every message sent once
    assert up_sends + down_sends == figures["messages"]
    # the circuit opened, and no new message was routed to the failing provider after 10 s
    assert figures["seconds_to_open"] is not None and figures["seconds_to_open"] < 10
    assert figures["seconds_to_last_new_on_failing"] < 10
    assert figures["moved_after_503"] > 0  # the first ones were moved, not retried 6 times
    assert figures["sinch_emulator"]["faults"].get("sinch:503", 0) > 0
    # recovery: the circuit closed and new messages went to sinch again
    assert figures["seconds_recovery_to_close"] is not None
    assert figures["created_after_close"] > 0
    assert figures["routed_to_recovered_after_close"] > 0
    kinds = [kind for kind, _reason, _at in figures["health_events"]]
    assert kinds[0] == "open" and "half_open" in kinds and kinds[-1] == "close"
