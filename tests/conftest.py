import pytest
from django.db import connection
from rest_framework.authtoken.models import Token
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


@pytest.fixture
def api(user):
    token = Token.objects.create(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def on_postgres():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: run with DATABASE_URL=postgres://...")


@pytest.fixture
def public_url(settings, live_server):
    """Point PUBLIC_BASE_URL at the live server so webhooks travel over real HTTP."""
    settings.PUBLIC_BASE_URL = live_server.url
    return live_server.url
