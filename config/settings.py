"""Herald settings.

Every value comes from the environment (or a `.env` file beside manage.py) through one
django-environ object; nothing else in the project reads os.environ. Defaults are the safe
production ones: DEBUG off, HTTPS-only cookies, HSTS. `scripts/dev` writes a `.env` for local use.
"""

from pathlib import Path

import environ
from django.utils.csp import CSP

from config.providers import build_sms_providers

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# The test suite sets HERALD_READ_DOTENV=false so a developer's .env never changes test runs.
if env.bool("HERALD_READ_DOTENV", default=True):
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)
# No default key outside DEBUG: a production process must be given one.
SECRET_KEY = env("SECRET_KEY", default="dev-only-insecure-key" if DEBUG else None)
if not SECRET_KEY:
    raise environ.ImproperlyConfigured("Set the SECRET_KEY environment variable.")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "messaging",
]

MIDDLEWARE = [
    "messaging.logging.RequestLogMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "messaging.api.problems.ProblemMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Admin pages show times in the staff user's (browser's) zone, else UTC.
    "messaging.admin.timezone.StaffTimeZoneMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.csp",  # {{ csp_nonce }}
            ],
        },
    },
]

# SQLite in the project directory by default; DATABASE_URL=postgres://... in production.
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'herald.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web process read while the sender writes; IMMEDIATE takes the write lock at
    # BEGIN so two processes never deadlock upgrading a read lock.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 30, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
    # No `SELECT 1` before each request's first query: a connection that died while idle fails
    # that query instead (a webhook answers 503 and the provider retries; Django then drops it).
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = env.bool("CONN_HEALTH_CHECKS", default=False)
    # psycopg prepares a statement server-side after it ran this many times on a connection
    # (the webhook's evidence INSERT; Django's own cursors bind client-side and never prepare).
    # Empty disables it: needed behind PgBouncer in transaction mode before 1.21, or without
    # max_prepared_statements (a prepared statement lives in one server session).
    _prepare = env("DB_PREPARE_THRESHOLD", default="5")
    DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = (
        int(_prepare) if _prepare.strip() else None
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Rate-limit counters live here; use redis://127.0.0.1:6379/1 when running several processes.
CACHES = {"default": env.cache("CACHE_URL", default="locmemcache://herald")}
RATELIMIT_USE_CACHE = "default"
if CACHES["default"]["BACKEND"] == "django_redis.cache.RedisCache":
    # A Redis that stops answering fails fast (readiness says so) instead of hanging requests.
    CACHES["default"].setdefault("OPTIONS", {}).setdefault("SOCKET_CONNECT_TIMEOUT", 2)
    CACHES["default"]["OPTIONS"].setdefault("SOCKET_TIMEOUT", 2)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
# Times read the same everywhere: to the second, with the zone (config/formats/en/formats.py).
FORMAT_MODULE_PATH = ["config.formats"]
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": env(
            "STATICFILES_BACKEND",
            default="whitenoise.storage.CompressedManifestStaticFilesStorage",
        )
    },
}

# --- Security (production defaults; DEBUG relaxes the HTTPS-only ones) ---
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
# Probes and the Prometheus scrape reach the process directly, over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True  # X-Content-Type-Options: nosniff
SECURE_REFERRER_POLICY = "same-origin"  # admin URLs (message ids, searches) stay on this site
X_FRAME_OPTIONS = "DENY"
# Content-Security-Policy (Django's built-in middleware): scripts and styles only from our own
# static files, or inline where the template carries the request's nonce (the API docs' page);
# Swagger UI's icons are data: images. The browser suite fails on any violation.
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF, CSP.NONCE],
    "style-src": [CSP.SELF, CSP.NONCE],
    "img-src": [CSP.SELF, "data:"],
    "font-src": [CSP.SELF],
    "connect-src": [CSP.SELF],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.NONE],
    "form-action": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
}
# The webhook view reads the raw body itself and enforces WEBHOOK_MAX_BODY_BYTES (413).
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=2_621_440)

# --- REST framework ---
REST_FRAMEWORK = {
    # Client API keys only: no session authentication, so the admin's cookie is no way in.
    "DEFAULT_AUTHENTICATION_CLASSES": ["messaging.api.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"]
    + (["rest_framework.renderers.BrowsableAPIRenderer"] if DEBUG else []),
    "EXCEPTION_HANDLER": "messaging.api.problems.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Herald SMS API",
    "DESCRIPTION": (
        "Send SMS through several providers and read their delivery audit trail.\n\n"
        "**Errors** are RFC 9457 problem documents (`application/problem+json`: `type`, "
        "`title`, `status`, `detail`, `code`, and `errors` with a JSON pointer per field); "
        "`GET /api/v1/problems/{code}` describes each type.\n\n"
        "**Rate limits** are per client: reads `API_RATE_LIMIT` (600/min by default), sends "
        "also `API_SEND_RATE_LIMIT` (300/min). Every answer carries `RateLimit-Limit`, "
        "`RateLimit-Remaining` and `RateLimit-Reset`; a 429 adds `Retry-After`.\n\n"
        "**Input is strict**: JSON types are checked, unknown fields are refused, `send_at` "
        "needs a UTC offset."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "messaging.api.schema.postprocess",
    ],
}

# --- Herald ---
PUBLIC_BASE_URL = env("PUBLIC_BASE_URL", default="http://127.0.0.1:8000").rstrip("/")
API_RATE_LIMIT = env("API_RATE_LIMIT", default="600/m")
API_SEND_RATE_LIMIT = env("API_SEND_RATE_LIMIT", default="300/m")
# Larger API request bodies are refused with 413 before they are read (a 1,000-recipient batch
# with variables is about 200 kB).
API_MAX_BODY_BYTES = env.int("API_MAX_BODY_BYTES", default=1_048_576)
BATCH_MAX_RECIPIENTS = env.int("BATCH_MAX_RECIPIENTS", default=1000)
# Estimated prices for quotes: {"provider or *": {"country code or *": price per segment}}, as
# JSON, e.g. {"sinch": {"GB": "0.035", "*": "0.05"}}; empty: quotes carry no price.
SMS_PRICES = env.json("SMS_PRICES", default={})
SMS_PRICE_CURRENCY = env("SMS_PRICE_CURRENCY", default="EUR")
WEBHOOK_RATE_LIMIT = env("WEBHOOK_RATE_LIMIT", default="60000/m")
WEBHOOK_MAX_BODY_BYTES = env.int("WEBHOOK_MAX_BODY_BYTES", default=1_048_576)
# Refused webhook requests (failed authentication, too large) stored per provider per minute,
# each with its headers, size, hash and first 2 KB; beyond it they are only counted
# (RefusedWebhookTally). The count lives in the cache: shared across processes with CACHE_URL.
WEBHOOK_REFUSED_STORED_PER_MINUTE = env.int("WEBHOOK_REFUSED_STORED_PER_MINUTE", default=60)
RATELIMIT_ENABLE = env.bool("RATELIMIT_ENABLE", default=True)
# true: the webhook view applies what it stored before answering. false: it only stores and
# answers, and `run_applier` (or the sender's loop) applies stored receipts in batches.
# Deferred by default: the Procfile's worker (run_sender) applies stored receipts in its loop;
# `manage.py check --database default` warns (herald.W011) when they wait with no applier.
WEBHOOK_APPLY_INLINE = env.bool("WEBHOOK_APPLY_INLINE", default=False)

SENDER_BATCH_SIZE = env.int("SENDER_BATCH_SIZE", default=50)
SENDER_CONCURRENCY = env.int("SENDER_CONCURRENCY", default=8)
SENDER_LEASE_SECONDS = env.int("SENDER_LEASE_SECONDS", default=120)
SENDER_MAX_ATTEMPTS = env.int("SENDER_MAX_ATTEMPTS", default=6)
SENDER_BACKOFF_BASE = env.float("SENDER_BACKOFF_BASE", default=2.0)
SENDER_BACKOFF_CAP = env.float("SENDER_BACKOFF_CAP", default=600.0)
SENDER_POLL_INTERVAL = env.float("SENDER_POLL_INTERVAL", default=0.5)
# After applying less than a full batch of stored receipts, the worker waits this long before
# its next pass, so batches grow with the receipt rate (bench/RESULTS.md, issue 12).
APPLIER_GATHER_SECONDS = env.float("APPLIER_GATHER_SECONDS", default=0.1)
SENDER_HTTP_TIMEOUT = env.float("SENDER_HTTP_TIMEOUT", default=10.0)
# Pace this share under each provider's RATE_LIMIT, for scheduling jitter (bench/RESULTS-send.md).
SENDER_RATE_HEADROOM = env.float("SENDER_RATE_HEADROOM", default=0.05)
SMS_FALLBACK_PROVIDERS = env.list("SMS_FALLBACK_PROVIDERS", default=[])
# Routing (messaging/services/routing.py): destination -> weighted providers, e.g.
# "GB: sinch 70, infobip 30; *: vonage-sms 100". Empty: SMS_DEFAULT_PROVIDER, with
# SMS_FALLBACK_PROVIDERS as standbys. Route rows in the admin override it per destination/client.
SMS_ROUTES = env.str("SMS_ROUTES", default="")
ROUTING_TABLE_CACHE_SECONDS = env.float("ROUTING_TABLE_CACHE_SECONDS", default=5.0)
# Provider health (messaging/services/provider_health.py): circuits on send outcomes...
ROUTING_BUCKET_SECONDS = env.int("ROUTING_BUCKET_SECONDS", default=5)
ROUTING_HEALTH_FLUSH_SECONDS = env.float("ROUTING_HEALTH_FLUSH_SECONDS", default=1.0)
ROUTING_HEALTH_CACHE_SECONDS = env.float("ROUTING_HEALTH_CACHE_SECONDS", default=1.0)
ROUTING_HEALTH_WINDOW_SECONDS = env.int("ROUTING_HEALTH_WINDOW_SECONDS", default=60)
ROUTING_CIRCUIT_MIN_REQUESTS = env.int("ROUTING_CIRCUIT_MIN_REQUESTS", default=10)
ROUTING_CIRCUIT_ERROR_RATE = env.float("ROUTING_CIRCUIT_ERROR_RATE", default=0.5)
ROUTING_CIRCUIT_OPEN_SECONDS = env.float("ROUTING_CIRCUIT_OPEN_SECONDS", default=30.0)
ROUTING_PROBE_INTERVAL_SECONDS = env.float("ROUTING_PROBE_INTERVAL_SECONDS", default=2.0)
ROUTING_PROBES_TO_CLOSE = env.int("ROUTING_PROBES_TO_CLOSE", default=3)
# ...and demotion on receipts (weight x ROUTING_DEMOTE_FACTOR until they recover).
ROUTING_RECEIPT_WINDOW_MINUTES = env.int("ROUTING_RECEIPT_WINDOW_MINUTES", default=60)
ROUTING_RECEIPT_EVALUATE_SECONDS = env.float("ROUTING_RECEIPT_EVALUATE_SECONDS", default=60.0)
ROUTING_RECEIPT_MIN_SAMPLE = env.int("ROUTING_RECEIPT_MIN_SAMPLE", default=50)
ROUTING_RECEIPT_SAMPLE_MAX = env.int("ROUTING_RECEIPT_SAMPLE_MAX", default=5000)
ROUTING_DEMOTE_LATENCY_P95 = env.float("ROUTING_DEMOTE_LATENCY_P95", default=300.0)
ROUTING_DEMOTE_DELIVERY_RATE = env.float("ROUTING_DEMOTE_DELIVERY_RATE", default=0.8)
ROUTING_DEMOTE_FACTOR = env.float("ROUTING_DEMOTE_FACTOR", default=0.1)
# Messages with no final receipt after this many hours become `unknown` (see `reconcile`).
RECEIPT_TIMEOUT_HOURS = env.int("RECEIPT_TIMEOUT_HOURS", default=72)
RAW_PAYLOAD_RETENTION_DAYS = env.int("RAW_PAYLOAD_RETENTION_DAYS", default=90)
MAX_BODY_CHARS = env.int("MAX_BODY_CHARS", default=1600)
# Message bodies and raw event payloads are erased after this many days by purge_payloads
# (0: kept forever); a client's retention_body_days overrides it.
RETENTION_BODY_DAYS = env.int("RETENTION_BODY_DAYS", default=30)
RETENTION_BATCH_SIZE = env.int("RETENTION_BATCH_SIZE", default=2000)
# Delivered or given-up status callbacks (and their attempts) are deleted after this many days
# by purge_payloads (0: kept forever); the newest of each message stays, so its sequence goes on.
CALLBACK_RETENTION_DAYS = env.int("CALLBACK_RETENTION_DAYS", default=30)

# --- Operations: metrics and readiness ---
# /metrics answers 404 until a token is set; then only `Authorization: Bearer <token>`.
METRICS_TOKEN = env("METRICS_TOKEN", default="")
# Optional addresses or networks allowed to scrape (empty: any address with the token).
METRICS_ALLOWED_IPS = env.list("METRICS_ALLOWED_IPS", default=[])
# Shared by every process of a host (gunicorn workers and the sender) so /metrics sums their
# counters; prometheus_client reads it from the environment, so it cannot be set here alone.
PROMETHEUS_MULTIPROC_DIR = env("PROMETHEUS_MULTIPROC_DIR", default="")
# /readyz fails when no sender heartbeated within this many seconds (0: no worker check).
READINESS_HEARTBEAT_SECONDS = env.int("READINESS_HEARTBEAT_SECONDS", default=60)
HEARTBEAT_INTERVAL = env.float("HEARTBEAT_INTERVAL", default=5.0)

SMS_PROVIDERS, SMS_PROVIDERS_ENABLED, SMS_DEFAULT_PROVIDER = build_sms_providers(env, DEBUG)
# Inbound messages through the sandbox change the opt-out list only where the sandbox is all
# there is (DEBUG, or no real provider enabled): its numbers are not real subscribers.
SANDBOX_INBOUND_CHANGES_OPTOUTS = DEBUG or SMS_PROVIDERS_ENABLED == ["sandbox"]

# --- Status callbacks (messaging/services/callbacks.py, `run_callbacks`) ---
CALLBACK_TIMEOUT = env.float("CALLBACK_TIMEOUT", default=5.0)  # seconds per request
CALLBACK_BACKOFF_BASE = env.float("CALLBACK_BACKOFF_BASE", default=5.0)
CALLBACK_BACKOFF_CAP = env.float("CALLBACK_BACKOFF_CAP", default=1800.0)
CALLBACK_MAX_AGE_HOURS = env.float("CALLBACK_MAX_AGE_HOURS", default=24.0)
# true (local development, tests only): http:// and private, loopback addresses are allowed.
CALLBACK_ALLOW_PRIVATE_NETWORKS = env.bool("CALLBACK_ALLOW_PRIVATE_NETWORKS", default=False)
CALLBACK_CONCURRENCY = env.int("CALLBACK_CONCURRENCY", default=16)  # requests in flight
CALLBACK_ENDPOINT_CONCURRENCY = env.int("CALLBACK_ENDPOINT_CONCURRENCY", default=4)  # per URL
CALLBACK_LEASE_SECONDS = env.int("CALLBACK_LEASE_SECONDS", default=60)
CALLBACK_POLL_INTERVAL = env.float("CALLBACK_POLL_INTERVAL", default=0.2)
CALLBACK_CIRCUIT_THRESHOLD = env.int("CALLBACK_CIRCUIT_THRESHOLD", default=5)
CALLBACK_CIRCUIT_COOLDOWN = env.float("CALLBACK_CIRCUIT_COOLDOWN", default=30.0)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {
            "()": "messaging.logging.RedactingJsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        }
    },
    "filters": {"redact": {"()": "messaging.logging.RedactSecretsFilter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["redact"]}
    },
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {
        # Our own request line replaces Django's, which would log the query string.
        "django.server": {"level": "WARNING"},
        "django.request": {"level": "ERROR"},
    },
}
