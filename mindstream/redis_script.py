"""A server-side Lua script called by its SHA1 in pipelines, loaded when the server lacks it:
the one place that sends ``EVALSHA`` and answers NOSCRIPT.

Scripts are sent as ``EVALSHA`` (the script body crosses the network once, not with every
call) through ``execute_command``: redis-py's cluster pipeline refuses its ``evalsha()`` method
but routes the plain command by its keys (the keys of one call must share a hash slot; the
caller groups them), or to the node a call names (``target_nodes``). A server that restarted,
flushed its script cache or a replica that took over without the script answers NOSCRIPT;
every script here is idempotent, so :meth:`LuaScript.execute` and
:meth:`LuaScript.execute_async` then load the script (on every master of a cluster) and send
the whole pipeline again, once. Every other error is raised as the client raised it.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import redis
import redis.asyncio
from redis.exceptions import NoScriptError


class LuaScript:
    """One Lua script: its source and the SHA1 ``EVALSHA`` names it by."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324  # Redis's script id

    def queue(self, pipe: Any, numkeys: int, *args: Any, **options: Any) -> None:
        """Add one call (``numkeys`` keys first, then the arguments) to ``pipe``; ``options`` go
        to ``execute_command`` (a cluster pipeline's ``target_nodes``)."""
        pipe.execute_command("EVALSHA", self.sha, numkeys, *args, **options)

    def execute(self, client: redis.Redis, fill: Callable[[Any], None]) -> list[Any]:
        """The replies of a pipeline that ``fill`` queues its calls (and any other commands)
        on; sent again once, after loading the script, when the server answers NOSCRIPT."""
        for attempt in (1, 2):
            pipe = client.pipeline(transaction=False)
            fill(pipe)
            try:
                return list(pipe.execute())
            except NoScriptError:
                if attempt == 2:
                    raise
                client.script_load(self.source)
        raise AssertionError("unreachable")

    async def execute_async(
        self,
        client: redis.asyncio.Redis,
        fill: Callable[[Any], Awaitable[None] | None],
    ) -> list[Any]:
        """:meth:`execute` for an asyncio client; ``fill`` may be a coroutine function (to ask
        the client what it queues, e.g. a cluster's slot map), awaited before each send."""
        for attempt in (1, 2):
            pipe = client.pipeline(transaction=False)
            filled = fill(pipe)
            if inspect.isawaitable(filled):
                await filled
            try:
                return list(await pipe.execute())
            except NoScriptError:
                if attempt == 2:
                    raise
                await client.script_load(self.source)
        raise AssertionError("unreachable")
