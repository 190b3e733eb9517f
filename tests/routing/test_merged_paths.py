"""Routing through main's one decision path (messages.route): single sends, batches and quotes
ask the same question; a test key's sandbox and a requested provider are never routed; the
client's default and allowed providers shape the route."""

import pytest
from django.utils import timezone

from messaging.errors import ProviderNotAllowed
from messaging.models import ApiKey, Client, Message, ProviderHealth, StatusEvent
from messaging.services import batches, clients, messages, provider_health, quotes
from messaging.services.batches import Recipient

pytestmark = pytest.mark.django_db

GB = "+447700900123"
FR = "+33612345678"


def test_a_test_key_goes_to_the_sandbox_whatever_the_table_says(four_providers):
    four_providers.SMS_ROUTES = "GB: sinch 100"
    client = Client.objects.default()
    key = clients.create_api_key(client, name="ci", kind=ApiKey.Kind.TEST).api_key
    message = messages.create_outbound(to=GB, body="x", source="api", api_key=key)
    assert (message.provider, message.routed) == ("sandbox", False)
    assert StatusEvent.objects.get(message=message).raw_payload is None


def test_a_requested_provider_stays_authoritative_and_within_the_clients_list(four_providers):
    four_providers.SMS_ROUTES = "GB: sinch 100"
    narrow = Client.objects.create(name="N", slug="n", allowed_providers=["infobip"])
    with pytest.raises(ProviderNotAllowed):
        messages.create_outbound(to=GB, body="x", source="api", client=narrow, provider="sinch")
    message = messages.create_outbound(
        to=GB, body="x", source="api", client=narrow, provider="infobip"
    )
    assert (message.provider, message.routed) == ("infobip", False)


def test_nothing_requested_is_routed_with_the_clients_default_and_allowed(four_providers):
    four_providers.SMS_ROUTES = "GB: sinch 70, infobip 30"
    client = Client.objects.create(name="D", slug="d", default_provider="vonage-sms")
    fr = messages.create_outbound(to=FR, body="x", source="api", client=client)
    assert (fr.provider, fr.routed) == ("vonage-sms", True)  # its default is its `*`
    route = StatusEvent.objects.get(message=fr).raw_payload["route"]
    assert (route["table"], route["chosen"]) == ("client default provider", "vonage-sms")
    narrow = Client.objects.create(name="N", slug="n", allowed_providers=["infobip"])
    gb = messages.create_outbound(to=GB, body="x", source="api", client=narrow)
    assert (gb.provider, gb.routed) == ("infobip", True)


def test_when_the_route_leaves_nothing_allowed_the_first_allowed_provider(four_providers):
    four_providers.SMS_ROUTES = "GB: sinch 100"
    narrow = Client.objects.create(name="N", slug="n", allowed_providers=["vonage-sms"])
    message = messages.create_outbound(to=GB, body="x", source="api", client=narrow)
    assert (message.provider, message.routed) == ("vonage-sms", True)
    route = StatusEvent.objects.get(message=message).raw_payload["route"]
    assert route["chosen"] == "vonage-sms" and "first the client allows" in route["why"]


def test_a_batch_routes_each_recipient_by_its_destination(four_providers):
    four_providers.SMS_ROUTES = "GB: sinch 100; FR: infobip 100"
    client = Client.objects.default()
    batch = batches.create_batch(
        client=client,
        recipients=[Recipient(0, GB, "", "a"), Recipient(1, FR, "", "b")],
    )
    by_to = {m.to_number: m for m in Message.objects.filter(to_number__in=[GB, FR])}
    assert (by_to[GB].provider, by_to[GB].routed) == ("sinch", True)
    assert (by_to[FR].provider, by_to[FR].routed) == ("infobip", True)
    assert batch.result["provider"] is None  # the route split them
    assert [m["provider"] for m in batch.result["messages"]] == ["sinch", "infobip"]
    events = StatusEvent.objects.filter(message__in=by_to.values())
    assert {e.raw_payload["route"]["chosen"] for e in events} == {"sinch", "infobip"}
    assert all(e.note.startswith(f"accepted in batch {batch.id}; route ") for e in events)


def test_a_batch_with_a_requested_provider_is_not_routed(four_providers):
    four_providers.SMS_ROUTES = "GB: sinch 100"
    batch = batches.create_batch(
        client=Client.objects.default(),
        recipients=[Recipient(0, GB, "", "a"), Recipient(1, FR, "", "b")],
        provider="vonage-sms",
    )
    rows = Message.objects.filter(to_number__in=[GB, FR])
    assert {(m.provider, m.routed) for m in rows} == {("vonage-sms", False)}
    assert batch.result["provider"] == "vonage-sms"


def test_a_quote_names_the_provider_a_send_would_get(four_providers):
    four_providers.SMS_ROUTES = "GB: sinch 100, infobip 0"
    client = Client.objects.default()
    assert quotes.quote(to=GB, body="x", client=client).provider == "sinch"
    ProviderHealth.objects.create(provider="sinch", state="open", state_since=timezone.now())
    provider_health.reset_caches()
    assert quotes.quote(to=GB, body="x", client=client).provider == "infobip"
    sent = messages.create_outbound(to=GB, body="x", source="api", client=client)
    assert sent.provider == "infobip"
    assert quotes.quote(to=GB, body="x", client=client, provider="sinch").provider == "sinch"
