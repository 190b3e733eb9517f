"""POST /api/v1/messages/{id}/cancel/: a queued or scheduled message, 409 otherwise."""

from datetime import timedelta

import pytest
from django.utils import timezone

from messaging.models import Message
from tests.api import problems

pytestmark = pytest.mark.django_db
URL = "/api/v1/messages/"


def send(api, **extra):
    r = api.post(URL, {"to": "+447911123457", "body": "x", **extra}, format="json")
    assert r.status_code == 202
    return r.json()["id"]


def test_cancel_a_scheduled_message(api):
    later = (timezone.now() + timedelta(hours=2)).isoformat()
    pk = send(api, send_at=later)
    r = api.post(f"{URL}{pk}/cancel/", {"reason": "customer changed plans"}, format="json")
    assert r.status_code == 200, r.json()
    message = Message.objects.get(pk=pk)
    assert message.completed_at is not None
    assert r.json()["status"] == message.status
    assert r.json()["events"][-1]["source"] == "api"
    assert "customer changed plans" in r.json()["events"][-1]["note"]


@pytest.mark.parametrize("status", ["sending", "sent", "delivered", "failed"])
def test_cancel_after_the_sender_took_it_is_409(api, status):
    pk = send(api)
    Message.objects.filter(pk=pk).update(status=status)
    r = api.post(f"{URL}{pk}/cancel/", {}, format="json")
    assert r.status_code == 409 and problems.code(r) == "not-cancellable"
    assert Message.objects.get(pk=pk).status == status


def test_cancel_twice_is_409(api):
    pk = send(api)
    assert api.post(f"{URL}{pk}/cancel/", {}, format="json").status_code == 200
    assert api.post(f"{URL}{pk}/cancel/", {}, format="json").status_code == 409


def test_cancel_an_unknown_id_is_404(api):
    r = api.post(f"{URL}00000000-0000-0000-0000-000000000000/cancel/", {}, format="json")
    assert r.status_code == 404 and problems.code(r) == "not-found"
