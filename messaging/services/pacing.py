"""Per-provider send pacing shared by all sender processes.

Each send reserves the provider's next free slot with one atomic UPDATE ... RETURNING on the
ProviderPacing row: the row lock orders concurrent senders, so slots are exactly 1/rate apart
across every process and host, with no burst after an idle spell (the next slot is never
earlier than now). A sender then sleeps until its slot. Clocks of different hosts are assumed
to agree to within a fraction of the interval (NTP).

The rate is the provider's RATE_LIMIT less SENDER_RATE_HEADROOM, and a send the provider
throttles anyway skips one slot for everyone (leave_gap): on a busy host a send that left late
lands next to an on-time one, and without a gap that lateness carries on to the sends after it.
"""

import logging
import time

from django.conf import settings
from django.db import DatabaseError, connection, transaction

from messaging import metrics
from messaging.models import ProviderPacing

log = logging.getLogger("herald.sender")

_RESERVE = """
    UPDATE messaging_providerpacing
       SET next_slot = CASE WHEN next_slot > %s THEN next_slot ELSE %s END + %s
     WHERE provider = %s
 RETURNING next_slot
"""


def reserve_slot(provider: str, rate: float, now: float | None = None) -> float:
    """Reserve the provider's next send slot; returns its unix time (>= now)."""
    now = time.time() if now is None else now
    interval = 1.0 / rate
    with transaction.atomic():
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                # No WAL flush for this commit: a reservation lost in a database crash only
                # lets one slot be handed out twice afterwards, while waiting for the flush on
                # every send (one contended row) made reservations slower: p99 29 ms with it,
                # 16 ms without, at 100/s from 3 processes (bench/RESULTS-send.md).
                cursor.execute("SET LOCAL synchronous_commit TO OFF")
            cursor.execute(_RESERVE, [now, now, interval, provider])
            row = cursor.fetchone()
        if row is None:  # first use of this provider: create its row, then reserve
            ProviderPacing.objects.get_or_create(provider=provider)
            with connection.cursor() as cursor:
                cursor.execute(_RESERVE, [now, now, interval, provider])
                row = cursor.fetchone()
    return row[0] - interval


def provider_rate(provider: str) -> float:
    """Sends per second the senders pace `provider` at together (0: not paced)."""
    config = settings.SMS_PROVIDERS.get(provider, {})
    return float(config.get("RATE_LIMIT") or 0) * (1 - settings.SENDER_RATE_HEADROOM)


def leave_gap(provider: str) -> bool:
    """The provider throttled a send: take one slot that nobody uses. Returns whether it did.
    Best effort: a gap not left costs at most another 429, while an error here would leave the
    throttled message (certainly not sent) without its retry."""
    rate = provider_rate(provider)
    if rate <= 0:
        return False
    try:
        reserve_slot(provider, rate)
    except DatabaseError:
        log.warning("could not leave a gap after a throttled send", extra={"provider": provider})
        return False
    return True


def wait_for_slot(provider: str, rate: float) -> float:
    """Block until this sender may send to `provider`. Returns the seconds waited."""
    slot = reserve_slot(provider, rate)
    delay = slot - time.time()
    metrics.pacing_wait_seconds.labels(metrics.provider_label(provider)).observe(max(0.0, delay))
    if delay > 0:
        time.sleep(delay)
    return max(0.0, delay)
