"""The routing table and the route decision (issue 16, item 1)."""

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.utils import timezone

from messaging.checks import _route_errors
from messaging.models import Client, Message, ProviderHealth, Route, StatusEvent
from messaging.services import messages, routing
from messaging.services.routing import Candidate, choose

pytestmark = pytest.mark.django_db

GB = "+447700900123"
FR = "+33612345678"


# --- parsing ---


def test_parse_routes():
    table = routing.parse_routes("gb: sinch 70, infobip 30; +4477: infobip\n*: vonage-sms 100")
    assert table == {
        "GB": [("sinch", 70), ("infobip", 30)],
        "+4477": [("infobip", 100)],
        "*": [("vonage-sms", 100)],
    }
    assert routing.parse_routes("") == {}


@pytest.mark.parametrize(
    "text, error",
    [
        ("GB sinch 70", "is not 'destination: provider weight"),
        ("XX: sinch 70", "is not a destination"),
        ("GB: sinch seventy", "must be a whole number"),
        ("GB: sinch -1", "must not be negative"),
        ("GB: sinch 0", "weight above 0"),
        ("GB: sinch 1, sinch 2", "listed twice"),
        ("GB: sinch 1; GB: infobip 1", "listed twice"),
        ("GB: ", "at least one provider"),
        ("GB: sinch 1 2", "is not 'provider weight'"),
    ],
)
def test_parse_routes_refuses(text, error):
    with pytest.raises(ValueError, match=error):
        routing.parse_routes(text)


def test_check_reports_bad_and_unknown_routes(four_providers):
    four_providers.SMS_ROUTES = "GB: sinch seventy"
    [error] = _route_errors()
    assert error.id == "herald.E013" and "SMS_ROUTES does not parse" in error.msg
    four_providers.SMS_ROUTES = "GB: sinch 70, twilio 30"
    [error] = _route_errors()
    assert (error.id, error.msg) == (
        "herald.E014",
        "SMS_ROUTES names 'twilio', which is not enabled.",
    )
    four_providers.SMS_ROUTES = "GB: sinch 70, infobip 30; *: vonage-sms"
    assert _route_errors() == []


def test_check_runs_the_route_rules(settings):
    settings.SMS_ROUTES = "GB: nobody 1"
    with pytest.raises(SystemCheckError, match=r"herald.E014.*'nobody'"):
        call_command("check")


def test_route_row_is_validated():
    with pytest.raises(ValidationError, match="is not a destination"):
        Route(destination="England", providers="sinch 1").full_clean()
    with pytest.raises(ValidationError, match="weight above 0"):
        Route(destination="GB", providers="sinch 0").full_clean()
    route = Route(destination="gb", providers="sinch 70, infobip 30")
    route.full_clean()
    assert route.destination == "GB"


# --- the pure choice ---


def test_choose_is_deterministic_and_weighted():
    cands = [Candidate("sinch", 70), Candidate("infobip", 30)]
    assert choose(cands, 0.0)[0] == "sinch"
    assert choose(cands, 0.699)[0] == "sinch"
    assert choose(cands, 0.70)[0] == "infobip"
    assert choose(cands, 0.999)[0] == "infobip"
    assert [choose(cands, r / 1000)[0] for r in range(1000)].count("sinch") == 700
    assert choose(cands, 0.5) == choose(cands, 0.5)


def test_choose_skips_unavailable_and_demoted_weighs_less():
    open_ = [Candidate("sinch", 70, state="open", available=False), Candidate("infobip", 30)]
    assert choose(open_, 0.0) == ("infobip", "the only available provider with a weight")
    demoted = [Candidate("sinch", 70, demoted=True, factor=0.1), Candidate("infobip", 30)]
    picks = [choose(demoted, r / 1000)[0] for r in range(1000)]
    assert picks.count("sinch") == 190  # 7 of 37 weight units: rolls below 0.18919
    standby = [Candidate("sinch", 100, available=False), Candidate("infobip", 0)]
    assert choose(standby, 0.3) == ("infobip", "standby: no provider with a weight is available")
    none = [Candidate("sinch", 30, available=False), Candidate("infobip", 70, available=False)]
    assert choose(none, 0.1)[0] == "infobip"


# --- the table's layers ---


def test_prefix_beats_country_beats_default(four_providers):
    four_providers.SMS_ROUTES = "GB: sinch; +4477009: infobip; *: vonage-sms"
    assert routing.resolve(GB)[0:2] == ("+4477009", "SMS_ROUTES")
    assert routing.resolve("+442071838750")[0] == "GB"
    assert routing.resolve(FR)[0] == "*"


def test_no_table_is_the_default_with_fallbacks_as_standbys(four_providers):
    four_providers.SMS_FALLBACK_PROVIDERS = ["sinch"]
    assert routing.resolve(GB) == ("*", "SMS_DEFAULT_PROVIDER", [("sandbox", 100), ("sinch", 0)])


def test_route_rows_override_settings_and_clients_override_both(four_providers):
    four_providers.SMS_ROUTES = "GB: sinch; *: vonage-sms"
    acme = Client.objects.create(name="Acme", slug="acme")
    Route.objects.create(destination="GB", providers="infobip 100")
    assert routing.resolve(GB, acme) == ("GB", "route", [("infobip", 100)])
    Route.objects.create(client=acme, destination="*", providers="sandbox 100")
    assert routing.resolve(GB, acme) == ("*", "client route", [("sandbox", 100)])
    other = Client.objects.create(name="Other", slug="other", default_provider="sinch")
    # the client's default provider is its `*`: a global country route still wins over it
    assert routing.resolve(GB, other)[1] == "route"
    assert routing.resolve(FR, other) == ("*", "client default provider", [("sinch", 100)])


def test_allowed_providers_narrow_the_route(four_providers):
    four_providers.SMS_ROUTES = "GB: sinch 70, infobip 30"
    client = Client.objects.create(name="Narrow", slug="narrow", allowed_providers=["infobip"])
    decision = routing.decide(GB, client, roll=0.0)
    assert decision.chosen == "infobip"
    assert decision.excluded == [{"provider": "sinch", "reason": "not allowed for the client"}]


def test_open_circuit_is_skipped(four_providers):
    four_providers.SMS_ROUTES = "GB: sinch 70, infobip 30"
    ProviderHealth.objects.create(provider="sinch", state="open", state_since=timezone.now())
    decision = routing.decide(GB, roll=0.0)
    assert decision.chosen == "infobip"
    assert [(c.provider, c.state, c.available) for c in decision.candidates] == [
        ("sinch", "open", False),
        ("infobip", "closed", True),
    ]


# --- the timeline ---


def test_the_decision_is_on_the_timeline(four_providers):
    four_providers.SMS_ROUTES = "GB: sinch 70, infobip 30"
    routing._rng.seed(1)
    message = messages.create_outbound(to=GB, body="hi", source="api")
    assert message.routed
    event = StatusEvent.objects.get(message=message)
    route = event.raw_payload["route"]
    assert route["destination"] == "GB" and route["table"] == "SMS_ROUTES"
    assert [(c["provider"], c["weight"], c["state"]) for c in route["candidates"]] == [
        ("sinch", 70, "closed"),
        ("infobip", 30, "closed"),
    ]
    assert route["chosen"] == message.provider
    assert message.provider == ("sinch" if route["roll"] < 0.7 else "infobip")
    assert event.note.startswith("accepted; route GB (SMS_ROUTES: sinch 70, infobip 30) -> ")


def test_a_named_provider_is_not_routed(four_providers):
    four_providers.SMS_ROUTES = "GB: sinch 70, infobip 30"
    ProviderHealth.objects.create(provider="vonage-sms", state="open", state_since=timezone.now())
    message = messages.create_outbound(to=GB, body="hi", source="api", provider="vonage-sms")
    assert (message.provider, message.routed) == ("vonage-sms", False)
    event = StatusEvent.objects.get(message=message)
    assert (event.note, event.raw_payload) == ("accepted", None)


def test_resend_of_a_routed_message_is_routed_again(four_providers):
    four_providers.SMS_ROUTES = "GB: sinch 100"
    original = messages.create_outbound(to=GB, body="hi", source="api")
    Message.objects.filter(pk=original.pk).update(status="failed")
    original.refresh_from_db()
    four_providers.SMS_ROUTES = "GB: infobip 100"
    again = messages.resend(original, source="admin")
    assert (again.provider, again.routed) == ("infobip", True)
    pinned = messages.resend(original, source="admin", provider="vonage-sms", repeat=True)
    assert (pinned.provider, pinned.routed) == ("vonage-sms", False)


def test_the_admin_send_form_routes_unless_a_provider_is_chosen(four_providers, admin_client):
    from django.urls import reverse

    four_providers.SMS_ROUTES = "GB: infobip 100"
    send = reverse("admin:messaging_message_send")
    page = admin_client.get(send).content.decode()
    assert '<option value="" selected>Route (by destination and health)</option>' in page
    london = "+442071838750"  # a valid number: the form checks it
    admin_client.post(send, {"to": london, "body": "x", "provider": "", "client_reference": "r"})
    admin_client.post(send, {"to": london, "body": "x", "provider": "sinch",
                             "client_reference": "p"})  # fmt: skip
    routed, pinned = (Message.objects.get(client_reference=ref) for ref in ("r", "p"))
    assert (routed.provider, routed.routed) == ("infobip", True)
    assert (pinned.provider, pinned.routed) == ("sinch", False)
