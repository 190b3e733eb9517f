"""Staff side of callbacks: the admin pages (list with attempts, filters, replay behind its
permission, endpoint health, the message page's callbacks) and `manage.py set_callback`."""

from html import escape
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from standardwebhooks import Webhook

from messaging.models import Callback, CallbackAttempt, CallbackEndpoint, Client
from messaging.services import messages
from tests.admin.conftest import make_staff, superuser_client  # noqa: F401 (fixtures)
from tests.callbacks.conftest import drain, make_client, running_receiver

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("local_callbacks")]


def cancelled(client, n=0):
    return messages.cancel(messages.create_outbound(to=f"+4479111{n:05d}", body="x",
                                                    source="api", client=client))  # fmt: skip


@pytest.fixture
def delivered(receiver):
    client, _ = make_client("acme", receiver.url())
    message = cancelled(client)
    drain()
    return message


def action_names(response):
    form = response.context["action_form"]
    return [] if form is None else [value for value, _ in form.fields["action"].choices]


def test_callbacks_list_filters_and_attempts(make_staff, delivered):  # noqa: F811
    staff = make_staff("view_callback")
    url = reverse("admin:messaging_callback_changelist")
    page = staff.get(url)
    assert page.status_code == 200
    callback = Callback.objects.get()
    assert callback.event_id.encode() in page.content
    for query in ("?state__exact=delivered", "?event_type__exact=message.status",
                  f"?client__id__exact={callback.client_id}"):  # fmt: skip
        assert callback.event_id.encode() in staff.get(url + query).content
    assert callback.event_id.encode() not in staff.get(url + "?state__exact=failed").content
    detail = staff.get(reverse("admin:messaging_callback_change", args=[callback.pk]))
    assert detail.status_code == 200
    attempt = CallbackAttempt.objects.get()
    assert escape(attempt.response_excerpt).encode() in detail.content  # the answer's bytes
    assert "replay_selected" not in action_names(page)  # no permission, no action


def test_replay_needs_its_permission_and_records_who(make_staff, delivered, receiver):  # noqa: F811
    callback = Callback.objects.get()
    url = reverse("admin:messaging_callback_changelist")
    form = {"action": "replay_selected", "_selected_action": [callback.pk]}
    viewer = make_staff("view_callback")
    viewer.post(url, form)
    callback.refresh_from_db()
    assert callback.replay_requested_by is None  # refused silently, as Django does
    replayer = make_staff("view_callback", "replay_callback")
    assert "replay_selected" in action_names(replayer.get(url))
    replayer.post(url, form)
    drain()
    assert [a.replayed_by for a in CallbackAttempt.objects.order_by("id")] == [None, replayer.user]
    first, again = receiver.wait_for(2)
    assert first.headers["webhook-id"] == again.headers["webhook-id"]


def test_message_page_shows_its_callbacks(superuser_client, delivered):  # noqa: F811
    page = superuser_client.get(reverse("admin:messaging_message_change", args=[delivered.pk]))
    assert page.status_code == 200
    assert b'id="herald-callbacks"' in page.content
    assert Callback.objects.get().event_id.encode() in page.content
    assert b"200</strong>" in page.content


def test_endpoint_health_shows_success_rate_and_circuit(superuser_client, settings):  # noqa: F811
    settings.CALLBACK_CIRCUIT_THRESHOLD = 2
    settings.CALLBACK_BACKOFF_BASE = 60
    with running_receiver(plan=lambda n, p: (200 if n == 1 else 500, 0, {})) as r:
        client, _ = make_client("flaky", r.url())
        for n in range(3):
            cancelled(client, n)
        drain()
    make_client("quiet", "")  # no URL, no callbacks: not listed
    page = superuser_client.get(reverse("admin:messaging_callbackhealth_changelist"))
    assert page.status_code == 200
    row = page.content.decode()
    assert "flaky" in row and "quiet" not in row
    assert "33% of 3" in row and ">open<" in row
    assert CallbackEndpoint.objects.get().circuit == "open"
    endpoints = superuser_client.get(reverse("admin:messaging_callbackendpoint_changelist"))
    assert endpoints.status_code == 200 and r.url().encode() in endpoints.content


def test_set_callback_prints_the_new_secret_alone_on_its_last_line(receiver):
    Client.objects.create(name="Acme", slug="acme")
    out = StringIO()
    call_command("set_callback", "acme", receiver.url(), stdout=out)
    secret = out.getvalue().splitlines()[-1]
    assert secret.startswith("whsec_") and secret == Client.objects.get(slug="acme").callback_secret
    Webhook(secret)  # a valid Standard Webhooks secret
    again = StringIO()
    call_command("set_callback", "acme", receiver.url("/other"), stdout=again)
    assert "whsec_" not in again.getvalue()  # kept, not shown again
    assert Client.objects.get(slug="acme").callback_url == receiver.url("/other")

    rotated = StringIO()
    call_command("set_callback", "acme", "--rotate-secret", stdout=rotated)
    new = rotated.getvalue().splitlines()[-1]
    acme = Client.objects.get(slug="acme")
    assert (acme.callback_secret, acme.callback_secret_previous) == (new, secret)
    call_command("set_callback", "acme", "--retire-previous-secret", stdout=StringIO())
    assert Client.objects.get(slug="acme").callback_secret_previous == ""


def test_set_callback_refusals(settings):
    settings.CALLBACK_ALLOW_PRIVATE_NETWORKS = False
    Client.objects.create(name="Acme", slug="acme")
    with pytest.raises(CommandError, match="No client"):
        call_command("set_callback", "nobody", "https://example.com/")
    with pytest.raises(CommandError, match="not a public address"):
        call_command("set_callback", "acme", "https://127.0.0.1/hook")
    with pytest.raises(CommandError, match="https"):
        call_command("set_callback", "acme", "http://example.com/hook")
    assert Client.objects.get(slug="acme").callback_url == ""
