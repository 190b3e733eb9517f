from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from messaging.services import clients


class Command(BaseCommand):
    help = "Create an API client. Prints the client's slug on the last line (scripts read it)."

    def add_arguments(self, parser):
        parser.add_argument("name", help="What the client is, e.g. 'Shop checkout'.")
        parser.add_argument("--slug", default="", help="Its id in URLs and commands.")
        parser.add_argument("--send-rate-limit", default="", help="e.g. 300/m (blank: setting)")
        parser.add_argument("--read-rate-limit", default="", help="e.g. 600/m (blank: setting)")

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
            client = clients.create_client(name, **self.client_options(options))
        except ValidationError as exc:
            if hasattr(exc, "error_dict"):
                problems = [f"{f}: {m}" for f, ms in exc.message_dict.items() for m in ms]
            else:
                problems = exc.messages
            raise CommandError("; ".join(problems)) from None
        self.stdout.write(client.slug)
