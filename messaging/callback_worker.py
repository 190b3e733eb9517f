"""The loop behind `manage.py run_callbacks` (the Procfile's `callbacks` process).

Each pass: claim what is due (services.callback_delivery.claim_due, leased, per-URL bounded) up
to the free threads, and hand each to a thread of a bounded pool, which signs, POSTs and records
it. The loop wakes as soon as any request finishes or after CALLBACK_POLL_INTERVAL, whichever is
first, so a new event waits at most one poll interval for a free thread.

A separate process rather than a part of `run_sender`: its requests go to endpoints that the
clients run (slow, hanging, hostile), its scaling and its failures are its own, and the sender's
measured pacing (bench/RESULTS-send.md) is untouched by it.
"""

import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import FIRST_COMPLETED
from concurrent.futures import wait as futures_wait

from django.conf import settings
from django.db import DatabaseError, close_old_connections

from messaging.callback_http import Transport
from messaging.sender import _Pool
from messaging.services import callback_delivery

log = logging.getLogger("herald.callbacks")

SWEEP_EVERY = 30.0  # seconds between give-up sweeps (expire_overdue)


class CallbackWorker:
    def __init__(self, concurrency=None):
        self.concurrency = concurrency or settings.CALLBACK_CONCURRENCY
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.pool = _Pool(self.concurrency, thread_name_prefix="callbacks")
        self._local = threading.local()
        self.inflight = {}  # future -> the URL it is posting to
        self.stopping = False
        self.attempts = 0
        self.min_claim = max(1, self.concurrency // 4)
        self._last_claim = 0.0

    def _deliver(self, callback):
        # No close_old_connections() per callback: with CONN_HEALTH_CHECKS every call costs the
        # next query a SELECT 1, a round trip per delivery. A connection that broke is replaced
        # after the failure it causes.
        transport = getattr(self._local, "transport", None)
        if transport is None:
            transport = self._local.transport = Transport()
        try:
            return callback_delivery.deliver(callback, transport, self.owner)
        except Exception:  # recorded nowhere: the lease runs out and it is sent again
            log.exception("callback delivery failed", extra={"event_id": callback.event_id})
            close_old_connections()
            return None

    def _reap(self):
        for future in [f for f in self.inflight if f.done()]:
            del self.inflight[future]
            if future.result() is not None:
                self.attempts += 1

    def tick(self) -> int:
        """Claim as many due callbacks as there are free threads. Returns how many. Under load
        a claim waits for a quarter of the threads to be free (or a poll interval): a claim per
        finished request would cost more queries than the request's own recording."""
        self._reap()
        room = self.concurrency - len(self.inflight)
        if room <= 0:
            return 0
        waited = time.monotonic() - self._last_claim
        if room < self.min_claim and waited < settings.CALLBACK_POLL_INTERVAL:
            return 0
        self._last_claim = time.monotonic()
        busy = Counter(self.inflight.values())
        claimed = callback_delivery.claim_due(self.owner, room, busy)
        for callback in claimed:
            self.inflight[self.pool.submit(self._deliver, callback)] = callback.url
        return len(claimed)

    def run(self, once=False, max_seconds=None) -> int:
        started = last_sweep = time.monotonic()
        swept = False
        while not self.stopping:
            try:
                close_old_connections()
                if not swept or time.monotonic() - last_sweep > SWEEP_EVERY:
                    callback_delivery.expire_overdue()
                    last_sweep, swept = time.monotonic(), True
                claimed = self.tick()
            except DatabaseError:  # an outage: what is in flight finishes; try again
                if once:
                    raise
                log.exception("database error in the callback loop; retrying")
                time.sleep(settings.CALLBACK_POLL_INTERVAL)
                continue
            if once and claimed == 0 and not self.inflight:
                break
            if max_seconds and time.monotonic() - started > max_seconds:
                break
            if self.inflight:
                futures_wait(
                    list(self.inflight), timeout=settings.CALLBACK_POLL_INTERVAL,
                    return_when=FIRST_COMPLETED,
                )  # fmt: skip
            elif claimed == 0:
                time.sleep(settings.CALLBACK_POLL_INTERVAL)
        futures_wait(list(self.inflight))  # what is claimed is attempted and recorded
        self._reap()
        self.pool.shutdown(wait=True)
        return self.attempts
