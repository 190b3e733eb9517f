"""The webhook view's last line of defence against hostile requests: whatever a provider module
does with them, the answer is a 4xx and the request is recorded, never a 5xx."""

from unittest import mock

import pytest

from messaging.models import WebhookRequest
from messaging.providers.sandbox import SandboxProvider

pytestmark = pytest.mark.django_db
URL = "/webhooks/sandbox/status/"


def test_a_verifier_that_raises_is_an_authentication_failure(client):
    with mock.patch.object(SandboxProvider, "verify_webhook", side_effect=ValueError("bad port")):
        response = client.post(URL, b"{}", content_type="application/json")
    assert response.status_code == 401
    row = WebhookRequest.objects.get()
    assert (row.authenticated, row.state, row.response_status) == (False, "unauthenticated", 401)
    assert row.auth_error == "verifier error: ValueError: bad port"


def test_more_query_parameters_than_django_allows_are_still_recorded(client, settings):
    query = "&".join(f"p{i}=1" for i in range(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 1))
    response = client.post(f"{URL}?{query}", b"{}", content_type="application/json")
    assert response.status_code == 401  # unsigned
    row = WebhookRequest.objects.get()
    assert row.query_string == query and row.state == "unauthenticated"


def test_the_query_reaches_the_provider_in_order_with_blank_values(client):
    seen = {}

    def verify(request, kind):
        seen["query"] = request.query

    with mock.patch.object(SandboxProvider, "verify_webhook", side_effect=verify):
        client.post(f"{URL}?b=2&a=&b=%C3%A9", b"{}", content_type="application/json")
    assert seen["query"] == [("b", "2"), ("a", ""), ("b", "é")]
