import pytest


def backend(path):
    return {"BACKEND": path, "OPTIONS": {"FROM": "Herald"}, "ENV": {}}


@pytest.fixture
def four_providers(settings):
    """sandbox, sinch, infobip and vonage-sms enabled (routing only needs them registered)."""
    settings.SMS_PROVIDERS = {
        "sandbox": backend("messaging.providers.sandbox.SandboxProvider"),
        "sinch": backend("messaging.providers.sinch.SinchProvider"),
        "infobip": backend("messaging.providers.infobip.InfobipProvider"),
        "vonage-sms": backend("messaging.providers.vonage_sms.VonageSmsProvider"),
    }
    settings.SMS_PROVIDERS_ENABLED = list(settings.SMS_PROVIDERS)
    settings.SMS_DEFAULT_PROVIDER = "sandbox"
    settings.SMS_FALLBACK_PROVIDERS = []
    settings.SMS_ROUTES = ""
    return settings
