from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from messaging.models import Client
from messaging.services import callbacks


class Command(BaseCommand):
    help = (
        "Set a client's status callback URL (https, public). When the client has no signing "
        "secret yet, one is created and printed alone on the last line (shown only this once)."
    )

    def add_arguments(self, parser):
        parser.add_argument("client_slug")
        parser.add_argument("url", nargs="?", help='the URL; "" switches callbacks off')
        parser.add_argument(
            "--rotate-secret", action="store_true",
            help="start a rotation: print a new secret; the current one keeps signing too",
        )  # fmt: skip
        parser.add_argument(
            "--retire-previous-secret", action="store_true",
            help="end a rotation: only the newest secret signs from now on",
        )  # fmt: skip

    def handle(self, *args, **options):
        try:
            client = Client.objects.get(slug=options["client_slug"])
        except Client.DoesNotExist:
            raise CommandError(f"No client with slug '{options['client_slug']}'.") from None
        if options["url"] is None and not (
            options["rotate_secret"] or options["retire_previous_secret"]
        ):
            raise CommandError("Give a URL, --rotate-secret or --retire-previous-secret.")
        secret = None
        if options["url"] is not None:
            try:
                secret = callbacks.configure_endpoint(client, options["url"])
            except ValidationError as exc:
                raise CommandError(" ".join(exc.messages)) from None
            self.stdout.write(
                f"Callbacks for {client.slug} go to {client.callback_url}."
                if client.callback_url
                else f"Callbacks for {client.slug} are off."
            )
        if options["retire_previous_secret"]:
            retired = callbacks.retire_previous_secret(client)
            self.stdout.write("Previous secret retired." if retired else "No previous secret.")
        if options["rotate_secret"]:
            self.stdout.write("New signing secret (the previous one still signs until retired):")
            secret = callbacks.rotate_secret(client)
        elif secret:
            self.stdout.write("Signing secret (shown once; verify callbacks with it):")
        if secret:
            self.stdout.write(secret)
