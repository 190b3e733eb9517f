"""Provider configuration, in Django's backend shape, filled from the environment.

    SMS_PROVIDERS = {"sinch": {"BACKEND": "messaging.providers.sinch.SinchProvider",
                               "OPTIONS": {...}}}

Each provider lists the environment variables it reads. `manage.py check` (messaging/checks.py)
names any required one that an enabled provider is missing. Secrets that sign webhooks accept a
comma-separated list so they can be rotated without downtime.
"""

# name -> (backend class path, {option: (ENV_VAR, default, required)})
PROVIDER_SPECS = {
    "sandbox": (
        "messaging.providers.sandbox.SandboxProvider",
        {
            "WEBHOOK_SECRET": ("SANDBOX_WEBHOOK_SECRET", "sandbox-secret", True),
            "RECEIPT_DELAY": ("SANDBOX_RECEIPT_DELAY", "2", False),
            "FROM": ("SANDBOX_FROM", "Herald", False),
        },
    ),
    "vonage-sms": (
        "messaging.providers.vonage_sms.VonageSmsProvider",
        {
            "API_KEY": ("VONAGE_API_KEY", "", True),
            "API_SECRET": ("VONAGE_API_SECRET", "", True),
            "SIGNATURE_SECRET": ("VONAGE_SIGNATURE_SECRET", "", False),
            "SIGNATURE_METHOD": ("VONAGE_SIGNATURE_METHOD", "sha256", False),
            "FROM": ("VONAGE_FROM", "", True),
            "BASE_URL": ("VONAGE_SMS_BASE_URL", "https://rest.nexmo.com", False),
            "WEBHOOK_SIGNING": ("VONAGE_SMS_WEBHOOK_SIGNING", "true", False),
        },
    ),
    "vonage-messages": (
        "messaging.providers.vonage_messages.VonageMessagesProvider",
        {
            "API_KEY": ("VONAGE_API_KEY", "", True),
            "API_SECRET": ("VONAGE_API_SECRET", "", False),
            "SIGNATURE_SECRET": ("VONAGE_SIGNATURE_SECRET", "", False),
            "APPLICATION_ID": ("VONAGE_APPLICATION_ID", "", False),
            "PRIVATE_KEY": ("VONAGE_PRIVATE_KEY", "", False),
            "FROM": ("VONAGE_FROM", "", True),
            "BASE_URL": ("VONAGE_MESSAGES_BASE_URL", "https://api.nexmo.com", False),
            "WEBHOOK_SIGNING": ("VONAGE_MESSAGES_WEBHOOK_SIGNING", "true", False),
        },
    ),
    "sinch": (
        "messaging.providers.sinch.SinchProvider",
        {
            "SERVICE_PLAN_ID": ("SINCH_SERVICE_PLAN_ID", "", True),
            "API_TOKEN": ("SINCH_API_TOKEN", "", True),
            "REGION": ("SINCH_REGION", "us", False),
            "FROM": ("SINCH_FROM", "", True),
            "WEBHOOK_SECRET": ("SINCH_WEBHOOK_SECRET", "", False),
            "BASE_URL": ("SINCH_BASE_URL", "", False),
            "WEBHOOK_SIGNING": ("SINCH_WEBHOOK_SIGNING", "true", False),
        },
    ),
    "infobip": (
        "messaging.providers.infobip.InfobipProvider",
        {
            "API_KEY": ("INFOBIP_API_KEY", "", True),
            "BASE_URL": ("INFOBIP_BASE_URL", "", True),
            "FROM": ("INFOBIP_FROM", "", True),
            "WEBHOOK_USERNAME": ("INFOBIP_WEBHOOK_USERNAME", "", False),
            "WEBHOOK_PASSWORD": ("INFOBIP_WEBHOOK_PASSWORD", "", False),
            "WEBHOOK_TOKEN": ("INFOBIP_WEBHOOK_TOKEN", "", False),
            "WEBHOOK_SIGNING": ("INFOBIP_WEBHOOK_SIGNING", "true", False),
        },
    ),
    "twilio": (
        "messaging.providers.twilio.TwilioProvider",
        {
            "ACCOUNT_SID": ("TWILIO_ACCOUNT_SID", "", True),
            "AUTH_TOKEN": ("TWILIO_AUTH_TOKEN", "", True),
            "FROM": ("TWILIO_FROM", "", False),
            "MESSAGING_SERVICE_SID": ("TWILIO_MESSAGING_SERVICE_SID", "", False),
            "BASE_URL": ("TWILIO_BASE_URL", "https://api.twilio.com", False),
            "WEBHOOK_SIGNING": ("TWILIO_WEBHOOK_SIGNING", "true", False),
        },
    ),
}


# The options that authenticate each provider's webhooks: with WEBHOOK_SIGNING on (the default),
# at least one must be set, or `manage.py check` fails naming the variables.
VONAGE_SIGNATURE_METHODS = ("md5hash", "md5", "sha1", "sha256", "sha512")

# Published in the README and the sandbox's docs: anyone can sign with it.
DEFAULT_SANDBOX_SECRET = "sandbox-secret"


def build_sms_providers(env, debug=False):
    """Return (SMS_PROVIDERS, enabled names, default name) from the environment. Only with
    DEBUG on does the sandbox run without being asked for: in production nothing is enabled
    unless SMS_PROVIDERS_ENABLED says so."""
    enabled = env.list("SMS_PROVIDERS_ENABLED", default=["sandbox"] if debug else [])
    providers = {}
    for name in enabled:
        if name not in PROVIDER_SPECS:
            # Reported by messaging.checks as an error naming the bad value.
            providers[name] = {"BACKEND": None, "OPTIONS": {}, "ENV": {}}
            continue
        backend, spec = PROVIDER_SPECS[name]
        options, env_names = {}, {}
        for option, (var, default, required) in spec.items():
            options[option] = env.str(var, default=default)
            env_names[option] = (var, required)
        providers[name] = {
            "BACKEND": backend,
            "OPTIONS": options,
            "ENV": env_names,
            "TIMEOUT_HOURS": env.int(f"{var_prefix(name)}_RECEIPT_TIMEOUT_HOURS", default=0),
            "RATE_LIMIT": env.float(f"{var_prefix(name)}_RATE_LIMIT", default=0.0),
        }
    default = env.str("SMS_DEFAULT_PROVIDER", default=enabled[0] if enabled else "sandbox")
    return providers, enabled, default


def open_sandbox_problems(debug: bool, providers: dict, enabled: list) -> list:
    """Why this configuration would run an open sandbox in production (empty: it would not).
    With DEBUG off the sandbox must be listed in SMS_PROVIDERS_ENABLED (build_sms_providers
    never adds it then) and signed with a secret of the deployment's own."""
    if debug or "sandbox" not in enabled:
        return []
    secrets = str(providers.get("sandbox", {}).get("OPTIONS", {}).get("WEBHOOK_SECRET") or "")
    if DEFAULT_SANDBOX_SECRET in [s.strip() for s in secrets.split(",")] or not secrets.strip():
        return [
            "The sandbox provider is enabled with DEBUG off and SANDBOX_WEBHOOK_SECRET is the "
            f"published default '{DEFAULT_SANDBOX_SECRET}' (or empty): anyone could post it "
            "receipts and inbound messages. Set SANDBOX_WEBHOOK_SECRET to a secret of your own, "
            "or remove 'sandbox' from SMS_PROVIDERS_ENABLED."
        ]
    return []


def var_prefix(name: str) -> str:
    return name.upper().replace("-", "_")
