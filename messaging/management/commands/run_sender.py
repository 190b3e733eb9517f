import signal

from django.core.management.base import BaseCommand

from messaging.checks import refuse_open_sandbox
from messaging.sender import Sender


class Command(BaseCommand):
    help = "Claim due messages and send them (the worker). --once: send what is due, then exit."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="exit when nothing is due")
        parser.add_argument("--concurrency", type=int, help="threads (SENDER_CONCURRENCY)")
        parser.add_argument("--batch-size", type=int, help="messages per claim")
        parser.add_argument("--max-seconds", type=float, help="stop after this long")

    def handle(self, *args, **options):
        refuse_open_sandbox()
        sender = Sender(concurrency=options["concurrency"], batch_size=options["batch_size"])

        def stop(signum, frame):  # finish the batch in hand, then exit
            sender.stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        total = sender.run(once=options["once"], max_seconds=options["max_seconds"])
        self.stdout.write(f"sender {sender.owner} stopped after {total} message(s)")
