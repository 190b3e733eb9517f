"""POST /api/v1/messages/: validation, idempotency, opt-outs, auth and rate limits."""

from datetime import timedelta

import pytest
from django.utils import timezone

from messaging.models import IdempotencyKey, Message, OptOut, StatusEvent
from messaging.services import clients
from tests.api import problems

pytestmark = pytest.mark.django_db
URL = "/api/v1/messages/"


def post(api, data, **headers):
    return api.post(URL, data, format="json", headers=headers)


def test_accepts_and_queues(api):
    r = post(api, {"to": "+44 7911 123457", "body": "Hello", "client_reference": "order-1",
                   "metadata": {"order": 1}})  # fmt: skip
    assert r.status_code == 202
    body = r.json()
    assert body["to"] == "+447911123457"  # normalised to E.164
    assert body["status"] == "queued"
    assert (body["encoding"], body["segments"]) == ("GSM-7", 1)
    message = Message.objects.get(pk=body["id"])
    assert (message.client, message.api_key) == (api.herald_client, api.api_key)
    assert message.created_by is None and message.client_reference == "order-1"
    assert message.next_attempt_at is not None
    event = StatusEvent.objects.get(message=message)
    assert (event.status, event.source, event.actor) == ("queued", "api", None)
    assert body["test"] is False
    assert [e["status"] for e in body["events"]] == ["queued"]


def test_encoding_and_segments_computed_before_sending(api):
    r = post(api, {"to": "+447911123457", "body": "Привет " * 20})
    assert (r.json()["encoding"], r.json()["segments"]) == ("UCS-2", 3)
    r = post(api, {"to": "+447911123457", "body": "{" * 80})  # extension chars count double
    assert (r.json()["encoding"], r.json()["segments"]) == ("GSM-7", 1)  # 160 septets
    r = post(api, {"to": "+447911123457", "body": "{" * 81})
    assert (r.json()["encoding"], r.json()["segments"]) == ("GSM-7", 2)  # 162 septets


@pytest.mark.parametrize(
    "data,field",
    [
        ({"to": "12", "body": "x"}, "to"),
        ({"to": "not a number", "body": "x"}, "to"),
        ({"body": "x"}, "to"),
        ({"to": "+447911123457", "body": "   "}, "body"),
        ({"to": "+447911123457"}, "body"),
        ({"to": "+447911123457", "body": "x" * 1601}, "body"),
        ({"to": "+447911123457", "body": "x", "provider": "nope"}, "provider"),
        ({"to": "+447911123457", "body": "x", "metadata": [1, 2]}, "metadata"),
        ({"to": "+447911123457", "body": "x", "from": "x" * 40}, "from"),
    ],
)
def test_field_errors(api, data, field):
    r = post(api, data)
    assert r.status_code == 400
    assert field in problems.fields(r), r.json()
    assert Message.objects.count() == 0


def test_send_at_in_the_past_is_refused_and_future_is_scheduled(api):
    past = (timezone.now() - timedelta(minutes=5)).isoformat()
    r = post(api, {"to": "+447911123457", "body": "x", "send_at": past})
    assert r.status_code == 400 and "send_at" in problems.fields(r)
    future = timezone.now() + timedelta(hours=1)
    r = post(api, {"to": "+447911123457", "body": "x", "send_at": future.isoformat()})
    assert r.status_code == 202
    message = Message.objects.get(pk=r.json()["id"])
    assert abs((message.next_attempt_at - future).total_seconds()) < 1


def test_opted_out_number_is_422(api):
    OptOut.objects.create(phone_number="+447911123457")
    r = post(api, {"to": "+447911123457", "body": "x"})
    assert r.status_code == 422
    assert problems.code(r) == "opted-out" and "to" in problems.fields(r)
    assert Message.objects.count() == 0


def test_idempotency_key_replays_and_conflicts(api):
    data = {"to": "+447911123457", "body": "once"}
    first = post(api, data, **{"Idempotency-Key": "k-1"})
    assert first.status_code == 202
    again = post(api, data, **{"Idempotency-Key": "k-1"})
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again["Idempotent-Replayed"] == "true"
    other = post(api, {**data, "body": "different"}, **{"Idempotency-Key": "k-1"})
    assert other.status_code == 409
    assert Message.objects.count() == 1
    assert IdempotencyKey.objects.count() == 1


def test_idempotency_keys_are_per_client(api, make_api):
    other = make_api(clients.create_client("Other"))
    data = {"to": "+447911123457", "body": "x"}
    a = post(api, data, **{"Idempotency-Key": "same"})
    b = post(other, data, **{"Idempotency-Key": "same"})
    assert a.status_code == b.status_code == 202
    assert a.json()["id"] != b.json()["id"]


def test_requires_a_key(client):
    r = client.post(URL, {"to": "+447911123457", "body": "x"}, content_type="application/json")
    assert r.status_code == 401
    r = client.post(
        URL, {"to": "+447911123457", "body": "x"}, content_type="application/json",
        headers={"Authorization": "Token wrong"},
    )  # fmt: skip
    assert r.status_code == 401


def test_rate_limit_answers_429_with_retry_after(api, settings):
    settings.API_SEND_RATE_LIMIT = "3/m"
    codes = [post(api, {"to": "+447911123457", "body": str(i)}).status_code for i in range(5)]
    assert codes == [202, 202, 202, 429, 429]
    r = post(api, {"to": "+447911123457", "body": "x"})
    assert int(r["Retry-After"]) > 0
    assert Message.objects.count() == 3


def test_rate_limit_is_per_client(api, make_api, settings):
    settings.API_SEND_RATE_LIMIT = "1/m"
    assert post(api, {"to": "+447911123457", "body": "a"}).status_code == 202
    assert post(api, {"to": "+447911123457", "body": "b"}).status_code == 429
    other = make_api(clients.create_client("Other"))
    assert post(other, {"to": "+447911123457", "body": "c"}).status_code == 202


def test_anonymous_callers_are_limited_per_ip(client, settings):
    settings.API_RATE_LIMIT = "2/m"
    codes = [client.get(URL).status_code for _ in range(3)]
    assert codes == [401, 401, 429]
