"""Every non-2xx answer under /api/ is an RFC 9457 problem document, whatever DEBUG is."""

import pytest
from django.test import Client as DjangoClient

from messaging.api.problems import TYPES
from messaging.models import Message
from tests.api import problems

pytestmark = pytest.mark.django_db
URL = "/api/v1/messages/"


@pytest.fixture(params=[False, True], ids=["DEBUG off", "DEBUG on"])
def debug(request, settings):
    settings.DEBUG = request.param
    return request.param


def test_unknown_url_is_a_404_problem(api, debug):
    r = api.get("/api/v1/nothing-here/")
    assert r.status_code == 404 and problems.code(r) == "not-found"


def test_unknown_message_is_a_404_problem(api, debug):
    r = api.get(f"{URL}00000000-0000-0000-0000-000000000000/")
    assert r.status_code == 404 and problems.code(r) == "not-found"


def test_other_method_is_a_405_problem_with_allow(api, debug):
    r = api.delete(URL)
    assert r.status_code == 405 and problems.code(r) == "method-not-allowed"
    assert "POST" in r["Allow"] and "GET" in r["Allow"]


def test_post_without_the_trailing_slash_works(api, debug):
    r = api.post(URL.rstrip("/"), {"to": "+447911123457", "body": "hi"}, format="json")
    assert r.status_code == 202, r.content[:300]
    assert Message.objects.filter(pk=r.json()["id"]).exists()
    r = api.post(URL.rstrip("/") + "/quote", {"to": "+447911123457", "body": "hi"}, format="json")
    assert r.status_code == 200


def test_an_oversized_body_is_a_413_problem_and_is_not_read(api, debug, settings):
    settings.API_MAX_BODY_BYTES = 1000
    r = api.post(URL, {"to": "+447911123457", "body": "x" * 5000}, format="json")
    assert r.status_code == 413 and problems.code(r) == "too-large"
    assert r.json()["limit"] == 1000
    assert Message.objects.count() == 0


def test_five_megabytes_is_a_413_problem(api, debug):
    r = api.post(URL, "x" * (5 * 1024 * 1024), content_type="application/json")
    assert r.status_code == 413 and problems.code(r) == "too-large"


def test_not_json_is_a_415_problem(api, debug):
    r = api.post(URL, "to=1", content_type="text/plain")
    assert r.status_code == 415 and problems.code(r) == "unsupported-media-type"


def test_malformed_json_is_a_400_problem(api, debug):
    r = api.post(URL, '{"to": ', content_type="application/json")
    assert r.status_code == 400 and problems.code(r) == "malformed-request"


def test_no_key_is_a_401_problem(debug):
    r = DjangoClient().get(URL)
    assert r.status_code == 401 and problems.code(r) == "not-authenticated"
    assert r.has_header("WWW-Authenticate")


def test_an_unexpected_error_is_a_500_problem_even_with_debug(api, debug, monkeypatch):
    from messaging.services import quotes

    def boom(**kwargs):
        raise RuntimeError("something broke")

    monkeypatch.setattr(quotes, "quote", boom)
    client = api
    client.raise_request_exception = False
    r = client.post(f"{URL}quote/", {"to": "+447911123457", "body": "x"}, format="json")
    assert r.status_code == 500 and problems.code(r) == "server-error"
    assert "something broke" not in r.content.decode()  # no internals leak


def test_rate_limited_is_a_429_problem_with_retry_after(api, settings):
    settings.API_RATE_LIMIT = "2/m"
    for _ in range(2):
        assert api.get(URL).status_code == 200
    r = api.get(URL)
    assert r.status_code == 429 and problems.code(r) == "rate-limited"
    assert int(r["Retry-After"]) >= 1
    assert r["RateLimit-Remaining"] == "0"


def test_validation_errors_name_each_field(api):
    r = api.post(URL, {"to": "12", "body": ""}, format="json")
    body = r.json()
    assert r.status_code == 400 and body["code"] == "validation-error"
    assert problems.fields(r) == {"to", "body"}
    assert all(e["detail"] for e in body["errors"])
    assert body["title"] and body["detail"] and body["type"] == "/api/v1/problems/validation-error"


@pytest.mark.parametrize("code", sorted(TYPES))
def test_every_problem_type_dereferences(client, code):
    r = client.get(f"/api/v1/problems/{code}")
    assert r.status_code == 200
    assert r.json()["type"] == f"/api/v1/problems/{code}" and r.json()["description"]


def test_an_unknown_problem_type_is_a_404_problem(client):
    r = client.get("/api/v1/problems/nope")
    assert r.status_code == 404 and problems.code(r) == "not-found"


def test_pages_outside_the_api_keep_html(client):
    r = client.get("/admin/nothing-here/")
    assert r.status_code in (302, 404) and "problem" not in r.get("Content-Type", "")
