"""The tutorial baseline's settings: Herald's bench settings (production settings, same
middleware, same database) with a URLconf that adds the view the providers' own tutorials
write (bench/tutorial_urls.py)."""

from bench.settings import *  # noqa: F403

ROOT_URLCONF = "bench.tutorial_urls"
