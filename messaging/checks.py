"""System checks: an enabled provider missing a required setting fails `manage.py check`;
a provider whose webhook authentication is switched off is a deploy warning."""

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.utils.module_loading import import_string

from config.providers import PROVIDER_SPECS, open_sandbox_problems
from messaging import pricing


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
        errors += _webhook_auth_errors(name, config)
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
    errors += _route_errors()
    headroom = settings.SENDER_RATE_HEADROOM
    if not 0 <= headroom < 0.5:
        errors.append(
            Error(
                f"SENDER_RATE_HEADROOM is {headroom}: it is the share under each provider's "
                "RATE_LIMIT the senders pace at, from 0 (none) to below 0.5.",
                hint="The default, 0.05, paces a provider limited to 100/s at 95/s.",
                id="herald.E009",
            )
        )
    errors.extend(pricing.check_table(settings.SMS_PRICES))
    return errors


def _signing_on(config) -> bool:
    return str(config["OPTIONS"].get("WEBHOOK_SIGNING", "true")).lower() not in ("0", "false", "no")


def _webhook_auth_errors(name, config) -> list:
    """Signing is on unless switched off explicitly; then it needs its secret."""
    errors = []
    options, env_names = config["OPTIONS"], config.get("ENV", {})
    backend = import_string(config["BACKEND"])
    wanted = backend.WEBHOOK_AUTH_OPTIONS
    if _signing_on(config) and wanted and not any(options.get(o) for o in wanted):
        variables = " or ".join(env_names.get(o, (o,))[0] for o in wanted)
        switch = env_names.get("WEBHOOK_SIGNING", ("WEBHOOK_SIGNING",))[0]
        errors.append(
            Error(
                f"Provider '{name}' authenticates its webhooks but {variables} is not set.",
                hint=f"Set {variables}, or set {switch}=false to accept unauthenticated "
                "webhooks (check --deploy warns about that).",
                id="herald.E005",
            )
        )
    errors += backend.check(options, env_names)  # Provider.check
    return errors


def _route_errors() -> list:
    from messaging.services import routing

    try:
        table = routing.parse_routes(settings.SMS_ROUTES)
    except ValueError as exc:
        return [Error(f"SMS_ROUTES does not parse: {exc}",
                      hint="Write 'GB: sinch 70, infobip 30; *: vonage-sms 100'.",
                      id="herald.E013")]  # fmt: skip
    return [
        Error(f"SMS_ROUTES names '{name}', which is not enabled.", id="herald.E014")
        for name in routing.route_errors(table)
    ]


@register(Tags.security, deploy=True)
def no_open_sandbox(app_configs, **kwargs):
    """check --deploy: the sandbox in production needs a secret of the deployment's own."""
    return [
        Error(problem, hint="See README, 'The sandbox in production'.", id="herald.E010")
        for problem in open_sandbox_problems(
            settings.DEBUG, settings.SMS_PROVIDERS, settings.SMS_PROVIDERS_ENABLED
        )
    ]


def refuse_open_sandbox():
    """Called when a web or worker process starts (config/wsgi.py, run_sender, run_applier):
    the process does not start with an open sandbox in production."""
    from django.core.exceptions import ImproperlyConfigured

    problems = open_sandbox_problems(
        settings.DEBUG, settings.SMS_PROVIDERS, settings.SMS_PROVIDERS_ENABLED
    )
    if problems:
        raise ImproperlyConfigured(" ".join(problems))


@register()
def some_provider_enabled(app_configs, **kwargs):
    if settings.SMS_PROVIDERS_ENABLED:
        return []
    return [
        Error(
            "No SMS provider is enabled.",
            hint="Set SMS_PROVIDERS_ENABLED (for example 'twilio', or 'sandbox' with your own "
            "SANDBOX_WEBHOOK_SECRET). With DEBUG off the sandbox is not enabled by default.",
            id="herald.E011",
        )
    ]


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


@register(Tags.caches, deploy=True)
def shared_webhook_counters(app_configs, **kwargs):
    """The per-source webhook limit and the refused-request budget count in the cache: a
    process-local cache gives every gunicorn worker its own count."""
    backend = settings.CACHES["default"]["BACKEND"]
    if settings.RATELIMIT_ENABLE and backend.endswith("LocMemCache"):
        return [
            Warning(
                "CACHE_URL is a per-process cache: WEBHOOK_RATE_LIMIT and "
                "WEBHOOK_REFUSED_STORED_PER_MINUTE are counted per process, not per deployment.",
                hint="Set CACHE_URL=redis://127.0.0.1:6379/1 (or any shared cache).",
                id="herald.W010",
            )
        ]
    return []


# How long a stored receipt may wait before the check says no applier seems to run.
APPLIER_STALE_SECONDS = 60


@register(Tags.database)
def stored_receipts_applied(app_configs, databases=None, **kwargs):
    """Stored webhook requests waiting longer than a minute: nothing applies them (the
    Procfile's `worker` process, run_sender, applies them in its loop; or run_applier)."""
    if not databases or "default" not in databases:
        return []
    from django.db import DatabaseError

    from messaging import applier

    try:
        waiting, oldest = applier.backlog()
    except DatabaseError:  # `migrate` runs this check before the table exists; or no database
        return []
    if waiting and oldest > APPLIER_STALE_SECONDS:
        return [
            Warning(
                f"{waiting} stored webhook request(s) wait to be applied, the oldest for "
                f"{oldest:.0f} s: no applier seems to run.",
                hint="Run the Procfile's worker (manage.py run_sender) or manage.py run_applier.",
                id="herald.W011",
            )
        ]
    return []
