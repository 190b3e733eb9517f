import os
import signal
import socket
import time
import uuid

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import close_old_connections

from messaging import applier
from messaging.checks import refuse_open_sandbox
from messaging.services.heartbeat import Heartbeat


class Command(BaseCommand):
    help = (
        "Apply stored webhook requests in batches (store-then-apply; see messaging/applier.py). "
        "Several can run at once: rows are claimed with SKIP LOCKED. --once: drain, then exit."
    )

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="exit when nothing is pending")
        parser.add_argument("--batch-size", type=int, default=200, help="requests per batch")
        parser.add_argument("--max-seconds", type=float, help="stop after this long")

    def handle(self, *args, **options):
        refuse_open_sandbox()
        stopping = False

        def stop(signum, frame):  # finish the batch in hand, then exit
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        started = time.monotonic()
        total = applier.Drained()
        worker = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        heartbeat = Heartbeat(worker, "applier")
        while not stopping:
            close_old_connections()
            heartbeat.beat()  # at most every HEARTBEAT_INTERVAL seconds
            done = applier.apply_pending(options["batch_size"])
            total += done
            if options["max_seconds"] and time.monotonic() - started > options["max_seconds"]:
                break
            if done.rows == 0:
                if options["once"]:
                    break
                time.sleep(settings.SENDER_POLL_INTERVAL)
        heartbeat.stop()
        self.stdout.write(
            f"applier stopped after {total.rows} request(s), {total.reports} report(s), "
            f"{total.failed_rows} failed"
        )
