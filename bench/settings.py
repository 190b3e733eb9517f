"""Benchmark settings: the production settings (config.settings, from the environment) plus a
bench-only URLconf that adds a bare 200-OK view to compare the webhook against."""

from config.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"

# Store-then-apply switch (messaging/applier.py), from the environment like every setting; kept
# here as well so the bench runs whether or not config/settings.py defines it yet.
WEBHOOK_APPLY_INLINE = env.bool("WEBHOOK_APPLY_INLINE", default=True)  # noqa: F405
