"""The claim/send loop behind `manage.py run_sender`.

Each tick: recover expired leases, claim a batch of due messages, send them on a bounded thread
pool (one requests.Session per thread and provider), honour per-provider rate limits, post
any due sandbox receipts, and apply stored webhook requests (messaging.applier).
"""

import logging
import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import requests
from django.conf import settings
from django.db import close_old_connections, connection

from messaging import applier
from messaging.providers.sandbox import deliver_due_receipts
from messaging.services.sending import claim_due, recover_expired_leases, send_one

log = logging.getLogger("herald.sender")


class RateLimiter:
    """A token bucket per provider, shared by this process's threads. With N sender processes,
    give each 1/N of the provider's rate (SENDER_PROCESSES) so together they stay under it."""

    def __init__(self):
        self._lock = threading.Lock()
        self._next = {}

    def wait(self, provider: str):
        config = settings.SMS_PROVIDERS.get(provider, {})
        rate = float(config.get("RATE_LIMIT") or 0)
        if rate <= 0:
            return
        rate /= max(1, int(os.environ.get("SENDER_PROCESSES", "1")))
        interval = 1.0 / rate
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next.get(provider, now))
            self._next[provider] = slot + interval
        if slot > now:
            time.sleep(slot - now)


class Sender:
    def __init__(self, concurrency=None, batch_size=None):
        self.concurrency = concurrency or settings.SENDER_CONCURRENCY
        self.batch_size = batch_size or settings.SENDER_BATCH_SIZE
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.limiter = RateLimiter()
        self._local = threading.local()
        self.pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="sender")
        self.stopping = False

    def session(self, provider: str) -> requests.Session:
        sessions = getattr(self._local, "sessions", None)
        if sessions is None:
            sessions = self._local.sessions = {}
        if provider not in sessions:
            sessions[provider] = requests.Session()
        return sessions[provider]

    def _send(self, message):
        try:
            self.limiter.wait(message.provider)
            status = send_one(message, self.session(message.provider), self.owner)
            log.info(
                "send",
                extra={"message_id": str(message.pk), "provider": message.provider,
                       "attempt": message.attempts, "status": str(status)},
            )  # fmt: skip
            return status
        except Exception:
            log.exception("send failed unexpectedly", extra={"message_id": str(message.pk)})
            return None
        finally:
            connection.close()  # threads must not leak database connections

    def tick(self) -> int:
        """One pass. Returns how many messages were claimed."""
        close_old_connections()
        recover_expired_leases()
        batch = claim_due(self.batch_size, self.owner)
        if batch:
            list(self.pool.map(self._send, batch))
        deliver_due_receipts(self.session("sandbox"))
        applier.drain(max_batches=5)  # stored receipts (store-then-apply), bounded per tick
        return len(batch)

    def run(self, once=False, max_seconds=None):
        started = time.monotonic()
        total = 0
        while not self.stopping:
            claimed = self.tick()
            total += claimed
            if once and claimed == 0:
                break
            if max_seconds and time.monotonic() - started > max_seconds:
                break
            if claimed < self.batch_size:
                time.sleep(settings.SENDER_POLL_INTERVAL)
        self.pool.shutdown(wait=True)
        return total
