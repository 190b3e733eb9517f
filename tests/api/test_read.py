"""Reading messages: list with filters and cursor pagination, detail with events, resend,
and the OpenAPI schema served offline."""

from datetime import timedelta

import pytest
from django.utils import timezone

from messaging.models import Message, StatusEvent
from messaging.services import messages
from tests.api import problems

pytestmark = pytest.mark.django_db
URL = "/api/v1/messages/"


def make(to="+447911123457", status="queued", provider="sandbox", **fields):
    message = messages.create_outbound(to=to, body="hi", source="api", provider=provider)
    Message.objects.filter(pk=message.pk).update(status=status, **fields)
    message.refresh_from_db()
    return message


def test_list_filters(api):
    a = make(status="delivered", client_reference="r-1")
    b = make(to="+447911123450", status="failed")
    make(status="queued")
    ids = lambda r: {m["id"] for m in r.json()["results"]}  # noqa: E731
    assert ids(api.get(URL, {"status": "delivered"})) == {str(a.pk)}
    assert ids(api.get(URL, {"status": ["delivered", "failed"]})) == {str(a.pk), str(b.pk)}
    assert ids(api.get(URL, {"to": "+44 7911 123450"})) == {str(b.pk)}
    assert ids(api.get(URL, {"client_reference": "r-1"})) == {str(a.pk)}
    assert len(ids(api.get(URL, {"provider": "sandbox", "direction": "outbound"}))) == 3
    assert ids(api.get(URL, {"provider": "twilio"})) == set()
    later = (timezone.now() + timedelta(minutes=1)).isoformat()
    assert ids(api.get(URL, {"created_after": later})) == set()
    assert len(ids(api.get(URL, {"created_before": later}))) == 3
    assert api.get(URL, {"status": "bogus"}).status_code == 400


def test_cursor_pagination_walks_everything_once(api):
    made = {str(make().pk) for _ in range(7)}
    seen, url, pages = [], URL + "?page_size=3", 0
    while url:
        body = api.get(url).json()
        seen += [m["id"] for m in body["results"]]
        url, pages = body["next"], pages + 1
    assert pages == 3
    assert sorted(seen) == sorted(made) and len(seen) == len(set(seen))


def test_detail_includes_events(api):
    message = make()
    r = api.get(f"{URL}{message.pk}/")
    assert r.status_code == 200
    assert [e["status"] for e in r.json()["events"]] == ["queued"]
    assert api.get(f"{URL}00000000-0000-0000-0000-000000000000/").status_code == 404


@pytest.mark.parametrize("status", ["failed", "expired", "rejected", "unknown"])
def test_resend_links_both_ways(api, status):
    original = make(status=status)
    r = api.post(f"{URL}{original.pk}/resend/", {"reason": "customer asked"}, format="json")
    assert r.status_code == 202
    new = Message.objects.get(pk=r.json()["id"])
    assert new.resend_of == original and new.status == "queued"
    assert new.resend_reason == "customer asked" and new.api_key == api.api_key
    assert new.client == original.client
    original.refresh_from_db()
    assert original.status == status  # the original keeps its status
    assert api.get(f"{URL}{original.pk}/").json()["resends"] == [str(new.pk)]
    note = StatusEvent.objects.filter(message=original).latest("id")
    assert (note.applied, note.source) == (False, "api") and str(new.pk) in note.note


@pytest.mark.parametrize("status", ["queued", "sending", "sent", "delivered"])
def test_resend_refused_for_other_statuses(api, status):
    original = make(status=status)
    r = api.post(f"{URL}{original.pk}/resend/", {}, format="json")
    assert r.status_code == 409
    assert problems.code(r) == "not-resendable"
    assert Message.objects.count() == 1


def test_resend_to_unknown_provider_is_400(api):
    original = make(status="failed")
    r = api.post(f"{URL}{original.pk}/resend/", {"provider": "nope"}, format="json")
    assert r.status_code == 400 and "provider" in problems.fields(r)


def test_schema_and_docs_are_served_offline(client):
    schema = client.get("/api/v1/schema/", headers={"Accept": "application/json"})
    assert schema.status_code == 200
    doc = schema.json()
    assert "/api/v1/messages/" in doc["paths"]
    assert "/api/v1/messages/{id}/resend/" in doc["paths"]
    params = doc["paths"]["/api/v1/messages/"]["post"]["parameters"]
    assert any(p["name"] == "Idempotency-Key" for p in params)
    docs = client.get("/api/v1/docs/")
    assert docs.status_code == 200
    html = docs.content.decode()
    assert "swagger-ui" in html and "cdn" not in html.lower()


def test_resend_honours_idempotency_key(api):
    original = make(status="failed")
    url = f"{URL}{original.pk}/resend/"
    first = api.post(url, {"reason": "r"}, format="json", HTTP_IDEMPOTENCY_KEY="rs-1")
    again = api.post(url, {"reason": "r"}, format="json", HTTP_IDEMPOTENCY_KEY="rs-1")
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again["Idempotent-Replayed"] == "true"
    assert Message.objects.filter(resend_of=original).count() == 1
    other = api.post(url, {"reason": "other"}, format="json", HTTP_IDEMPOTENCY_KEY="rs-1")
    assert other.status_code == 409
    # Without a key an API client may resend again on purpose.
    assert api.post(url, {"reason": "r"}, format="json").status_code == 202
    assert Message.objects.filter(resend_of=original).count() == 2
