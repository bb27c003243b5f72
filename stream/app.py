"""The Faust app of the stream worker (topics, tables and agents live in their own modules)."""

from __future__ import annotations

import faust

from mindstream.settings import Settings
from stream.config import app_options, set_consumer_fetch_max_wait

settings = Settings.from_env()
set_consumer_fetch_max_wait(settings.profile.consumer_fetch_max_wait_ms)
app = faust.App(settings.app_id, **app_options(settings))
