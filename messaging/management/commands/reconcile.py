import requests
from django.core.management.base import BaseCommand

from messaging.services.reconcile import reconcile


class Command(BaseCommand):
    help = (
        "Settle messages with no final status past their provider's receipt timeout: pull the "
        "provider's report API where one exists, else mark them unknown with the reason."
    )

    def add_arguments(self, parser):
        parser.add_argument("--limit", type=int, default=1000, help="per provider")

    def handle(self, *args, limit, **options):
        def progress(counts):
            if counts["checked"] % 100 == 0:
                self.stdout.write(f"  ...{counts['checked']} checked")

        with requests.Session() as session:
            counts = reconcile(session, limit=limit, progress=progress)
        self.stdout.write(
            "reconcile: {checked} checked, {pulled} settled from report APIs, "
            "{timed_out} marked unknown, {errors} report errors".format(**counts)
        )
