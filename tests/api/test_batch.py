"""POST /api/v1/messages/batch/: one text to many recipients, validated as a whole."""

import pytest

from messaging.models import IdempotencyKey, Message, MessageBatch, OptOut, StatusEvent
from tests.api import problems

pytestmark = pytest.mark.django_db
URL = "/api/v1/messages/batch/"


def batch(api, data, **headers):
    return api.post(URL, data, format="json", headers=headers)


def numbers(n, start=0):
    return [f"+44740012{i:04d}" for i in range(start, start + n)]


def test_templated_batch_is_created_in_one_go(api):
    data = {
        "body": "Hello {{name}}, order {{ order }} has shipped",
        "recipients": [
            {"to": "+447400120001", "client_reference": "o-1", "variables": {"name": "Ann",
                                                                             "order": 17}},
            {"to": "+447400120002", "variables": {"name": "Bo", "order": "A9"}},
        ],
        "metadata": {"campaign": "shipping"},
    }  # fmt: skip
    r = batch(api, data)
    assert r.status_code == 202, r.json()
    result = r.json()
    assert (result["recipients"], result["accepted"], result["opted_out"]) == (2, 2, [])
    assert [m["index"] for m in result["messages"]] == [0, 1]
    first = Message.objects.get(pk=result["messages"][0]["id"])
    assert first.body == "Hello Ann, order 17 has shipped"
    assert (first.client_reference, first.metadata, first.status) == (
        "o-1", {"campaign": "shipping"}, "queued",
    )  # fmt: skip
    assert Message.objects.get(pk=result["messages"][1]["id"]).body.startswith("Hello Bo")
    assert (
        StatusEvent.objects.filter(message__in=[m["id"] for m in result["messages"]]).count() == 2
    )
    assert MessageBatch.objects.get(pk=result["id"]).accepted == 2


def test_one_invalid_recipient_refuses_the_whole_batch(api):
    recipients = [{"to": n} for n in numbers(5)]
    recipients[3] = {"to": "12"}
    recipients[4] = {"to": "+447400120009", "variables": {}, "colour": "red"}
    r = batch(api, {"body": "Hi {{name}}", "recipients": recipients})
    assert r.status_code == 400
    fields = problems.fields(r)
    assert {"recipients/3/to", "recipients/4/colour", "recipients/0/variables"} <= fields
    assert Message.objects.count() == MessageBatch.objects.count() == 0


def test_partial_sends_the_valid_and_lists_the_invalid(api):
    recipients = [{"to": n} for n in numbers(3)] + [{"to": "not a number"}]
    r = batch(api, {"body": "Hi", "recipients": recipients, "partial": True})
    assert r.status_code == 202
    result = r.json()
    assert result["accepted"] == 3 and Message.objects.count() == 3
    assert result["invalid"][0]["index"] == 3
    assert result["invalid"][0]["errors"][0]["pointer"] == "#/recipients/3/to"


def test_partial_with_nothing_valid_is_a_400(api):
    r = batch(api, {"body": "Hi", "recipients": [{"to": "x"}], "partial": True})
    assert r.status_code == 400 and Message.objects.count() == 0


def test_opted_out_recipients_are_reported_not_sent(api):
    OptOut.objects.create(phone_number="+447400120001")
    r = batch(api, {"body": "Hi", "recipients": [{"to": n} for n in numbers(3)]})
    assert r.status_code == 202
    assert r.json()["opted_out"] == [{"index": 1, "to": "+447400120001"}]
    assert r.json()["accepted"] == 2
    assert not Message.objects.filter(to_number="+447400120001").exists()


def test_limits(api, settings):
    r = batch(api, {"body": "Hi", "recipients": []})
    assert r.status_code == 400 and "recipients" in problems.fields(r)
    r = batch(api, {"body": "Hi", "recipients": [{"to": n} for n in numbers(1001)]})
    assert r.status_code == 400 and "recipients" in problems.fields(r)
    assert "1000" in r.json()["errors"][0]["detail"]
    r = batch(api, {"body": "Hi", "recipients": [{"to": n} for n in numbers(1000)]})
    assert r.status_code == 202 and r.json()["accepted"] == 1000
    assert Message.objects.count() == 1000


def test_body_too_long_after_substitution_is_reported_for_that_recipient(api, settings):
    settings.MAX_BODY_CHARS = 20
    recipients = [{"to": "+447400120001", "variables": {"name": "Al"}},
                  {"to": "+447400120002", "variables": {"name": "A" * 30}}]  # fmt: skip
    r = batch(api, {"body": "Hi {{name}}", "recipients": recipients})
    assert r.status_code == 400 and problems.fields(r) == {"recipients/1/variables"}


def test_idempotent_batch(api):
    data = {"body": "Hi", "recipients": [{"to": n} for n in numbers(3)]}
    first = batch(api, data, **{"Idempotency-Key": "campaign-7"})
    again = batch(api, data, **{"Idempotency-Key": "campaign-7"})
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json() == first.json() and again["Idempotent-Replayed"] == "true"
    assert Message.objects.count() == 3 and IdempotencyKey.objects.count() == 1
    other = batch(api, {**data, "body": "Bye"}, **{"Idempotency-Key": "campaign-7"})
    assert other.status_code == 409 and problems.code(other) == "idempotency-conflict"


def test_strict_types_in_the_batch(api):
    r = batch(api, {"body": "Hi", "recipients": [{"to": "+447400120001"}], "partial": "yes"})
    assert r.status_code == 400 and "partial" in problems.fields(r)
    r = batch(api, {"body": "Hi", "recipients": "+447400120001"})
    assert r.status_code == 400 and "recipients" in problems.fields(r)
    r = batch(api, {"body": "Hi", "recipients": [{"to": 447400120001}]})
    assert r.status_code == 400 and "recipients/0/to" in problems.fields(r)
