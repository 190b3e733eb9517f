"""Schemathesis against the API's own OpenAPI schema (/api/v1/schema/): generated requests for
every operation, valid and invalid (negative mode: wrong types, missing fields, out-of-range
values), authenticated with a real token, through the real WSGI application. Any 5xx fails.

schemathesis is a test-only dependency (requirements-dev.txt: schemathesis==4.32.5); the module
is skipped when it is not installed. Examples per operation are bounded and derandomized so a
run is repeatable and stays short.
"""

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck  # noqa: E402
from hypothesis import settings as hsettings  # noqa: E402
from rest_framework.authtoken.models import Token  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from messaging.models import Message  # noqa: E402
from messaging.services import messages  # noqa: E402


@pytest.fixture(autouse=True)
def keep_connection_open():
    """The WSGI calls fire request_started/finished, whose close_old_connections() would close
    the test's connection in the middle of its transaction; Django's test Client unhooks it the
    same way."""
    from django.core import signals
    from django.db import close_old_connections

    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


def load_schema():
    from config.wsgi import application

    return schemathesis.openapi.from_wsgi("/api/v1/schema/", application)


schema = load_schema()  # served by the app itself (no database needed to generate it)


@pytest.fixture
def token(db, django_user_model, settings):
    settings.RATELIMIT_ENABLE = False  # a 429 would hide what the handler does with the input
    user = django_user_model.objects.create_user("schemathesis", password="pw")
    # Something to list, fetch and resend: a message in a resendable state.
    message = messages.create_outbound(to="+447911123450", body="seed", source="api")
    Message.objects.filter(pk=message.pk).update(status="failed")
    return Token.objects.create(user=user).key


@schema.parametrize()
@hsettings(max_examples=30, deadline=None, derandomize=True, database=None,
           suppress_health_check=list(HealthCheck))  # fmt: skip
def test_no_server_errors(case, token):
    case.call_and_validate(headers={"Authorization": f"Token {token}"}, checks=[not_a_server_error])
