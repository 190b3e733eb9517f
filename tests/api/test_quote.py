"""POST /api/v1/messages/quote/: what a send would be, without sending it."""

import pytest

from messaging.models import Message
from tests.api import problems

pytestmark = pytest.mark.django_db
URL = "/api/v1/messages/quote/"


def quote(api, data):
    return api.post(URL, data, format="json")


def test_gsm7_quote_without_a_price_table(api, settings):
    settings.SMS_PRICES = {}
    r = quote(api, {"to": "+447400123456", "body": "Hello"})
    assert r.status_code == 200
    assert r.json() == {
        "provider": "sandbox",
        "encoding": "GSM-7",
        "segments": 1,
        "characters": 5,
        "ucs2_characters": [],
        "country": "GB",
        "price_per_segment": None,
        "price": None,
        "currency": "",
    }
    assert Message.objects.count() == 0  # nothing is sent


def test_one_character_forcing_ucs2_is_named(api):
    body = "Your order ships tomorrow — thank you! " * 2  # 78 chars, an em dash each time
    r = quote(api, {"to": "+447400123456", "body": body}).json()
    assert (r["encoding"], r["segments"], r["ucs2_characters"]) == ("UCS-2", 2, ["—"])
    gsm = quote(api, {"to": "+447400123456", "body": body.replace("—", "-")}).json()
    assert (gsm["encoding"], gsm["segments"]) == ("GSM-7", 1)


def test_price_from_the_table_most_specific_first(api, settings):
    settings.SMS_PRICES = {"sandbox": {"GB": "0.035", "*": "0.05"}, "*": {"*": "0.09"}}
    settings.SMS_PRICE_CURRENCY = "EUR"
    gb = quote(api, {"to": "+447400123456", "body": "x" * 200}).json()  # 2 segments
    assert (gb["country"], gb["price_per_segment"], gb["price"], gb["currency"]) == (
        "GB", "0.035", "0.070", "EUR",
    )  # fmt: skip
    us = quote(api, {"to": "+12025550123", "body": "x"}).json()
    assert (us["country"], us["price"]) == ("US", "0.05")


def test_quote_validates_like_a_send(api):
    r = quote(api, {"to": "12", "body": "x", "colour": "red"})
    assert r.status_code == 400 and problems.fields(r) == {"to", "colour"}
    r = quote(api, {"to": "+447400123456", "body": "x", "provider": "nope"})
    assert r.status_code == 400 and "provider" in problems.fields(r)


def test_the_price_table_is_checked(settings):
    from messaging.pricing import check_table

    assert check_table({"sinch": {"GB": "0.03"}}) == []
    assert [e.id for e in check_table({"sinch": {"GB": "cheap"}})] == ["herald.E020"]
    assert [e.id for e in check_table({"sinch": "0.03"})] == ["herald.E020"]
    assert [e.id for e in check_table(["x"])] == ["herald.E020"]
