"""The claim/send loop behind `manage.py run_sender`.

Each tick: recover expired leases, claim a batch of due messages, send them on a bounded thread
pool (one requests.Session per thread and provider), honour per-provider rate limits, post
any due sandbox receipts, and apply stored webhook requests (messaging.applier).

The send threads only make the requests (and record the rare refusals and errors themselves).
What the providers accepted is recorded by the loop's own thread, every send finished since the
last look in one transaction (services.sending.record_accepted): a thread is free for its next
request as soon as its response is in, and nine queries per message become a few per batch
(bench/RESULTS-send.md). A send that could not be recorded is kept and tried again on the next
pass, and the loop waits out a database outage rather than exit; if the process dies first, the
lease runs out and the message becomes `unknown`, never resent.
"""

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait

import requests
from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection
from django.utils import timezone

from messaging import applier, metrics
from messaging.providers.sandbox import deliver_due_receipts
from messaging.services import provider_health
from messaging.services.heartbeat import Heartbeat
from messaging.services.pacing import provider_rate, wait_for_slot
from messaging.services.sending import (
    Accepted,
    attempt,
    claim_due,
    record_accepted,
    recover_expired_leases,
)

log = logging.getLogger("herald.sender")


class RateLimiter:
    """Keeps every sender process, together, to each provider's RATE_LIMIT (sends per second):
    slots are reserved in the database, so the limit holds across processes and hosts. The
    slots are SENDER_RATE_HEADROOM under the limit: a send that leaves a few milliseconds late
    (a busy host) would otherwise land next to an on-time one, closer than the provider allows."""

    def wait(self, provider: str):
        rate = provider_rate(provider)
        if rate > 0:
            wait_for_slot(provider, rate)


class _Pool(ThreadPoolExecutor):
    """The send threads. Each keeps its own database connection between messages (opening one
    per message cost more than the rest of the bookkeeping: bench/RESULTS-send.md); shutdown
    closes them, so no idle connection outlives the sender."""

    def shutdown(self, wait=True, **kwargs):
        if wait and self._threads and not self._shutdown:
            self._close_connections(len(self._threads))
        super().shutdown(wait, **kwargs)

    def _close_connections(self, threads: int):
        barrier = threading.Barrier(threads)

        def close():  # the barrier puts exactly one of these on every thread
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait(timeout=30)
            connection.close()

        for future in [self.submit(close) for _ in range(threads)]:
            future.result()


class Sender:
    def __init__(self, concurrency=None, batch_size=None):
        self.concurrency = concurrency or settings.SENDER_CONCURRENCY
        self.batch_size = batch_size or settings.SENDER_BATCH_SIZE
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.limiter = RateLimiter()
        self._local = threading.local()
        self.pool = _Pool(self.concurrency, thread_name_prefix="sender")
        self.stopping = False
        self._inflight = set()  # futures of claimed messages not yet recorded
        self._unrecorded = []  # accepted sends whose recording failed, to try again
        self.heartbeat = Heartbeat(self.owner, "sender")
        self.receipts = applier.Drained()  # what the last tick's drain applied

    def session(self, provider: str) -> requests.Session:
        sessions = getattr(self._local, "sessions", None)
        if sessions is None:
            sessions = self._local.sessions = {}
        if provider not in sessions:
            sessions[provider] = requests.Session()
        return sessions[provider]

    def _send(self, message):
        close_old_connections()  # a broken or aged (CONN_MAX_AGE) connection is replaced
        try:
            self.limiter.wait(message.provider)
            outcome = attempt(message, self.session(message.provider), self.owner)
        except Exception:
            log.exception("send failed unexpectedly", extra={"message_id": str(message.pk)})
            return None
        if not isinstance(outcome, Accepted):
            _log_send(message, outcome)
        return outcome

    def tick(self, wait=True) -> int:
        """One pass. Returns how many messages were claimed. With wait=False the batch is left
        sending on the pool (run() overlaps the next claim with the end of this batch)."""
        close_old_connections()
        self.heartbeat.beat()  # at most every HEARTBEAT_INTERVAL seconds
        provider_health.flush()  # the last sends' outcomes reach the shared circuits
        recover_expired_leases()
        batch = claim_due(self.batch_size, self.owner)
        futures = [self.pool.submit(self._send, message) for message in batch]
        self._inflight.update(futures)
        deliver_due_receipts(self.session("sandbox"))
        # Stored receipts (store-then-apply), bounded per tick. run() polls again at once while
        # a claim finds a full batch, and waits APPLIER_GATHER_SECONDS after a partial one, so
        # batches grow with the receipt rate (each costs a fixed dozen round trips) and a
        # receipt waits at most one poll interval when the loop is idle.
        self.receipts = applier.drain(max_batches=5)
        if wait:
            futures_wait(futures)
            self._record_finished()
        return len(batch)

    def _record_finished(self):
        """Record, in one transaction, the accepted sends among the finished futures (and any
        that an earlier pass failed to record)."""
        done = {f for f in self._inflight if f.done()}
        self._inflight -= done
        self._unrecorded += [f.result() for f in done if isinstance(f.result(), Accepted)]
        if not self._unrecorded:
            return
        batch, self._unrecorded = self._unrecorded, []
        # No close_old_connections() here: tick() does it once per claim, and every call makes
        # the next query pay CONN_HEALTH_CHECKS' SELECT 1, which would be once per batch.
        try:
            statuses = record_accepted(batch)
        except Exception:
            log.exception("recording sends failed; one at a time", extra={"sends": len(batch)})
            close_old_connections()  # a connection the failure broke is replaced
            statuses = self._record_one_by_one(batch)
        for accepted in batch:
            if accepted.message.pk in statuses:
                _log_send(accepted.message, statuses[accepted.message.pk])

    def _record_one_by_one(self, batch) -> dict:
        """After a failed batch: one that cannot be written must not hold back the others.
        What still fails is kept for the next pass until its lease runs out; from then on
        lease recovery makes it `unknown` (and a late record would still make it `sent`)."""
        statuses, now = {}, timezone.now()
        for accepted in batch:
            try:
                statuses.update(record_accepted([accepted]))
            except Exception:
                message_id = str(accepted.message.pk)
                log.exception("recording a send failed", extra={"message_id": message_id})
                if accepted.message.lease_until and accepted.message.lease_until > now:
                    self._unrecorded.append(accepted)
        return statuses

    def _wait_for_free_slots(self):
        """Record what has finished, and block until no claimed message waits for a thread:
        every slot busy at most. The next claim then lands while the last sends of the previous
        batch are still in flight, so no slot idles through a batch's tail."""
        self._record_finished()
        while len(self._inflight) > self.concurrency:
            futures_wait(self._inflight, return_when=FIRST_COMPLETED)
            self._record_finished()

    def _finish_inflight(self, timeout=None):
        """Wait up to `timeout` (None: until all are done) for the sends in flight; record them."""
        if self._inflight:
            futures_wait(self._inflight, timeout=timeout)
        self._record_finished()

    def run(self, once=False, max_seconds=None):
        started = time.monotonic()
        total = 0
        while not self.stopping:
            try:
                claimed = self.tick(wait=False)
                total += claimed
                self._wait_for_free_slots()
            except DatabaseError:  # an outage: keep what is in hand and try again
                if once:
                    raise
                log.exception("database error in the send loop; retrying")
                close_old_connections()
                if max_seconds and time.monotonic() - started > max_seconds:
                    break
                time.sleep(settings.SENDER_POLL_INTERVAL)
                continue
            if once and claimed == 0:
                if self._inflight:  # what they requeue for now (failover) is still due
                    self._finish_inflight()
                    continue
                break
            if max_seconds and time.monotonic() - started > max_seconds:
                break
            if claimed < self.batch_size and not self.receipts.full:
                # Idle, or receipts trickling in: record the last sends while waiting.
                pause = (
                    settings.APPLIER_GATHER_SECONDS
                    if self.receipts.rows
                    else settings.SENDER_POLL_INTERVAL
                )
                if self._inflight:
                    self._finish_inflight(timeout=pause)
                else:
                    time.sleep(pause)
        self._finish_inflight()  # what is claimed is sent and recorded before exiting
        self.pool.shutdown(wait=True)
        self.heartbeat.stop()
        if self._unrecorded:  # the database is gone: their leases expire and they become unknown
            log.error("exiting with unrecorded sends", extra={"sends": len(self._unrecorded)})
        return total


def _log_send(message, status):
    metrics.send_outcome(message.provider, status)
    log.info(
        "send",
        extra={"message_id": str(message.pk), "provider": message.provider,
               "attempt": message.attempts, "status": str(status)},
    )  # fmt: skip
