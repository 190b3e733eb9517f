"""Worker heartbeats: each sender and applier loop records that it is alive, at most every
HEARTBEAT_INTERVAL seconds, so /readyz and the metrics can tell when no worker is running."""

import contextlib
import logging
import time
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

from messaging.models import WorkerHeartbeat

log = logging.getLogger("herald.heartbeat")

# Rows of processes gone this long are deleted (each process start writes a new row).
FORGET_AFTER = timedelta(days=1)


class Heartbeat:
    def __init__(self, worker_id: str, kind: str):
        self.worker_id, self.kind = worker_id[:64], kind
        self.started_at = timezone.now()
        self._last = None  # monotonic time of the last write

    def beat(self, force=False) -> bool:
        """Record the heartbeat unless one was written less than HEARTBEAT_INTERVAL ago.
        Best effort: a database error here must not stop the loop (it is retried next time)."""
        recent = self._last is not None and (
            time.monotonic() - self._last < settings.HEARTBEAT_INTERVAL
        )
        if recent and not force:
            return False
        now = timezone.now()
        try:
            if self._last is None:  # once per process: forget long-dead workers
                WorkerHeartbeat.objects.filter(last_seen__lt=now - FORGET_AFTER).delete()
            WorkerHeartbeat.objects.update_or_create(
                worker_id=self.worker_id,
                defaults={"kind": self.kind, "last_seen": now, "started_at": self.started_at},
            )
        except DatabaseError:
            log.warning("could not record the heartbeat", extra={"kind": self.kind})
            return False
        self._last = time.monotonic()
        return True

    def stop(self):
        """A worker exiting cleanly removes its row, so readiness does not count it."""
        with contextlib.suppress(DatabaseError):
            WorkerHeartbeat.objects.filter(worker_id=self.worker_id).delete()


def latest(kind=None):
    """The most recent heartbeat time (of one kind, or of any), or None."""
    rows = WorkerHeartbeat.objects.all()
    if kind:
        rows = rows.filter(kind=kind)
    return rows.order_by("-last_seen").values_list("last_seen", flat=True).first()
