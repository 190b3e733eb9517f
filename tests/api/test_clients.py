"""Issue 10: clients and their API keys. Two clients, each with a live and a test key; every API
URL the router has is tried with the other client's ids and keys; keys are stored hashed only;
revoked keys, inactive clients and the admin's session are refused; test keys always use the
sandbox; idempotency keys and rate limits are per client; inbound SMS find their client."""

import re
import uuid
from datetime import timedelta

import pytest
import responses
from django.db import connection
from django.urls import URLPattern, reverse
from django.utils import timezone
from rest_framework.test import APIClient

from messaging.api.urls import router
from messaging.api.views import ClientScopedViewSet
from messaging.models import (
    ApiKey,
    Client,
    IdempotencyKey,
    Message,
    SandboxReceipt,
    StatusEvent,
)
from messaging.providers.base import InboundSms
from messaging.services import clients, inbound, messages
from tests.conftest import key_client

pytestmark = pytest.mark.django_db
URL = "/api/v1/messages/"
TWILIO = {
    "BACKEND": "messaging.providers.twilio.TwilioProvider",
    "OPTIONS": {"ACCOUNT_SID": "AC123", "AUTH_TOKEN": "tw-secret", "FROM": "+15005550006"},
}


@pytest.fixture
def two_providers(settings):
    """Twilio configured beside the sandbox, so a request can ask for a real provider."""
    settings.SMS_PROVIDERS = {**settings.SMS_PROVIDERS, "twilio": TWILIO}
    settings.SMS_PROVIDERS_ENABLED = ["sandbox", "twilio"]
    settings.SMS_DEFAULT_PROVIDER = "sandbox"


@pytest.fixture
def tenants(make_api):
    """Two clients, each with a live and a test key and a failed (resendable) message."""
    out = {}
    for slug in ("alpha", "beta"):
        client = clients.create_client(slug.title(), slug=slug)
        message = messages.create_outbound(
            to="+447911123450", body=f"{slug} secret code 123456", source="api", client=client
        )
        Message.objects.filter(pk=message.pk).update(status="failed")
        out[slug] = {
            "client": client,
            "live": make_api(client, "live"),
            "test": make_api(client, "test"),
            "message": message,
        }
    return out


@pytest.fixture
def superuser_client(staff):
    """A logged-in admin session (a superuser), no API key."""
    from django.test import Client as DjangoClient

    browser = DjangoClient()
    browser.force_login(staff)
    return browser


def send(api, **data):
    return api.post(URL, {"to": "+447911123457", "body": "hi", **data}, format="json")


# --- Keys: shape, storage, authentication ---------------------------------------------------


def test_issued_key_shape_and_storage():
    client = clients.create_client("Shop")
    live = clients.create_api_key(client, name="web")
    test = clients.create_api_key(client, name="ci", kind="test")
    assert re.fullmatch(r"hk_live_[A-Za-z0-9_-]{43}", live.key)
    assert test.key.startswith("hk_test_")
    assert live.api_key.prefix == live.key[: len("hk_live_") + 8]
    assert live.api_key.hashed_key == clients.hash_key(live.key) != live.key
    stored = ApiKey.objects.get(pk=live.api_key.pk)
    assert live.key not in {stored.prefix, stored.hashed_key, stored.name}
    assert clients.authenticate(live.key) == live.api_key
    assert clients.authenticate(live.key + "x") is None
    assert clients.authenticate("") is None


def _all_database_text() -> str:
    """Every value of every table, as text (SQLite and PostgreSQL)."""
    chunks = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            chunks.extend(repr(row) for row in cursor.fetchall())
    return "\n".join(chunks)


def test_no_full_key_anywhere_in_the_database(tenants, superuser_client, capsys):
    from django.core.management import call_command

    keys = [t[kind].key for t in tenants.values() for kind in ("live", "test")]
    call_command("create_api_key", "alpha", "--name", "cli")
    keys.append(capsys.readouterr().out.strip().splitlines()[-1])
    call_command("create_demo")
    keys += re.findall(r"hk_(?:live|test)_[A-Za-z0-9_-]{43}", capsys.readouterr().out)
    page = superuser_client.post(
        reverse("admin:messaging_client_create_key", args=[tenants["beta"]["client"].pk]),
        {"name": "admin-made", "kind": "live"},
    )
    keys += re.findall(r"hk_live_[A-Za-z0-9_-]{43}", page.content.decode())
    for api in [t["live"] for t in tenants.values()]:  # used, so last_used_at is written too
        assert api.get(URL).status_code == 200
    assert len(keys) == 8 and all(clients.authenticate(k) for k in keys)
    dump = _all_database_text()
    assert "hk_live_" in dump  # the prefixes are stored: the scan does see the key table
    for key in keys:
        assert key not in dump
        assert key[len("hk_live_") + 8 :] not in dump  # nor the secret part alone


@pytest.mark.parametrize("scheme", ["Bearer", "Token", "bearer"])
def test_both_header_schemes_are_accepted(make_api, scheme):
    api = make_api(scheme=scheme)
    assert api.get(URL).status_code == 200


@pytest.mark.parametrize(
    "header",
    ["Bearer hk_live_nope", "Token nope", "Bearer", "Bearer a b", "Basic dXNlcjpwYXNz", ""],
)
def test_bad_or_missing_keys_are_401_with_www_authenticate(header):
    api = APIClient()
    if header:
        api.credentials(HTTP_AUTHORIZATION=header)
    r = api.get(URL)
    assert r.status_code == 401
    assert r["WWW-Authenticate"].startswith("Bearer")


def test_revoked_key_and_inactive_client_are_refused(tenants):
    alpha = tenants["alpha"]
    assert alpha["live"].get(URL).status_code == 200
    clients.revoke_api_key(alpha["live"].api_key)
    r = alpha["live"].get(URL)
    assert r.status_code == 401 and "WWW-Authenticate" in r
    assert send(alpha["live"]).status_code == 401
    assert alpha["test"].get(URL).status_code == 200  # the client's other key still works
    clients.deactivate(alpha["client"])
    assert alpha["test"].get(URL).status_code == 401
    assert tenants["beta"]["live"].get(URL).status_code == 200
    clients.reactivate(alpha["client"])
    assert alpha["test"].get(URL).status_code == 200
    assert alpha["live"].get(URL).status_code == 401  # revoked stays revoked


def test_unknown_and_revoked_keys_answer_alike(tenants):
    """No oracle: a revoked key and a never-issued key get the same 401 body."""
    live = tenants["alpha"]["live"]
    clients.revoke_api_key(live.api_key)
    unknown = key_client("hk_live_" + "A" * 43)
    assert live.get(URL).json() == unknown.get(URL).json()


def test_last_used_at_is_written_at_most_once_a_minute(make_api, django_assert_num_queries):
    api = make_api()
    key = api.api_key
    assert api.get(URL).status_code == 200
    key.refresh_from_db()
    first = key.last_used_at
    assert first is not None
    for _ in range(3):
        api.get(URL)
    key.refresh_from_db()
    assert key.last_used_at == first  # no write per request
    # Authentication of a recently used key is one SELECT, no UPDATE.
    with django_assert_num_queries(1):
        assert clients.authenticate(api.key) == key
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=first - timedelta(minutes=2))
    api.get(URL)
    key.refresh_from_db()
    assert key.last_used_at > first


# --- No side door -----------------------------------------------------------------------------


def _router_urls(message_id):
    """(url, methods) for every URL pattern of the API router, with `message_id` as the id."""
    found = []
    for pattern in router.urls:
        assert isinstance(pattern, URLPattern)
        kwargs = {name: str(message_id) for name in pattern.pattern.regex.groupindex}
        url = reverse(pattern.name, kwargs=kwargs)
        # OPTIONS too: DRF answers it for every view (metadata).
        methods = sorted({m.upper() for m in pattern.callback.actions} | {"OPTIONS"})
        found.append((url, methods, bool(kwargs)))
    return found


def _call(api, method, url):
    body = None
    if method in ("POST", "PUT", "PATCH"):
        body = {"to": "+447911123457", "body": "x"}
        if url.endswith("/batch/"):
            body = {"body": "x", "recipients": [{"to": "+447911123457"}]}
        elif url.endswith(("/resend/", "/cancel/")):
            body = {}
    return getattr(api, method.lower())(url, body, format="json")


def test_the_router_walk_sees_every_api_url(tenants):
    """Guard for the walks below: they cover list, create, detail and resend (and anything the
    router gains later, as it enumerates the router itself)."""
    beta = tenants["beta"]["message"].pk
    urls = {url: set(m) for url, m, _ in _router_urls(beta)}
    assert urls[URL] >= {"GET", "POST", "OPTIONS"}
    assert urls[f"{URL}{beta}/"] >= {"GET", "OPTIONS"}
    assert urls[f"{URL}{beta}/resend/"] >= {"POST", "OPTIONS"}


def test_staff_session_without_a_key_is_401_on_every_api_url(tenants, superuser_client):
    beta = tenants["beta"]["message"]
    before = Message.objects.count()
    for url, methods, _ in _router_urls(beta.pk):
        for method in methods:
            r = getattr(superuser_client, method.lower())(url, content_type="application/json")
            assert r.status_code == 401, (method, url, r.status_code)
            assert str(beta.pk) not in r.content.decode()
    assert Message.objects.count() == before


@pytest.mark.parametrize("kind", ["live", "test"])
def test_every_api_url_refuses_the_other_clients_ids(tenants, kind):
    """Alpha's keys against beta's message: every detail-style URL is a 404 (never 403, never
    data); list-style URLs show only alpha's rows; nothing changes for beta."""
    alpha, beta = tenants["alpha"], tenants["beta"]
    beta_events = StatusEvent.objects.filter(message=beta["message"]).count()
    beta_count = Message.objects.filter(client=beta["client"]).count()
    secret = str(beta["message"].pk)
    nowhere = dict((url, m) for url, m, _ in _router_urls(uuid.uuid4()))
    for (url, methods, detail), nowhere_url in zip(
        _router_urls(beta["message"].pk), nowhere, strict=True
    ):
        for method in methods:
            r = _call(alpha[kind], method, url)
            assert r.status_code != 403, (method, url)
            assert secret not in r.content.decode() and "beta secret" not in r.content.decode()
            if detail and method == "OPTIONS":
                # Metadata only, the same for any id: says nothing about beta's message.
                assert r.content == _call(alpha[kind], method, nowhere_url).content
            elif detail:
                assert r.status_code == 404, (method, url, r.status_code)
            else:
                assert r.status_code in (200, 202), (method, url, r.status_code)
                if r.status_code == 202:
                    ids = [m["id"] for m in r.json().get("messages", [r.json()])]
                    assert {m.client for m in Message.objects.filter(pk__in=ids)} == {
                        alpha["client"]
                    }
    assert Message.objects.filter(client=beta["client"]).count() == beta_count
    assert StatusEvent.objects.filter(message=beta["message"]).count() == beta_events
    # And the same URLs with beta's own key do reach the message (the 404s were scoping).
    assert beta["live"].get(f"{URL}{secret}/").status_code == 200


def test_every_api_url_is_401_with_revoked_or_no_keys(tenants):
    alpha = tenants["alpha"]
    clients.revoke_api_key(alpha["test"].api_key)
    for url, methods, _ in _router_urls(alpha["message"].pk):
        for method in methods:
            for api in (alpha["test"], APIClient()):
                r = _call(api, method, url)
                assert r.status_code == 401, (method, url, r.status_code)


def test_list_filters_never_reach_another_client(tenants):
    alpha, beta = tenants["alpha"], tenants["beta"]
    ids = lambda r: {m["id"] for m in r.json()["results"]}  # noqa: E731
    assert ids(alpha["live"].get(URL)) == {str(alpha["message"].pk)}
    assert ids(alpha["test"].get(URL, {"to": "+447911123450"})) == {str(alpha["message"].pk)}
    assert ids(beta["live"].get(URL, {"status": "failed"})) == {str(beta["message"].pk)}


def test_a_scoped_viewset_cannot_define_its_own_queryset():
    with pytest.raises(TypeError, match="selector"):

        class Leaky(ClientScopedViewSet):  # noqa: F841
            def get_queryset(self):
                return Message.objects.all()

    with pytest.raises(TypeError):

        class AlsoLeaky(ClientScopedViewSet):  # noqa: F841
            queryset = Message.objects.all()

    with pytest.raises(TypeError):

        class LeakyObject(ClientScopedViewSet):  # noqa: F841
            def get_object(self):
                return Message.objects.get(pk=self.kwargs["pk"])


# --- Test keys, client settings ---------------------------------------------------------------


def test_test_keys_always_send_through_the_sandbox(tenants, two_providers):
    alpha = tenants["alpha"]
    r = send(alpha["test"], provider="twilio")
    assert r.status_code == 202
    body = r.json()
    assert (body["provider"], body["test"]) == ("sandbox", True)
    assert "test key: routed to the sandbox (asked for twilio)" in body["events"][0]["note"]
    message = Message.objects.get(pk=body["id"])
    assert (message.provider, message.api_key.kind) == ("sandbox", "test")
    assert alpha["live"].get(f"{URL}{message.pk}/").json()["test"] is True
    # Resending it through the API, even asking for Twilio, stays in the sandbox.
    Message.objects.filter(pk=message.pk).update(status="failed")
    again = alpha["test"].post(f"{URL}{message.pk}/resend/", {"provider": "twilio"}, format="json")
    assert (again.status_code, again.json()["provider"], again.json()["test"]) == (
        202, "sandbox", True
    )  # fmt: skip
    # A staff resend of a test message keeps it in the sandbox too.
    message.refresh_from_db()
    staff_copy = messages.resend(message, source="admin", provider="twilio", repeat=True)
    assert staff_copy.provider == "sandbox" and staff_copy.client == alpha["client"]
    assert staff_copy.api_key == alpha["test"].api_key
    # The same request with the live key goes where it asked.
    live = send(alpha["live"], provider="twilio").json()
    assert (live["provider"], live["test"]) == ("twilio", False)
    # A staff resend of a live message is a staff send: no key of its own.
    Message.objects.filter(pk=live["id"]).update(status="failed")
    staff_live = messages.resend(Message.objects.get(pk=live["id"]), source="admin")
    assert staff_live.api_key is None and staff_live.provider == "twilio"


def test_test_key_messages_never_reach_a_real_provider_when_sent(tenants, two_providers):
    """The sender sends a test-key message through the sandbox: no HTTP to Twilio at all (any
    request would fail: `responses` lets nothing out)."""
    from messaging.services.sending import claim_due
    from tests.sending import send_one

    r = send(tenants["alpha"]["test"], provider="twilio")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        [claimed] = claim_due(10, "test")
        assert send_one(claimed, session=None, owner="test") == "sent"
        assert len(mock.calls) == 0
    message = Message.objects.get(pk=r.json()["id"])
    assert (message.provider, message.status) == ("sandbox", "sent")
    assert SandboxReceipt.objects.filter(message_id=message.pk).exists()


def test_test_keys_without_an_enabled_sandbox_are_refused(tenants, settings):
    settings.SMS_PROVIDERS = {"twilio": TWILIO}
    settings.SMS_PROVIDERS_ENABLED = ["twilio"]
    settings.SMS_DEFAULT_PROVIDER = "twilio"
    r = send(tenants["alpha"]["test"])
    assert r.status_code == 400 and "sandbox" in r.json()["detail"]
    assert not Message.objects.filter(api_key=tenants["alpha"]["test"].api_key).exists()


def test_client_allowed_and_default_providers_and_sender(tenants, two_providers):
    alpha = tenants["alpha"]["client"]
    Client.objects.filter(pk=alpha.pk).update(
        allowed_providers=["twilio"], default_sender_id="ALPHA"
    )
    api = tenants["alpha"]["live"]
    r = send(api, provider="sandbox")
    assert r.status_code == 400
    assert r.json()["errors"] == [
        {"pointer": "#/provider", "detail": r.json()["detail"], "code": "provider_not_allowed"}
    ]
    body = send(api).json()  # Herald's default (sandbox) is not allowed: its first allowed one
    assert (body["provider"], body["from"]) == ("twilio", "ALPHA")
    assert send(api, **{"from": "Other"}).json()["from"] == "Other"
    Client.objects.filter(pk=alpha.pk).update(allowed_providers=[], default_provider="twilio")
    assert send(api).json()["provider"] == "twilio"
    assert send(api, provider="sandbox").json()["provider"] == "sandbox"
    # The test key ignores the allowed list: it can only ever use the sandbox.
    Client.objects.filter(pk=alpha.pk).update(allowed_providers=["twilio"])
    assert send(tenants["alpha"]["test"]).json()["provider"] == "sandbox"


# --- Idempotency and rate limits per client ------------------------------------------------


def test_same_idempotency_key_in_two_clients_is_two_keys(tenants):
    data = {"to": "+447911123457", "body": "once"}
    headers = {"Idempotency-Key": "order-42"}
    a = tenants["alpha"]["live"].post(URL, data, format="json", headers=headers)
    b = tenants["beta"]["live"].post(URL, data, format="json", headers=headers)
    assert (a.status_code, b.status_code) == (202, 202)
    assert a.json()["id"] != b.json()["id"]
    # Each client's retry replays its own message; the test key shares its client's keys.
    again = tenants["alpha"]["test"].post(URL, data, format="json", headers=headers)
    assert (again.status_code, again.json()["id"]) == (200, a.json()["id"])
    assert IdempotencyKey.objects.filter(key="order-42").count() == 2


def test_resend_honours_idempotency_key(tenants):
    alpha = tenants["alpha"]
    url = f"{URL}{alpha['message'].pk}/resend/"
    headers = {"Idempotency-Key": "resend-1"}
    first = alpha["live"].post(url, {"reason": "retry"}, format="json", headers=headers)
    assert first.status_code == 202
    again = alpha["live"].post(url, {"reason": "retry"}, format="json", headers=headers)
    assert (again.status_code, again.json()["id"]) == (200, first.json()["id"])
    assert again["Idempotent-Replayed"] == "true"
    other = alpha["live"].post(url, {"reason": "different"}, format="json", headers=headers)
    assert other.status_code == 409 and other.json()["code"] == "idempotency-conflict"
    # The same key on a create is another request: 409, not a replay of the resend.
    assert send(alpha["live"], **{}).status_code == 202
    create = alpha["live"].post(URL, {"to": "+447911123457", "body": "x"}, format="json",
                                headers=headers)  # fmt: skip
    assert create.status_code == 409
    assert Message.objects.filter(resend_of=alpha["message"]).count() == 1
    new = Message.objects.get(pk=first.json()["id"])
    assert new.client == alpha["client"] and new.api_key == alpha["live"].api_key
    # Beta's resend of its own message with the same key string is its own.
    beta_url = f"{URL}{tenants['beta']['message'].pk}/resend/"
    r = tenants["beta"]["live"].post(beta_url, {"reason": "retry"}, format="json", headers=headers)
    assert r.status_code == 202 and Message.objects.get(pk=r.json()["id"]).client.slug == "beta"


def test_send_rate_limit_is_per_client_and_shared_by_its_keys(tenants, settings):
    settings.API_SEND_RATE_LIMIT = "100/m"
    Client.objects.filter(slug="alpha").update(send_rate_limit="3/m")
    alpha, beta = tenants["alpha"], tenants["beta"]
    codes = [send(alpha["live" if i % 2 else "test"]).status_code for i in range(4)]
    assert codes == [202, 202, 202, 429]  # both keys count against alpha's 3/m
    r = send(alpha["live"])
    assert r.status_code == 429 and int(r["Retry-After"]) > 0
    assert all(send(beta["live"]).status_code == 202 for _ in range(5))  # beta: the setting
    assert alpha["live"].get(URL).status_code == 200  # reads are their own group


def test_read_rate_limit_is_per_client(tenants, settings):
    settings.API_RATE_LIMIT = "100/m"
    Client.objects.filter(slug="beta").update(read_rate_limit="2/m")
    beta = tenants["beta"]["live"]
    assert [beta.get(URL).status_code for _ in range(3)] == [200, 200, 429]
    assert tenants["alpha"]["live"].get(URL).status_code == 200


def test_guessed_keys_are_limited_per_ip(settings):
    settings.API_RATE_LIMIT = "3/m"
    codes = [key_client(f"hk_live_guess{i}").get(URL).status_code for i in range(5)]
    assert codes == [401, 401, 401, 429, 429]


# --- Inbound ----------------------------------------------------------------------------------


def test_inbound_belongs_to_the_client_owning_the_number(tenants):
    Client.objects.filter(slug="beta").update(owned_numbers=["+44 7911 123999", "BETA"])

    def receive(to, pid):
        sms = InboundSms(provider_message_id=pid, from_number="+447911123457", to_number=to,
                         text="hello", received_at=timezone.now())  # fmt: skip
        return inbound.record_inbound("sandbox", sms)[0]

    owned = receive("447911123999", "in-1")
    assert owned.client == tenants["beta"]["client"]
    assert receive("beta", "in-2").client.slug == "beta"
    assert receive("+447911123000", "in-3").client is None
    ids = {m["id"] for m in tenants["beta"]["live"].get(URL, {"direction": "inbound"}).json()[
        "results"]}  # fmt: skip
    assert ids == {str(owned.pk), str(Message.objects.get(provider_message_id="in-2").pk)}
    assert tenants["alpha"]["live"].get(URL, {"direction": "inbound"}).json()["results"] == []


# --- Schema ---------------------------------------------------------------------------------


def test_schema_documents_the_bearer_scheme(client):
    doc = client.get("/api/v1/schema/", headers={"Accept": "application/json"}).json()
    assert doc["components"]["securitySchemes"]["ApiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": doc["components"]["securitySchemes"]["ApiKey"]["description"],
    }
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            assert operation["security"] == [{"ApiKey": []}], (method, path)
    assert "test" in doc["components"]["schemas"]["Message"]["properties"]


def test_request_log_names_the_client_and_key_prefix_never_the_key(tenants, caplog):
    import json
    import logging

    caplog.set_level(logging.INFO, logger="herald.request")
    api = tenants["alpha"]["test"]
    assert api.get(URL).status_code == 200
    [record] = [r for r in caplog.records if r.name == "herald.request"]
    assert (record.client, record.api_key) == ("alpha", api.api_key.prefix)
    line = logging.getLogger().handlers[0].format(record)
    assert json.loads(line)["api_key"] == api.api_key.prefix and api.key not in line


def test_client_rate_limits_are_counted_in_the_shared_cache(tenants, settings):
    """With Redis as the cache (production), a client's count lives there, where every web
    process reads and increments the same counter: a fresh connection (another process) sees
    the requests this one made and refuses the next."""
    redis = pytest.importorskip("redis")
    url = "redis://127.0.0.1:6379/1"
    try:
        redis.Redis.from_url(url).ping()
    except redis.exceptions.ConnectionError:
        pytest.skip("needs Redis at 127.0.0.1:6379")
    settings.CACHES = {"default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": url,
                                   "KEY_PREFIX": f"herald-test-{uuid.uuid4().hex}"}}  # fmt: skip
    Client.objects.filter(slug="alpha").update(send_rate_limit="2/m")
    alpha = tenants["alpha"]
    try:
        assert [send(alpha["live"]).status_code for _ in range(2)] == [202, 202]
        from django.core.cache import caches

        caches["default"].close()
        del caches["default"]  # the next request opens a new connection, as another process
        assert send(alpha["test"]).status_code == 429
        assert send(tenants["beta"]["live"]).status_code == 202
    finally:
        from django.core.cache import cache

        cache.delete_pattern("*")  # this test's prefix only (clear() would flush the database)


@pytest.mark.parametrize(
    ("kind", "allowed", "after"),
    [
        ("test", [], "sandbox"),  # a test key's message never fails over to a real provider
        ("live", ["sandbox"], "sandbox"),  # nor a client's outside the providers it allows
        ("live", [], "twilio"),  # otherwise failover works as before
        ("live", ["sandbox", "twilio"], "twilio"),
    ],
)
def test_failover_respects_test_keys_and_allowed_providers(
    tenants, two_providers, settings, monkeypatch, kind, allowed, after
):
    from messaging.providers.base import RetryableSendError
    from messaging.providers.sandbox import SandboxProvider
    from messaging.services.sending import claim_due
    from tests.sending import send_one

    def always_busy(self, sms, session):
        raise RetryableSendError("sandbox: busy", code="busy")

    monkeypatch.setattr(SandboxProvider, "send", always_busy)
    settings.SENDER_MAX_ATTEMPTS = 1
    settings.SMS_FALLBACK_PROVIDERS = ["twilio"]
    Client.objects.filter(slug="alpha").update(allowed_providers=allowed)
    r = send(tenants["alpha"][kind], provider="sandbox")
    assert r.status_code == 202, r.json()
    [claimed] = claim_due(10, "test")
    send_one(claimed, session=None, owner="test")
    message = Message.objects.get(pk=r.json()["id"])
    assert message.provider == after
    assert message.status == ("failed" if after == "sandbox" else "queued")
