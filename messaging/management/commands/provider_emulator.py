import time

from django.core.management.base import BaseCommand

from devtools.emulator.base import Emulator, Faults


class Command(BaseCommand):
    help = (
        "Serve every provider's API locally in its real wire format and post signed receipts "
        "back to Herald's webhooks. Point <PROVIDER>_BASE_URL at it."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8025)
        parser.add_argument("--webhook-base", help="Herald's URL (default PUBLIC_BASE_URL)")
        parser.add_argument("--receipt-delay", type=float, default=1.0, help="seconds")
        parser.add_argument("--latency-ms", type=float, default=0.0)
        parser.add_argument("--rate-429", type=float, default=0.0, help="share of requests")
        parser.add_argument("--rate-5xx", type=float, default=0.0, help="share of requests")
        parser.add_argument("--rate-timeout", type=float, default=0.0, help="share of requests")
        parser.add_argument(
            "--rate-limit",
            action="append",
            default=[],
            metavar="PROVIDER=PER_SECOND",
            help="answer 429 above this rate, e.g. --rate-limit sinch=30",
        )

    def handle(self, *args, **options):
        limits = {}
        for item in options["rate_limit"]:
            name, _, rate = item.partition("=")
            limits[name] = float(rate)
        emulator = Emulator(
            host=options["host"],
            port=options["port"],
            webhook_base=options["webhook_base"],
            receipt_delay=options["receipt_delay"],
            faults=Faults(
                latency_ms=options["latency_ms"],
                rate_429=options["rate_429"],
                rate_5xx=options["rate_5xx"],
                rate_timeout=options["rate_timeout"],
                rate_limit=limits,
            ),
        )
        emulator.start()
        self.stdout.write(
            f"provider emulator on {emulator.url} for {', '.join(sorted(emulator.providers))}; "
            f"receipts to {emulator.webhook_base}"
        )
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            emulator.stop()
