"""Schemathesis against the API's OpenAPI schema (/api/v1/schema/), authenticated with a client
API key (issue 5, item 6; issue 10), checking conformance as well as the absence of 5xx.

tests/test_api_schemathesis.py (the load helper's) sends positive and negative cases and checks
only for 5xx. This module adds what can be asserted beyond that:
  positive  schema-valid requests, path ids pointed at a real message so detail and resend run
            their full code path; every response is not a 5xx, has the declared content type,
            and, for a documented status code, a body that matches the declared schema;
  negative  schema-violating requests (wrong types, missing fields, other methods), with random
            ids: never a 5xx. (Not "always a 4xx": DRF answers OPTIONS with 200 metadata, and
            the list ignores unknown query parameters and a bad page_size, by design.)
status_code_conformance is not used: the schema (drf-spectacular) documents only the success
codes, while the API answers validation errors with 400 and unknown ids with 404 by design.

schemathesis is a test-only dependency (requirements-dev.txt: schemathesis==4.32.5); the module
is skipped without it. Examples are bounded and derandomized: repeatable, and fast.
"""

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck  # noqa: E402
from hypothesis import settings as hsettings  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from messaging.models import Client, Message  # noqa: E402
from messaging.services import clients, messages  # noqa: E402

EXAMPLES = hsettings(max_examples=25, deadline=None, derandomize=True, database=None,
                     suppress_health_check=list(HealthCheck))  # fmt: skip


def load(mode):
    from config.wsgi import application

    schema = schemathesis.openapi.from_wsgi("/api/v1/schema/", application)
    schema.config.generation.update(modes=[mode])
    return schema


positive = load(GenerationMode.POSITIVE)
negative = load(GenerationMode.NEGATIVE)


@pytest.fixture(autouse=True)
def keep_connection_open():
    """The WSGI calls fire request_started/finished, whose close_old_connections() would close
    the test's connection inside its transaction; Django's test Client unhooks it the same way."""
    from django.core import signals
    from django.db import close_old_connections

    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def api_state(db, settings):
    """A key, and a failed (so resendable) message of its client for the path ids to point at."""
    settings.RATELIMIT_ENABLE = False  # a 429 would hide what the handler does with the input
    message = messages.create_outbound(to="+447911123450", body="seed", source="api")
    Message.objects.filter(pk=message.pk).update(status="failed")
    key = clients.create_api_key(Client.objects.default(), name="schemathesis").key
    return {"token": key, "message_id": str(message.pk)}


def headers(state):
    return {"Authorization": f"Bearer {state['token']}"}


@positive.parametrize()
@EXAMPLES
def test_valid_requests_conform(case, api_state):
    if case.path_parameters and "id" in case.path_parameters:
        case.path_parameters["id"] = api_state["message_id"]
    response = case.call_and_validate(
        headers=headers(api_state),
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )
    assert response.status_code < 500


@negative.parametrize()
@EXAMPLES
def test_invalid_requests_are_never_a_5xx(case, api_state):
    response = case.call_and_validate(
        headers=headers(api_state),
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )
    assert response.status_code < 500, (response.status_code, response.text[:300])


def test_event_actor_is_nullable_in_the_schema_and_null_in_the_api(api_state, client):
    """Regression (found by test_valid_requests_conform): StatusEvent.actor is null for events
    no person caused, and the schema said a non-null string (ST108 on every message detail)."""
    schema = client.get("/api/v1/schema/?format=json").json()
    actor = schema["components"]["schemas"]["StatusEvent"]["properties"]["actor"]
    assert actor.get("nullable") is True
    detail = client.get(
        f"/api/v1/messages/{api_state['message_id']}/",
        HTTP_AUTHORIZATION=f"Bearer {api_state['token']}",
    ).json()
    assert detail["events"] and detail["events"][0]["actor"] is None


@pytest.mark.parametrize(
    ("value", "status"),
    [
        ("0411-05-11T09:09:05.1809+16:38", 200),  # found by schemathesis: 500 on PostgreSQL
        ("2026-01-01T00:00:00-23:59", 200),
        ("0001-01-01T00:00:00+16:38", 400),  # no UTC equivalent (year 0)
        ("not-a-date", 400),
    ],
)
@pytest.mark.parametrize("name", ["created_after", "created_before"])
def test_created_filters_take_any_utc_offset(api_state, client, name, value, status):
    """Regression: PostgreSQL refuses UTC offsets beyond +-15:59, which Python accepts; the
    filter converts to UTC first, and answers 400 for an instant that has no UTC equivalent."""
    response = client.get(
        "/api/v1/messages/",
        {name: value},
        HTTP_AUTHORIZATION=f"Bearer {api_state['token']}",
    )
    assert response.status_code == status, response.content[:300]
    if status == 200 and name == "created_after":
        assert [m["id"] for m in response.json()["results"]] == [api_state["message_id"]]
