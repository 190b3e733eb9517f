"""The Client admin: create and deactivate clients, issue a key (shown once), revoke keys with a
confirmation, all behind Django permissions and recorded in the admin's history."""

import re

import pytest
from django.contrib.admin.models import LogEntry
from django.urls import reverse

from messaging.models import ApiKey, Client
from messaging.services import clients

pytestmark = pytest.mark.django_db
KEY = re.compile(r"hk_(live|test)_[A-Za-z0-9_-]{43}")


@pytest.fixture
def shop():
    return clients.create_client("Shop", slug="shop")


def change_url(client):
    return reverse("admin:messaging_client_change", args=[client.pk])


def create_key_url(client):
    return reverse("admin:messaging_client_create_key", args=[client.pk])


def revoke_url(key):
    return reverse("admin:messaging_client_revoke_key", args=[key.client_id, key.pk])


def test_create_a_client_in_the_admin(superuser_client):
    page = superuser_client.get(reverse("admin:messaging_client_add"))
    assert page.status_code == 200
    r = superuser_client.post(
        reverse("admin:messaging_client_add"),
        {
            "name": "Clinic reminders",
            "slug": "clinic",
            "send_rate_limit": "120/m",
            "read_rate_limit": "",
            "default_provider": "",
            "default_sender_id": "CLINIC",
            "allowed_providers": ["sandbox"],
            "owned_numbers": "+44 7911 123999\nCLINIC",
        },
    )
    assert r.status_code == 302, r.content.decode()[:2000]
    client = Client.objects.get(slug="clinic")
    assert client.is_active and client.send_rate_limit == "120/m"
    assert client.allowed_providers == ["sandbox"]
    assert client.owned_numbers == ["+44 7911 123999", "CLINIC"]


def test_client_form_refuses_bad_rates_and_a_default_it_may_not_use(superuser_client, settings):
    settings.SMS_PROVIDERS_ENABLED = ["sandbox", "twilio"]
    r = superuser_client.post(
        reverse("admin:messaging_client_add"),
        {"name": "X", "slug": "x", "send_rate_limit": "lots", "default_provider": "twilio",
         "allowed_providers": ["sandbox"], "owned_numbers": ""},
    )  # fmt: skip
    assert r.status_code == 200
    errors = r.context["adminform"].form.errors
    assert "send_rate_limit" in errors and "default_provider" in errors
    assert not Client.objects.filter(slug="x").exists()


def test_key_is_shown_once_and_only_its_prefix_afterwards(superuser_client, shop):
    page = superuser_client.get(change_url(shop))
    assert create_key_url(shop) in page.content.decode()
    form = superuser_client.get(create_key_url(shop))
    assert form.status_code == 200 and not KEY.search(form.content.decode())
    r = superuser_client.post(create_key_url(shop), {"name": "web servers", "kind": "test"})
    assert r.status_code == 200
    assert "no-store" in r["Cache-Control"] or "no-cache" in r["Cache-Control"]
    html = r.content.decode()
    [full] = {m.group(0) for m in KEY.finditer(html)}
    assert full.startswith("hk_test_") and 'id="herald-copy-key"' in html
    key = ApiKey.objects.get(client=shop)
    assert (key.name, key.kind, key.created_by.username) == ("web servers", "test", "staff")
    assert clients.authenticate(full) == key
    # The client's page lists it by prefix, never whole; nothing else shows it either.
    after = superuser_client.get(change_url(shop)).content.decode()
    assert key.prefix in after and full not in after and not KEY.search(after)
    assert not KEY.search(superuser_client.get(create_key_url(shop)).content.decode())
    history = LogEntry.objects.get(object_id=str(shop.pk)).get_change_message()
    assert key.prefix in history and full not in history


def test_revoke_asks_first_then_revokes(superuser_client, shop):
    key = clients.create_api_key(shop, name="old").api_key
    confirm = superuser_client.get(revoke_url(key))
    assert confirm.status_code == 200 and key.prefix in confirm.content.decode()
    key.refresh_from_db()
    assert key.revoked_at is None  # looking at the confirmation changes nothing
    r = superuser_client.post(revoke_url(key))
    assert r.status_code == 302 and r["Location"] == change_url(shop)
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert "revoked" in superuser_client.get(change_url(shop)).content.decode()
    again = superuser_client.post(revoke_url(key))  # twice: no error, first time kept
    assert again.status_code == 302
    assert ApiKey.objects.get(pk=key.pk).revoked_at == key.revoked_at


def test_a_key_of_another_client_cannot_be_revoked_through_this_one(superuser_client, shop):
    other = clients.create_client("Other")
    key = clients.create_api_key(other, name="theirs").api_key
    url = reverse("admin:messaging_client_revoke_key", args=[shop.pk, key.pk])
    assert superuser_client.post(url).status_code == 404
    key.refresh_from_db()
    assert key.revoked_at is None


def test_deactivate_and_reactivate_actions(superuser_client, shop):
    live = clients.create_api_key(shop, name="k").key
    url = reverse("admin:messaging_client_changelist")
    r = superuser_client.post(url, {"action": "deactivate_clients", "_selected_action": [shop.pk]})
    assert r.status_code == 302
    shop.refresh_from_db()
    assert not shop.is_active and clients.authenticate(live) is None
    assert create_key_url(shop) not in superuser_client.get(change_url(shop)).content.decode()
    refused = superuser_client.post(create_key_url(shop), {"name": "n", "kind": "live"})
    assert refused.status_code == 302
    assert ApiKey.objects.filter(client=shop).count() == 1
    superuser_client.post(url, {"action": "reactivate_clients", "_selected_action": [shop.pk]})
    shop.refresh_from_db()
    assert shop.is_active and clients.authenticate(live) is not None


def test_clients_cannot_be_deleted(superuser_client, shop):
    r = superuser_client.get(reverse("admin:messaging_client_delete", args=[shop.pk]))
    assert r.status_code == 403


def test_key_pages_need_manage_client(make_staff, shop):
    key = clients.create_api_key(shop, name="k").api_key
    viewer = make_staff("view_client", "view_apikey", "change_client")
    page = viewer.get(change_url(shop))
    assert page.status_code == 200
    html = page.content.decode()
    assert key.prefix in html  # can see keys and their last use
    assert create_key_url(shop) not in html and revoke_url(key) not in html
    assert viewer.get(create_key_url(shop)).status_code == 403
    assert viewer.post(create_key_url(shop), {"name": "n", "kind": "live"}).status_code == 403
    assert viewer.post(revoke_url(key)).status_code == 403
    key.refresh_from_db()
    assert key.revoked_at is None and ApiKey.objects.count() == 1

    manager = make_staff("view_client", "manage_client")
    html = manager.get(change_url(shop)).content.decode()
    assert create_key_url(shop) in html and revoke_url(key) in html
    assert manager.post(create_key_url(shop), {"name": "n", "kind": "live"}).status_code == 200
    assert manager.post(revoke_url(key)).status_code == 302


def test_client_pages_need_the_client_model_permissions(make_staff, shop):
    nobody = make_staff()
    assert nobody.get(reverse("admin:messaging_client_changelist")).status_code == 403
    assert nobody.get(change_url(shop)).status_code == 403
    viewer = make_staff("view_client")
    assert viewer.get(reverse("admin:messaging_client_changelist")).status_code == 200
    assert viewer.get(reverse("admin:messaging_client_add")).status_code == 403
    r = viewer.post(
        reverse("admin:messaging_client_changelist"),
        {"action": "deactivate_clients", "_selected_action": [shop.pk]},
    )
    shop.refresh_from_db()
    assert shop.is_active and r.status_code in (200, 302)


def test_client_list_counts_active_keys_in_one_query(
    superuser_client, django_assert_max_num_queries
):
    for i in range(5):
        client = clients.create_client(f"C{i}")
        clients.create_api_key(client, name="a")
        clients.revoke_api_key(clients.create_api_key(client, name="b").api_key)
    superuser_client.get(reverse("admin:messaging_client_changelist"))  # warm the session
    with django_assert_max_num_queries(8):
        page = superuser_client.get(reverse("admin:messaging_client_changelist"))
    assert page.status_code == 200
    counts = re.findall(r'<td class="field-active_keys">(\d+)</td>', page.content.decode())
    # Each of the five has one active key; the `default` client (migration 0005) has none.
    assert sorted(counts) == ["0"] + ["1"] * 5 and Client.objects.count() == 6
