"""The opt-out list in the admin: how each number got there (inbound keyword, provider error,
staff) with links, its history, search by number, and staff adding / removing with a required
reason recorded with the user, behind the model's own permissions."""

import pytest
from django.urls import reverse

from messaging.models import OptOut, OptOutChange
from messaging.services import optouts
from tests.admin.conftest import make_message

pytestmark = pytest.mark.django_db
LIST = reverse("admin:messaging_optout_changelist")
ADD = reverse("admin:messaging_optout_add")


@pytest.fixture
def listed():
    inbound = make_message(direction="inbound", status="received", body="STOP", client=None)
    optouts.apply_keyword("+447911123401", "Stop", source_message=inbound)
    failed = make_message(provider="twilio", status="rejected", error_code="21610")
    optouts.opt_out("+447911123402", reason="provider error 21610", source_message=failed)
    return {"inbound": inbound, "failed": failed}


def test_list_says_how_each_number_was_added_with_links(superuser_client, listed, staff):
    optouts.staff_opt_out("+447911123403", actor=staff, reason="asked by phone")
    html = superuser_client.get(LIST).content.decode()
    assert "+447911123401" in html and "inbound keyword <code>STOP</code>" in html
    assert reverse("admin:messaging_message_change", args=[listed["inbound"].pk]) in html
    assert "provider error 21610" in html
    assert reverse("admin:messaging_message_change", args=[listed["failed"].pk]) in html
    assert "staff (staff): asked by phone" in html
    assert "Times are shown in" in html


def test_list_is_one_query_per_page_whatever_its_length(superuser_client, listed, staff):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as few:
        superuser_client.get(LIST)
    for n in range(10):
        optouts.staff_opt_out(f"+4479111235{n:02d}", actor=staff, reason="x")
    with CaptureQueriesContext(connection) as many:
        superuser_client.get(LIST)
    assert len(many) == len(few)


def test_search_by_number_in_any_format(superuser_client, listed):
    response = superuser_client.get(LIST, {"q": "+44 7911 123402"})
    assert [o.phone_number for o in response.context["cl"].result_list] == ["+447911123402"]
    response = superuser_client.get(LIST, {"q": "0000"})
    assert list(response.context["cl"].result_list) == []


def test_history_of_a_number(superuser_client, listed, staff):
    optouts.staff_opt_in("+447911123401", actor=staff, reason="written consent")
    optouts.apply_keyword("+447911123401", "STOP")
    optout = OptOut.objects.get(phone_number="+447911123401")
    page = superuser_client.get(reverse("admin:messaging_optout_change", args=[optout.pk]))
    changes = page.context["changes"]
    assert [c.action for c in changes] == ["opt_out", "opt_in", "opt_out"]  # newest first
    assert changes[1].actor == staff and "written consent" in changes[1].reason
    assert b'id="herald-optout-history"' in page.content


def test_staff_add_needs_a_reason_and_records_the_user(make_staff):
    client = make_staff("view_optout", "add_optout")
    assert client.get(ADD).status_code == 200
    refused = client.post(ADD, {"phone_number": "+447911123404", "reason": "  "})
    assert refused.status_code == 200 and refused.context["form"].errors["reason"]
    assert not OptOut.objects.exists()
    done = client.post(ADD, {"phone_number": "447911123404", "reason": "complaint by email"})
    optout = OptOut.objects.get()
    assert done.status_code == 302
    assert done["Location"] == reverse("admin:messaging_optout_change", args=[optout.pk])
    change = OptOutChange.objects.get()
    assert (change.phone_number, change.action, change.actor) == (
        "+447911123404", "opt_out", client.user,
    )  # fmt: skip
    assert change.reason == "staff: complaint by email"


def test_staff_remove_needs_a_reason_and_records_the_user(make_staff, listed):
    client = make_staff("view_optout", "delete_optout")
    optout = OptOut.objects.get(phone_number="+447911123402")
    url = reverse("admin:messaging_optout_remove", args=[optout.pk])
    assert b"herald-optout-remove-form" in client.get(url).content
    client.post(url, {"post": "yes", "reason": ""})
    assert OptOut.objects.filter(pk=optout.pk).exists()
    assert client.post(url, {"post": "yes", "reason": "consent on file"}).status_code == 302
    assert not OptOut.objects.filter(pk=optout.pk).exists()
    change = OptOutChange.objects.filter(phone_number="+447911123402").first()  # newest
    assert (change.action, change.actor, change.reason) == (
        "opt_in", client.user, "staff: consent on file",
    )  # fmt: skip


def test_bulk_remove_action(superuser_client, listed):
    ids = list(OptOut.objects.values_list("pk", flat=True))
    confirm = superuser_client.post(LIST, {"action": "remove_numbers", "_selected_action": ids})
    assert confirm.status_code == 200 and len(confirm.context["numbers"]) == 2
    superuser_client.post(
        LIST,
        {"action": "remove_numbers", "_selected_action": ids, "post": "yes", "reason": "audit"},
    )
    assert not OptOut.objects.exists()


def test_permissions_are_the_opt_outs_own(make_staff, listed):
    optout = OptOut.objects.first()
    messages_only = make_staff("view_message")
    assert messages_only.get(LIST).status_code == 403
    viewer = make_staff("view_optout")
    assert viewer.get(LIST).status_code == 200
    assert viewer.get(ADD).status_code == 403
    url = reverse("admin:messaging_optout_remove", args=[optout.pk])
    assert viewer.post(url, {"post": "yes", "reason": "x"}).status_code == 403
    assert OptOut.objects.filter(pk=optout.pk).exists()
    # no raw delete that would bypass the history
    assert viewer.get(reverse("admin:messaging_optout_delete", args=[optout.pk])).status_code in (
        403,
        302,
    )
    assert OptOut.objects.filter(pk=optout.pk).exists()


def test_the_service_refuses_a_staff_change_without_reason(staff):
    with pytest.raises(ValueError):
        optouts.staff_opt_out("+447911123405", actor=staff, reason=" ")
    assert not OptOut.objects.exists()
