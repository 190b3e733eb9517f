"""The Send SMS page: the client it sends for, and the live quote beside the form (the API's
quote service behind send/quote.json)."""

import pytest

from messaging.models import Client, Message

pytestmark = pytest.mark.django_db
QUOTE = "/admin/messaging/message/send/quote.json"
SEND = "/admin/messaging/message/send/"


def test_quote_json_is_the_api_quote(superuser_client, settings):
    settings.SMS_PRICES = {"sandbox": {"GB": "0.04"}}
    r = superuser_client.get(QUOTE, {"to": "+447400123456", "body": "Café ‘quoted’ " * 6})
    assert r.status_code == 200
    q = r.json()
    assert (q["encoding"], q["segments"], q["ucs2_characters"]) == ("UCS-2", 2, ["‘", "’"])
    assert (q["provider"], q["country"], q["price"], q["currency"]) == ("sandbox", "GB", "0.08",
                                                                        "EUR")  # fmt: skip


def test_a_half_typed_number_still_gets_segments(superuser_client):
    q = superuser_client.get(QUOTE, {"to": "+44", "body": "hello"}).json()
    assert (q["encoding"], q["segments"], q["country"], q["price"]) == ("GSM-7", 1, "", None)


def test_an_empty_body_is_a_400_with_the_field(superuser_client):
    r = superuser_client.get(QUOTE, {"to": "+447400123456", "body": ""})
    assert r.status_code == 400 and "body" in r.json()["errors"]


def test_quote_needs_the_send_permission(client, django_user_model):
    user = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    client.force_login(user)
    assert client.get(QUOTE, {"body": "x"}).status_code == 403


def test_staff_choose_the_client_default_is_the_default_client(superuser_client):
    shop = Client.objects.create(name="Shop", slug="shop")
    page = superuser_client.get(SEND)
    assert page.context["form"]["client"].initial == Client.objects.default().pk
    r = superuser_client.post(SEND, {"client": shop.pk, "to": "+447911123457", "body": "hi",
                                     "provider": "sandbox"})  # fmt: skip
    assert r.status_code == 302
    assert Message.objects.get().client == shop


def test_the_send_form_checks_the_sender_like_the_api(superuser_client):
    r = superuser_client.post(SEND, {"client": Client.objects.default().pk, "to": "+447911123457",
                                     "body": "hi", "provider": "sandbox",
                                     "sender": "ABCDEFGHIJKLMNOP"})  # fmt: skip
    assert r.status_code == 200 and "at most 11" in r.content.decode()
    assert not Message.objects.exists()
