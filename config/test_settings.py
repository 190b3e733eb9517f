"""Settings for the test suite: the production settings with test-friendly environment."""

import os

os.environ["HERALD_READ_DOTENV"] = "false"
os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production")
os.environ.setdefault("ALLOWED_HOSTS", "*")
os.environ.setdefault("SECURE_SSL_REDIRECT", "false")
os.environ.setdefault("SESSION_COOKIE_SECURE", "false")
os.environ.setdefault("CSRF_COOKIE_SECURE", "false")
os.environ.setdefault(
    "STATICFILES_BACKEND", "django.contrib.staticfiles.storage.StaticFilesStorage"
)
os.environ.setdefault("SANDBOX_RECEIPT_DELAY", "0")
os.environ.setdefault("LOG_LEVEL", "WARNING")
# DEBUG is off here, as in production: the sandbox must be enabled explicitly and signed with a
# secret of our own (config/providers.py open_sandbox_problems). Tests sign with this one.
TEST_SANDBOX_SECRET = "test-sandbox-secret-not-the-published-default"
os.environ.setdefault("SMS_PROVIDERS_ENABLED", "sandbox")
os.environ.setdefault("SANDBOX_WEBHOOK_SECRET", TEST_SANDBOX_SECRET)
# The suite posts thousands of forged requests a minute and checks each one is kept; the flood
# test (tests/test_webhook_flood.py) sets the production-sized budget itself.
os.environ.setdefault("WEBHOOK_REFUSED_STORED_PER_MINUTE", "100000000")
# Most tests post a receipt and look at the message at once: they run inline (one transaction
# with the evidence row). Deferred apply, the production default, has its own tests
# (tests/load/test_applier.py, the storm) and tests/load/test_applier.py checks the default.
os.environ.setdefault("WEBHOOK_APPLY_INLINE", "true")

from config.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast test logins

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    # A file, not the in-memory default: threads (sender pool, live server) then wait on the
    # database lock with a timeout, as in production, instead of failing on shared-cache locks.
    import tempfile

    DATABASES["default"]["TEST"] = {  # noqa: F405
        "NAME": os.path.join(tempfile.gettempdir(), f"herald-test-{os.getpid()}.sqlite3")
    }
