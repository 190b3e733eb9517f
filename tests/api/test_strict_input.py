"""Strict input: JSON types, unknown fields, offsets, sender ids, Idempotency-Key length, and
nothing a column cannot store."""

import pytest

from messaging.models import Message
from tests.api import problems

pytestmark = pytest.mark.django_db
URL = "/api/v1/messages/"
OK = {"to": "+447911123457", "body": "Hello"}


def post(api, data, **headers):
    return api.post(URL, data, format="json", headers=headers)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"body": 123}, "body"),
        ({"to": 447911123457}, "to"),
        ({"body": ["x"]}, "body"),
        ({"body": None}, "body"),
        ({"client_reference": 5}, "client_reference"),
        ({"provider": True}, "provider"),
        ({"metadata": "x"}, "metadata"),
        ({"metadata": [1]}, "metadata"),
        ({"send_at": 1767225600}, "send_at"),
    ],
)
def test_json_types_are_checked(api, change, field):
    r = post(api, {**OK, **change})
    assert r.status_code == 400 and field in problems.fields(r), r.json()
    assert "JSON" in r.json()["errors"][0]["detail"] or field == "body"
    assert Message.objects.count() == 0


def test_unknown_fields_are_refused_by_name(api):
    r = post(api, {**OK, "recipient": "+447911123458", "priority": "high"})
    assert r.status_code == 400
    assert problems.fields(r) == {"recipient", "priority"}
    assert "Unknown field" in r.json()["errors"][0]["detail"]


def test_a_body_that_is_not_an_object_is_refused(api):
    r = api.post(URL, "[1, 2]", content_type="application/json")
    assert r.status_code == 400 and problems.code(r) == "validation-error"


@pytest.mark.parametrize("value", ["2030-01-01T09:00:00", "2030-01-01 09:00", "2030-01-01"])
def test_send_at_needs_an_offset(api, value):
    r = post(api, {**OK, "send_at": value})
    assert r.status_code == 400 and "send_at" in problems.fields(r)
    assert "offset" in r.json()["errors"][0]["detail"]


def test_send_at_with_an_offset_is_stored_in_utc(api):
    r = post(api, {**OK, "send_at": "2030-01-01T10:00:00+01:00"})
    assert r.status_code == 202
    message = Message.objects.get(pk=r.json()["id"])
    assert message.send_at.isoformat() == "2030-01-01T09:00:00+00:00"


def test_send_at_with_an_offset_postgresql_refuses_is_converted(api):
    r = post(api, {**OK, "send_at": "2030-01-01T10:00:00+16:38"})
    assert r.status_code == 202, r.json()


@pytest.mark.parametrize("sender", ["Herald", "HERALD 2", "A", "12345", "+447700900123"])
def test_valid_senders(api, sender):
    r = post(api, {**OK, "from": sender})
    assert r.status_code == 202, r.json()
    assert r.json()["from"] == sender


@pytest.mark.parametrize(
    ("sender", "says"),
    [
        ("ABCDEFGHIJKLMNOPQRSTUVW", "at most 11"),
        ("Herald Corp!", "at most 11"),
        ("+44", "E.164"),
        ("+4477009001231234567", "E.164"),
        ("Herald_Co", "at most 11"),
    ],
)
def test_invalid_senders_say_why(api, sender, says):
    r = post(api, {**OK, "from": sender})
    assert r.status_code == 400 and "from" in problems.fields(r)
    assert says in r.json()["errors"][0]["detail"]


def test_an_over_long_idempotency_key_is_refused_not_cut(api):
    r = post(api, OK, **{"Idempotency-Key": "k" * 256})
    assert r.status_code == 400 and problems.code(r) == "invalid-header"
    assert Message.objects.count() == 0
    assert post(api, OK, **{"Idempotency-Key": "k" * 255}).status_code == 202


@pytest.mark.parametrize(
    "raw",
    [
        '{"to": "+447911123457", "body": "a\\u0000b"}',
        '{"to": "+447911123457", "body": "a\\ud800b"}',
        '{"to": "+447911123457", "body": "x", "client_reference": "\\udfff"}',
        '{"to": "+447911123457", "body": "x", "metadata": {"k": "\\u0000"}}',
        '{"to": "+447911123457", "body": "x", "metadata": {"k": 1e999}}',
        '{"to": "+447911123457", "body": "x", "metadata": ' + '{"a": ' * 20 + "1" + "}" * 21,
    ],
)
def test_what_no_column_can_store_is_refused(api, raw):
    r = api.post(URL, raw, content_type="application/json")
    assert r.status_code == 400, r.content[:300]
    assert problems.code(r) == "validation-error"
    assert Message.objects.count() == 0


def test_metadata_over_4_kib_is_refused(api):
    r = post(api, {**OK, "metadata": {"k": "x" * 5000}})
    assert r.status_code == 400 and "metadata" in problems.fields(r)
