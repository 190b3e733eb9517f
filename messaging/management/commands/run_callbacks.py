import signal

from django.core.management.base import BaseCommand

from messaging.callback_worker import CallbackWorker


class Command(BaseCommand):
    help = (
        "Deliver status callbacks to clients' endpoints (the `callbacks` process). Several can "
        "run at once: callbacks are leased with SKIP LOCKED. --once: deliver what is due, exit."
    )

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="exit when nothing is due")
        parser.add_argument("--concurrency", type=int, help="threads (CALLBACK_CONCURRENCY)")
        parser.add_argument("--max-seconds", type=float, help="stop after this long")

    def handle(self, *args, **options):
        worker = CallbackWorker(concurrency=options["concurrency"])

        def stop(signum, frame):  # finish the requests in flight, then exit
            worker.stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        attempts = worker.run(once=options["once"], max_seconds=options["max_seconds"])
        self.stdout.write(f"callbacks {worker.owner} stopped after {attempts} attempt(s)")
