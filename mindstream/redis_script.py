"""A server-side Lua script called by its SHA1 in pipelines, loaded when the server lacks it.

Scripts are sent as ``EVALSHA`` (the script body crosses the network once, not with every
call) through ``execute_command``: redis-py's cluster pipeline refuses its ``evalsha()`` method
but routes the plain command by its keys. A server that restarted, flushed its script cache or
a replica that took over without the script answers NOSCRIPT; every script here is idempotent,
so :meth:`LuaScript.execute_async` then loads the script (on every master of a cluster) and
sends the whole pipeline again, once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import redis.asyncio
from redis.exceptions import NoScriptError


class LuaScript:
    """One Lua script: its source and the SHA1 ``EVALSHA`` names it by."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324  # Redis's script id

    def queue(self, pipe: Any, numkeys: int, *args: Any) -> None:
        """Add one call (``numkeys`` keys first, then the arguments) to ``pipe``."""
        pipe.execute_command("EVALSHA", self.sha, numkeys, *args)

    async def execute_async(
        self, client: redis.asyncio.Redis, fill: Callable[[Any], None]
    ) -> list[Any]:
        """The replies of a pipeline that ``fill`` queues its calls on; sent again once, after
        loading the script, when the server answers NOSCRIPT."""
        for attempt in (1, 2):
            pipe = client.pipeline(transaction=False)
            fill(pipe)
            try:
                return list(await pipe.execute())
            except NoScriptError:
                if attempt == 2:
                    raise
                await client.script_load(self.source)
        raise AssertionError("unreachable")
