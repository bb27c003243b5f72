"""The Faust app of the stream worker (topics, tables and agents live in their own modules)."""

from __future__ import annotations

import faust

from mindstream.settings import Settings
from stream.config import app_options

settings = Settings.from_env()
app = faust.App(settings.app_id, **app_options(settings))
