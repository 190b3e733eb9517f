"""Provider registry: instances built once from settings.SMS_PROVIDERS."""

from functools import cache

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string


class UnknownProvider(LookupError):
    pass


@cache
def get_provider(name: str):
    config = settings.SMS_PROVIDERS.get(name)
    if not config or not config.get("BACKEND"):
        raise UnknownProvider(name)
    return import_string(config["BACKEND"])(name, config.get("OPTIONS", {}))


def known_names() -> list:
    """Every provider Herald has a module for (config.providers.PROVIDER_SPECS), in order."""
    from config.providers import PROVIDER_SPECS

    return list(PROVIDER_SPECS)


@cache
def backend_class(name: str):
    """The Provider class of a known provider, enabled or not."""
    from config.providers import PROVIDER_SPECS

    return import_string(PROVIDER_SPECS[name][0])


def enabled_names() -> list:
    return list(settings.SMS_PROVIDERS_ENABLED)


def default_name() -> str:
    return settings.SMS_DEFAULT_PROVIDER


def is_enabled(name: str) -> bool:
    return name in settings.SMS_PROVIDERS and bool(settings.SMS_PROVIDERS[name].get("BACKEND"))


@receiver(setting_changed)
def _reset(setting, **kwargs):
    if setting in ("SMS_PROVIDERS", "PUBLIC_BASE_URL"):
        get_provider.cache_clear()
