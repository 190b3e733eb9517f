"""Per-client idempotency under concurrency, on real PostgreSQL: the same Idempotency-Key sent
by many threads at once creates one message per client (the unique (client, key) index decides
the race; the losers replay the winner's message), for sends and for resends alike."""

import pytest

from messaging.models import IdempotencyKey, Message
from messaging.services import clients, messages
from tests.conftest import key_client
from tests.test_concurrency_postgres import run_threads

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]
URL = "/api/v1/messages/"


def test_concurrent_sends_with_one_key_make_one_message_per_client(on_postgres, settings):
    settings.RATELIMIT_ENABLE = False
    keys = {}
    for slug in ("alpha", "beta"):
        client = clients.create_client(slug, slug=slug)
        keys[slug] = clients.create_api_key(client, name="k").key
    answers = []

    def post(slug):
        data = {"to": "+447911123457", "body": "once"}
        headers = {"Idempotency-Key": "same"}
        r = key_client(keys[slug]).post(URL, data, format="json", headers=headers)
        answers.append((slug, r.status_code, r.json()["id"]))

    run_threads(post, ["alpha", "beta"] * 8, threads=8)
    for slug in ("alpha", "beta"):
        mine = [a for a in answers if a[0] == slug]
        assert len(mine) == 8 and len({a[2] for a in mine}) == 1
        assert sorted(a[1] for a in mine) == [200] * 7 + [202]
        assert Message.objects.filter(client__slug=slug).count() == 1
    assert IdempotencyKey.objects.filter(key="same").count() == 2


def test_concurrent_resends_with_one_key_resend_once(on_postgres, settings):
    settings.RATELIMIT_ENABLE = False
    client = clients.create_client("alpha", slug="alpha")
    key = clients.create_api_key(client, name="k").key
    original = messages.create_outbound(to="+447911123450", body="x", source="api", client=client)
    Message.objects.filter(pk=original.pk).update(status="failed")
    answers = []

    def resend(_):
        r = key_client(key).post(f"{URL}{original.pk}/resend/", {"reason": "r"}, format="json",
                                 headers={"Idempotency-Key": "resend-once"})  # fmt: skip
        answers.append((r.status_code, r.json()["id"]))

    run_threads(resend, list(range(8)), threads=8)
    assert sorted(a[0] for a in answers) == [200] * 7 + [202]
    assert len({a[1] for a in answers}) == 1
    assert Message.objects.filter(resend_of=original).count() == 1
