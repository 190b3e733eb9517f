"""The operator commands of issue 10, whose output other tools read: create_client prints the
slug on its last line, create_api_key the full key alone on its last line; create_demo makes the
demo login and a `demo` client with a live and a test key."""

import re
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from messaging.models import ApiKey, Client
from messaging.services import clients

pytestmark = pytest.mark.django_db


def run(*args) -> list:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue().splitlines()


def test_create_client_prints_its_slug_last():
    assert run("create_client", "Shop Checkout")[-1] == "shop-checkout"
    assert run("create_client", "Clinic", "--slug", "clinic-1")[-1] == "clinic-1"
    assert Client.objects.get(slug="clinic-1").name == "Clinic"
    with pytest.raises(CommandError, match="^slug: "):
        run("create_client", "Again", "--slug", "clinic-1")
    with pytest.raises(CommandError, match="send_rate_limit: .*not a rate"):
        run("create_client", "Bad", "--send-rate-limit", "fast")


@pytest.mark.parametrize(("flags", "kind"), [((), "live"), (("--test",), "test")])
def test_create_api_key_prints_the_full_key_alone_on_its_last_line(flags, kind):
    run("create_client", "Shop", "--slug", "shop")
    lines = run("create_api_key", "shop", "--name", "web", *flags)
    key = lines[-1]
    assert re.fullmatch(rf"hk_{kind}_[A-Za-z0-9_-]{{43}}", key)
    api_key = clients.authenticate(key)
    assert (api_key.client.slug, api_key.name, api_key.kind) == ("shop", "web", kind)
    assert not any(key in line for line in lines[:-1])  # earlier lines show the prefix only


def test_create_api_key_refuses_unknown_and_inactive_clients():
    with pytest.raises(CommandError, match="No client"):
        run("create_api_key", "nope", "--name", "x")
    clients.deactivate(clients.create_client("Gone", slug="gone"))
    with pytest.raises(CommandError, match="inactive"):
        run("create_api_key", "gone", "--name", "x")
    clients.create_client("Here", slug="here")
    with pytest.raises(CommandError, match="at most 100"):
        run("create_api_key", "here", "--name", "x" * 101)
    assert not ApiKey.objects.exists()


def test_create_demo_makes_the_login_and_a_demo_client_with_both_keys(client):
    out = "\n".join(run("create_demo"))
    live = re.search(r"live API key:\s+(hk_live_\S+)", out).group(1)
    test = re.search(r"test API key:\s+(hk_test_\S+)", out).group(1)
    assert get_user_model().objects.get(username="admin").is_superuser
    for key, kind in ((live, "live"), (test, "test")):
        api_key = clients.authenticate(key)
        assert (api_key.client.slug, api_key.kind) == ("demo", kind)
        r = client.get("/api/v1/messages/", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200
    # Run again (scripts/dev runs it at every start): new keys, the old demo keys revoked.
    out2 = "\n".join(run("create_demo"))
    assert live not in out2 and clients.authenticate(live) is None
    assert Client.objects.filter(slug="demo").count() == 1
    assert ApiKey.objects.filter(client__slug="demo", revoked_at__isnull=True).count() == 2


def test_create_client_with_a_callback_url_prints_the_secret_last(settings):
    settings.CALLBACK_ALLOW_PRIVATE_NETWORKS = False
    out = StringIO()
    call_command(
        "create_client", "Hooked", "--callback-url", "https://93.184.215.14/hook", stdout=out
    )
    slug, secret = out.getvalue().strip().splitlines()[-2:]
    client = Client.objects.get(slug=slug)
    assert slug == "hooked" and secret.startswith("whsec_") and client.callback_secret == secret
    assert client.callback_url == "https://93.184.215.14/hook"


def test_create_client_with_a_private_callback_url_creates_nothing(settings):
    settings.CALLBACK_ALLOW_PRIVATE_NETWORKS = False
    with pytest.raises(CommandError):
        call_command("create_client", "Inside", "--callback-url", "https://127.0.0.1/hook",
                     stdout=StringIO())  # fmt: skip
    assert not Client.objects.filter(slug="inside").exists()
