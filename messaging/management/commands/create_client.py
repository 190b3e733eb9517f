from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from messaging.services import callbacks, clients


class Command(BaseCommand):
    help = (
        "Create an API client. Prints the client's slug on the last line (scripts read it); "
        "with --callback-url, the slug and then the new signing secret alone on the last line."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="What the client is, e.g. 'Shop checkout'.")
        parser.add_argument("--slug", default="", help="Its id in URLs and commands.")
        parser.add_argument("--send-rate-limit", default="", help="e.g. 300/m (blank: setting)")
        parser.add_argument("--read-rate-limit", default="", help="e.g. 600/m (blank: setting)")
        parser.add_argument(
            "--callback-url", default="", help="https endpoint for its status callbacks"
        )

    def client_options(self, options) -> dict:
        """Keyword arguments for clients.create_client; add an option here and in
        add_arguments, nothing else."""
        return {
            "slug": options["slug"],
            "send_rate_limit": options["send_rate_limit"],
            "read_rate_limit": options["read_rate_limit"],
        }

    def handle(self, *args, name, **options):
        try:
            with transaction.atomic():  # an invalid callback URL creates no client either
                client = clients.create_client(name, **self.client_options(options))
                secret = None
                if options["callback_url"]:
                    secret = callbacks.configure_endpoint(client, options["callback_url"])
        except ValidationError as exc:
            if hasattr(exc, "error_dict"):
                problems = [f"{f}: {m}" for f, ms in exc.message_dict.items() for m in ms]
            else:
                problems = exc.messages
            raise CommandError("; ".join(problems)) from None
        self.stdout.write(client.slug)
        if secret:
            self.stdout.write(secret)
