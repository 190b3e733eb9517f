from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from messaging.models import ApiKey, Client
from messaging.services import clients

DEMO_SLUG = "demo"


class Command(BaseCommand):
    help = (
        "Create (or reset) the demo admin login and a `demo` client, and print the login and a "
        "new live and test API key of that client. Development only."
    )

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")
        parser.add_argument("--password", default="admin")

    def handle(self, *args, username, password, **options):
        User = get_user_model()
        user, _ = User.objects.get_or_create(username=username)
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        client = Client.objects.filter(slug=DEMO_SLUG).first()
        if client is None:
            client = clients.create_client("Demo", slug=DEMO_SLUG)
        elif not client.is_active:
            clients.reactivate(client)
        # Keys are shown once, so each run issues new ones (the old demo keys are revoked).
        for old in client.api_keys.filter(name__startswith="demo-", revoked_at__isnull=True):
            clients.revoke_api_key(old)
        live = clients.create_api_key(client, name="demo-live", kind=ApiKey.Kind.LIVE)
        test = clients.create_api_key(client, name="demo-test", kind=ApiKey.Kind.TEST)
        self.stdout.write(f"admin login:   {username} / {password}")
        self.stdout.write(f"API client:    {client.slug}")
        self.stdout.write(f"live API key:  {live.key}")
        self.stdout.write(f"test API key:  {test.key}  (always the sandbox)")
