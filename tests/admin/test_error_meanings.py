"""Error codes get a meaning from the provider module's table when the report has no text."""

import pytest

from messaging.admin.display import error_meaning


@pytest.fixture
def all_providers(settings):
    from config.providers import PROVIDER_SPECS

    settings.SMS_PROVIDERS = {
        name: {"BACKEND": backend, "OPTIONS": {}, "ENV": {}}
        for name, (backend, _) in PROVIDER_SPECS.items()
    }


@pytest.mark.parametrize(
    "provider,code,meaning",
    [
        ("sinch", "402", "Message unroutable"),
        ("twilio", "30003", "Unreachable destination handset"),
        ("vonage-sms", "2", "Absent subscriber - temporary"),
    ],
)
def test_provider_tables(all_providers, provider, code, meaning):
    assert error_meaning(provider, code) == meaning


def test_text_from_the_provider_wins(all_providers):
    assert error_meaning("sinch", "402", "said by Sinch") == "said by Sinch"
