from django.core.management.base import BaseCommand

from messaging.services.retention import erase_bodies, purge_callbacks, purge_raw_payloads


class Command(BaseCommand):
    help = (
        "Daily retention (run from cron): erase message bodies and raw event payloads older "
        "than RETENTION_BODY_DAYS (or the client's retention_body_days), and raw webhook "
        "bodies older than RAW_PAYLOAD_RETENTION_DAYS, and finished status callbacks older "
        "than CALLBACK_RETENTION_DAYS. Batched; prints progress."
    )

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, help="override RAW_PAYLOAD_RETENTION_DAYS")
        parser.add_argument(
            "--body-days", type=int, help="override RETENTION_BODY_DAYS (clients' own stay)"
        )
        parser.add_argument("--batch-size", type=int, help="override RETENTION_BATCH_SIZE")
        parser.add_argument(
            "--callback-days", type=int, help="override CALLBACK_RETENTION_DAYS (0: keep all)"
        )

    def handle(self, *args, days=None, body_days=None, batch_size=None, callback_days=None,
               **options):  # fmt: skip
        bodies = erase_bodies(
            default_days=body_days, batch_size=batch_size, progress=self.stdout.write
        )
        self.stdout.write(
            "purge_payloads: {bodies_erased} message bodies erased, {event_payloads_erased} "
            "event payloads erased, {webhook_bodies_erased} of their webhook bodies erased".format(
                **bodies
            )  # fmt: skip
        )
        callbacks = purge_callbacks(
            days=callback_days, batch_size=batch_size, progress=self.stdout.write
        )
        self.stdout.write(
            "purge_payloads: {callbacks_deleted} finished callbacks deleted, with "
            "{callback_attempts_deleted} attempts".format(**callbacks)
        )
        # The raw payloads line stays the last one (scripts read it).
        counts = purge_raw_payloads(days=days)
        self.stdout.write(
            "purge_payloads: {webhook_bodies_erased} webhook bodies erased, "
            "{sandbox_receipts_deleted} delivered sandbox receipts deleted".format(**counts)
        )
