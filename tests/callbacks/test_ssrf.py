"""The SSRF guard: https only, public addresses only, checked when a URL is set and again at
connect time against the address actually connected to (DNS rebinding), no redirects."""

import socket

import pytest
from django.core.exceptions import ValidationError

from messaging.callback_http import Transport, check_url, is_public
from messaging.models import Callback, CallbackAttempt
from messaging.services import callbacks, messages
from tests.callbacks.conftest import drain, make_client

pytestmark = pytest.mark.django_db

REAL_GETADDRINFO = socket.getaddrinfo


@pytest.fixture
def dns(monkeypatch):
    """Names the test decides the answer for, at the one resolver seam."""
    answers = {}

    def fake(host, port, *args, **kwargs):
        if host in answers:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], port))]
        return REAL_GETADDRINFO(host, port, *args, **kwargs)

    monkeypatch.setattr("messaging.callback_http.socket.getaddrinfo", fake)
    return answers


@pytest.mark.parametrize(
    "url, why",
    [
        ("http://hooks.example.com/x", "must use https"),
        ("ftp://hooks.example.com/x", "must use https"),
        ("https://127.0.0.1/x", "not a public address"),
        ("https://10.1.2.3/x", "not a public address"),
        ("https://172.16.0.1/x", "not a public address"),
        ("https://192.168.1.1/x", "not a public address"),
        ("https://169.254.169.254/latest/meta-data", "not a public address"),
        ("https://100.64.0.1/x", "not a public address"),
        ("https://0.0.0.0/x", "not a public address"),
        ("https://224.0.0.1/x", "not a public address"),
        ("https://240.0.0.1/x", "not a public address"),
        ("https://[::1]/x", "not a public address"),
        ("https://[fe80::1]/x", "not a public address"),
        ("https://[fc00::1]/x", "not a public address"),
        ("https://[::ffff:127.0.0.1]/x", "not a public address"),
        ("https://user:pw@hooks.example.com/x", "credentials"),
        ("https:///x", "no host"),
        ("https://localhost/x", "not a public address"),
        ("https://rebind.example.com/x", "resolves to 127.0.0.1"),
    ],
)
def test_refused_when_set(dns, url, why):
    dns["rebind.example.com"] = "127.0.0.1"
    dns["hooks.example.com"] = "93.184.215.14"
    with pytest.raises(ValidationError, match=why):
        callbacks.clean_url(url)
    client, _ = make_client("acme", "")
    with pytest.raises(ValidationError):
        callbacks.configure_endpoint(client, url)


def test_public_https_is_accepted(dns):
    dns["hooks.example.com"] = "93.184.215.14"
    assert callbacks.clean_url(" https://hooks.example.com/x?y=1 ") == (
        "https://hooks.example.com/x?y=1"
    )
    assert is_public(check_url("https://hooks.example.com/")[2][0])


def test_a_name_that_rebinds_to_loopback_after_the_check_is_refused_at_connect(dns, receiver):
    dns["hooks.example.com"] = "93.184.215.14"  # public when the client sets it
    client, _ = make_client("acme", f"https://hooks.example.com:{receiver.port}/hook")
    messages.cancel(messages.create_outbound(to="+447700900999", body="x", source="api",
                                             client=client))  # fmt: skip
    dns["hooks.example.com"] = "127.0.0.1"  # ... and loopback when we connect
    [answer] = drain()
    assert answer.status is None and "resolves to 127.0.0.1" in answer.error
    assert receiver.requests == []  # nothing reached the internal network
    attempt = CallbackAttempt.objects.get()
    assert attempt.error.startswith("refused:") and not attempt.ok
    assert Callback.objects.get().state == "pending"  # retried: the name may be fixed


def test_the_connection_goes_to_the_checked_address_with_the_url_host(dns, receiver, settings):
    """The address is resolved once, then connected to as checked; Host is the URL's."""
    settings.CALLBACK_ALLOW_PRIVATE_NETWORKS = True
    dns["client.test"] = "127.0.0.1"
    answer = Transport().post(f"http://client.test:{receiver.port}/hook", b"{}", {}, 2.0)
    assert answer.ok
    assert receiver.requests[0].headers["Host"] == f"client.test:{receiver.port}"


def test_allow_private_networks_relaxes_both_rules(settings, dns):
    dns["rebind.example.com"] = "127.0.0.1"
    settings.CALLBACK_ALLOW_PRIVATE_NETWORKS = True
    assert callbacks.clean_url("http://127.0.0.1:9/x")
    assert callbacks.clean_url("https://rebind.example.com/x")


def test_the_send_api_validates_the_message_url_by_the_same_rule(api, dns):
    dns["hooks.example.com"] = "93.184.215.14"
    answer = api.post("/api/v1/messages/", {"to": "+447911123457", "body": "hi",
                      "callback_url": "https://10.0.0.1/hook"}, format="json")  # fmt: skip
    assert answer.status_code == 400
    [error] = answer.json()["errors"]
    assert error["pointer"] == "#/callback_url" and "not a public address" in error["detail"]
    # A client with no signing secret yet cannot name a URL either (it could not verify).
    answer = api.post("/api/v1/messages/", {"to": "+447911123457", "body": "hi",
                      "callback_url": "https://hooks.example.com/h"}, format="json")  # fmt: skip
    assert answer.status_code == 400, answer.json()
    [error] = answer.json()["errors"]
    assert (error["pointer"], error["code"]) == ("#/callback_url", "callback_not_configured")


def test_the_send_api_stores_the_message_url(api, dns):
    from messaging.models import Client

    dns["hooks.example.com"] = "93.184.215.14"
    callbacks.configure_endpoint(Client.objects.default(), "https://hooks.example.com/client")
    data = {
        "to": "+447911123457",
        "body": "hi",
        "callback_url": "https://hooks.example.com/this-one",
    }
    answer = api.post("/api/v1/messages/", data, format="json")
    assert answer.status_code == 202, answer.json()
    assert answer.json()["callback_url"] == "https://hooks.example.com/this-one"
    message = messages.Message.objects.get()
    assert message.callback_url == "https://hooks.example.com/this-one"


def test_the_model_fields_carry_the_rule_for_any_form(dns):
    """The Client and Message fields validate too, so a staff form cannot store a private URL."""
    from messaging.models import Client

    client = Client(name="Acme", slug="acme", callback_url="https://10.0.0.1/hook")
    with pytest.raises(ValidationError) as refused:
        client.full_clean()
    assert "not a public address" in str(refused.value.message_dict["callback_url"])
    dns["hooks.example.com"] = "93.184.215.14"
    client.callback_url = "https://hooks.example.com/hook"
    client.full_clean()
