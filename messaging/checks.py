"""System checks: an enabled provider missing a required setting fails `manage.py check`;
a provider whose webhook authentication is switched off is a deploy warning."""

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

from config.providers import PROVIDER_SPECS


@register()
def providers_configured(app_configs, **kwargs):
    errors = []
    for name in settings.SMS_PROVIDERS_ENABLED:
        if name not in PROVIDER_SPECS:
            errors.append(
                Error(
                    f"SMS_PROVIDERS_ENABLED names an unknown provider '{name}'.",
                    hint="Known: " + ", ".join(sorted(PROVIDER_SPECS)),
                    id="herald.E001",
                )
            )
            continue
        config = settings.SMS_PROVIDERS[name]
        for option, (var, required) in config.get("ENV", {}).items():
            if required and not config["OPTIONS"].get(option):
                errors.append(
                    Error(
                        f"Provider '{name}' is enabled but {var} is not set.",
                        hint=f"Set {var} in the environment, or remove '{name}' from "
                        "SMS_PROVIDERS_ENABLED.",
                        id="herald.E002",
                    )
                )
    if settings.SMS_DEFAULT_PROVIDER not in settings.SMS_PROVIDERS_ENABLED:
        errors.append(
            Error(
                f"SMS_DEFAULT_PROVIDER '{settings.SMS_DEFAULT_PROVIDER}' is not enabled.",
                id="herald.E003",
            )
        )
    for name in settings.SMS_FALLBACK_PROVIDERS:
        if name not in settings.SMS_PROVIDERS_ENABLED:
            errors.append(
                Error(
                    f"SMS_FALLBACK_PROVIDERS names '{name}', which is not enabled.",
                    id="herald.E004",
                )  # fmt: skip
            )
    return errors


@register(Tags.security, deploy=True)
def webhook_signing(app_configs, **kwargs):
    warnings = []
    for name, config in settings.SMS_PROVIDERS.items():
        signing = str(config.get("OPTIONS", {}).get("WEBHOOK_SIGNING", "true")).lower()
        if signing in ("0", "false", "no"):
            warnings.append(
                Warning(
                    f"Webhook authentication is switched off for provider '{name}'.",
                    hint="Anyone who can reach its webhook URLs can forge receipts.",
                    id="herald.W001",
                )
            )
    return warnings
