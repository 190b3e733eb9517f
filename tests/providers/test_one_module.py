"""A provider is one module (issue 16, item 5): its check rules, webhook URLs, evidence headers
and emulator registration come from its class and the registry."""

from django.core.checks import Error
from django.urls import reverse

from config.providers import PROVIDER_SPECS
from devtools.emulator import base as emulator
from messaging import providers
from messaging.checks import providers_configured
from messaging.providers import sandbox
from messaging.providers.base import Provider
from messaging.services.webhooks import KEPT_HEADERS


class FakeProvider(Provider):
    EVIDENCE_HEADERS = ("x-fake-signature",)

    @classmethod
    def check(cls, options, env=None):
        if options.get("MODE") != "ok":
            return [Error("fake needs MODE=ok", id="fake.E001")]
        return []


def test_every_known_provider_has_its_webhook_urls():
    for name in providers.known_names():
        for kind in ("status", "inbound"):
            assert reverse(f"webhook-{name}-{kind}") == f"/webhooks/{name}/{kind}/"


def test_evidence_headers_come_from_the_classes():
    for name in providers.known_names():
        for header in providers.backend_class(name).EVIDENCE_HEADERS:
            assert header in KEPT_HEADERS
    assert "x-twilio-signature" in KEPT_HEADERS and "x-sandbox-signature" in KEPT_HEADERS


def test_the_emulator_registers_what_the_classes_name():
    registry = emulator.load_providers()
    named = {
        n: providers.backend_class(n).EMULATOR
        for n in providers.known_names()
        if providers.backend_class(n).EMULATOR
    }
    assert set(named) == {"vonage-sms", "vonage-messages", "sinch", "infobip", "twilio"}
    for name, path in named.items():
        assert f"{registry[name].__module__}.{registry[name].__name__}" == path


def test_the_emulator_uses_the_sandbox_scenarios():
    assert set(emulator.SCENARIOS) == set(sandbox.SCENARIOS)
    for digit, table in sandbox.SCENARIOS.items():
        steps = emulator.SCENARIOS[digit]
        assert [(s.status, bool(s.error), s.offset_ms) for s in steps] == [
            (status, bool(code), offset) for status, code, offset in table
        ]


def test_check_runs_each_providers_own_rules(settings, monkeypatch):
    backend = "tests.providers.test_one_module.FakeProvider"
    monkeypatch.setitem(PROVIDER_SPECS, "fake", (backend, {}))
    settings.SMS_PROVIDERS = {
        **settings.SMS_PROVIDERS,
        "fake": {"BACKEND": backend, "OPTIONS": {"MODE": "no"}, "ENV": {}},
    }
    settings.SMS_PROVIDERS_ENABLED = ["sandbox", "fake"]
    assert "fake.E001" in [m.id for m in providers_configured(None)]
    settings.SMS_PROVIDERS["fake"]["OPTIONS"]["MODE"] = "ok"
    assert "fake.E001" not in [m.id for m in providers_configured(None)]


def test_webhook_authentication_options_come_from_the_class(settings, monkeypatch):
    """herald.E005 asks the provider's class which options authenticate its webhooks."""

    class SignedFake(FakeProvider):
        WEBHOOK_AUTH_OPTIONS = ("FAKE_SECRET",)

    monkeypatch.setattr("tests.providers.test_one_module.FakeProvider", SignedFake, raising=True)
    backend = "tests.providers.test_one_module.FakeProvider"
    monkeypatch.setitem(PROVIDER_SPECS, "fake", (backend, {}))
    settings.SMS_PROVIDERS = {
        **settings.SMS_PROVIDERS,
        "fake": {"BACKEND": backend, "OPTIONS": {"MODE": "ok"}, "ENV": {}},
    }
    settings.SMS_PROVIDERS_ENABLED = ["sandbox", "fake"]
    found = [m for m in providers_configured(None) if m.id == "herald.E005"]
    assert len(found) == 1 and "FAKE_SECRET" in found[0].msg
    settings.SMS_PROVIDERS["fake"]["OPTIONS"]["FAKE_SECRET"] = "s3cret"
    assert "herald.E005" not in [m.id for m in providers_configured(None)]
