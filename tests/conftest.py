import pytest
from django.db import connection
from rest_framework.test import APIClient


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    from django.core.cache import cache

    cache.clear()


@pytest.fixture(autouse=True)
def _fresh_routing():
    """Routing caches its table and the providers' health per process: no test sees another's."""
    from messaging.services import provider_health, routing

    routing.clear_cache()
    provider_health.reset_caches()
    yield
    routing.clear_cache()
    provider_health.reset_caches()


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("api-client", password="pw")


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_superuser("staff", "staff@example.com", "pw")


def key_client(key: str, scheme: str = "Bearer") -> APIClient:
    """An API test client that sends `Authorization: <scheme> <key>`."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"{scheme} {key}")
    client.key = key
    return client


@pytest.fixture
def make_api(db):
    """make_api(client=None, kind="live") -> an APIClient with a new key of `client` (default:
    the `default` client, which messages made with create_outbound() belong to)."""
    from messaging.models import Client
    from messaging.services import clients

    def make(client=None, kind="live", scheme="Bearer"):
        client = client or Client.objects.default()
        issued = clients.create_api_key(client, name=f"{kind}-key", kind=kind)
        api = key_client(issued.key, scheme)
        api.api_key, api.herald_client = issued.api_key, client
        return api

    return make


@pytest.fixture
def api(make_api):
    """A live key of the `default` client."""
    return make_api()


@pytest.fixture
def on_postgres():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: run with DATABASE_URL=postgres://...")


@pytest.fixture
def public_url(settings, live_server):
    """Point PUBLIC_BASE_URL at the live server so webhooks travel over real HTTP."""
    settings.PUBLIC_BASE_URL = live_server.url
    return live_server.url
