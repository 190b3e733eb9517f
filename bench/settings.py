"""Benchmark settings: the production settings (config.settings, from the environment) plus a
bench-only URLconf that adds a bare 200-OK view to compare the webhook against."""

from config.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
