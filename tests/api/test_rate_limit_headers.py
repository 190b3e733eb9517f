"""RateLimit-Limit, -Remaining and -Reset on every answer, not only Retry-After on 429."""

import pytest

pytestmark = pytest.mark.django_db
URL = "/api/v1/messages/"


def test_headers_count_down_on_reads(api, settings):
    settings.API_RATE_LIMIT = "5/m"
    seen = []
    for _ in range(3):
        r = api.get(URL)
        assert r.status_code == 200
        seen.append((r["RateLimit-Limit"], r["RateLimit-Remaining"]))
        assert 0 <= int(r["RateLimit-Reset"]) <= 60
    assert seen == [("5", "4"), ("5", "3"), ("5", "2")]


def test_a_send_reports_the_tighter_of_its_two_limits(api, settings):
    settings.API_RATE_LIMIT = "100/m"
    settings.API_SEND_RATE_LIMIT = "3/m"
    r = api.post(URL, {"to": "+447911123457", "body": "x"}, format="json")
    assert (r["RateLimit-Limit"], r["RateLimit-Remaining"]) == ("3", "2")


def test_errors_carry_the_headers_too(api, settings):
    settings.API_RATE_LIMIT = "5/m"
    r = api.post(URL, {"to": "12", "body": "x"}, format="json")
    assert r.status_code == 400 and r["RateLimit-Limit"]
    r = api.get(f"{URL}00000000-0000-0000-0000-000000000000/")
    assert r.status_code == 404 and r["RateLimit-Remaining"]
