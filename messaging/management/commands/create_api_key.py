from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from messaging.models import ApiKey, Client
from messaging.services import clients


class Command(BaseCommand):
    help = (
        "Create an API key for a client. The full key is printed alone on the last line, once: "
        "Herald stores only its hash."
    )

    def add_arguments(self, parser):
        parser.add_argument("client", metavar="CLIENT_SLUG")
        parser.add_argument("--name", required=True, help="What the key is for, e.g. 'web-1'.")
        parser.add_argument(
            "--test", action="store_true", help="A test key: its messages always use the sandbox."
        )

    def handle(self, *args, client, name, test, **options):
        try:
            owner = Client.objects.get(slug=client)
        except Client.DoesNotExist:
            raise CommandError(f"No client with slug '{client}'.") from None
        if not owner.is_active:
            raise CommandError(f"Client '{client}' is inactive: its keys would be refused.")
        kind = ApiKey.Kind.TEST if test else ApiKey.Kind.LIVE
        try:
            issued = clients.create_api_key(owner, name=name, kind=kind)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        self.stdout.write(f"{kind} key {issued.api_key.prefix}… for {owner.slug} ({name}):")
        self.stdout.write(issued.key)
