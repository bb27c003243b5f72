"""Running the recall service: load the current bundle's index, then serve until stopped."""

from __future__ import annotations

import asyncio
import logging
import sys

from aiohttp import web

from mindstream.settings import Settings
from recall.registry import IndexRegistry
from recall.service import create_app

logger = logging.getLogger(__name__)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (it comes with faust-streaming), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def serve(settings: Settings) -> None:
    """Load the bundle's index (failing fast if there is none), then serve HTTP until SIGINT or
    SIGTERM; in-flight requests get ``shutdown_timeout`` seconds to finish."""
    registry = IndexRegistry(settings, progress=sys.stderr.isatty(), freeze_gc=True)
    item_index = registry.load(settings.bundle_path)
    app = create_app(settings, registry)
    print(
        f"recall serving on http://{settings.recall_host}:{settings.recall_port} "
        f"model={item_index.version} index={item_index.kind} items={item_index.n_items}",
        flush=True,
    )
    web.run_app(
        app,
        host=settings.recall_host,
        port=settings.recall_port,
        access_log=None,
        print=None,
        shutdown_timeout=10.0,
        loop=new_event_loop(),
    )
