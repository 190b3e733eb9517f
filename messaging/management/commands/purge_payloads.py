from django.core.management.base import BaseCommand

from messaging.services.retention import purge_raw_payloads


class Command(BaseCommand):
    help = "Erase raw webhook bodies older than RAW_PAYLOAD_RETENTION_DAYS (run from cron)."

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, help="override RAW_PAYLOAD_RETENTION_DAYS")

    def handle(self, *args, days=None, **options):
        counts = purge_raw_payloads(days=days)
        self.stdout.write(
            "purge_payloads: {webhook_bodies_erased} webhook bodies erased, "
            "{sandbox_receipts_deleted} delivered sandbox receipts deleted".format(**counts)
        )
