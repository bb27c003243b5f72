"""Calls coalesced by event-loop round: the calls that requests make while the loop runs one
round of ready callbacks are served together, by one call over all their keys.

Under load several requests reach the same step in the same round (the loop handles every
socket that became readable, and each handler runs up to its first ``await``). The recall
service coalesces two steps this way:

- single-user record reads go to Redis as one pipeline: one pipeline of four reads costs
  redis-py about half the client CPU of four separate commands;
- single-user searches go to the index as one ``recall_many`` call, which shares the Python
  and numpy work of a search among the requests (BENCHMARKS.md).

The first call of a round leads: it yields the loop once, then makes one call over every key
asked for meanwhile and hands each waiting request its outcome. A lone call is made as a plain
single call, so it costs no more than an uncoalesced one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Key = TypeVar("Key")
Outcome = TypeVar("Outcome")


class Coalesced(Generic[Key, Outcome]):
    """Calls of one key each, made together when they are asked for in the same loop round.

    ``one(key)`` serves one key, ``many(keys)`` several in one call, aligned with ``keys``; an
    exception either raises (a connection error) reaches every call of that round, so an
    outcome that concerns one key only (a record that does not decode) is returned as a value.
    A round of several calls runs as a task of its own, so a request whose handler is cancelled
    (its client gone, the server stopping) does not take the other requests' calls of its
    round with it.
    """

    def __init__(
        self,
        one: Callable[[Key], Awaitable[Outcome]],
        many: Callable[[Sequence[Key]], Awaitable[Sequence[Outcome]]],
    ) -> None:
        self._one = one
        self._many = many
        # Calls waiting for the current round's leader: (key, future of its outcome).
        self._waiting: list[tuple[Key, asyncio.Future[Outcome]]] | None = None
        # Rounds in flight (the loop keeps only weak references to tasks).
        self._rounds: set[asyncio.Task[Outcome]] = set()

    async def call(self, key: Key) -> Outcome:
        if self._waiting is not None:
            future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
            self._waiting.append((key, future))
            return await future
        waiting: list[tuple[Key, asyncio.Future[Outcome]]] = []
        self._waiting = waiting
        try:
            # One loop round: the other requests that are ready run up to their call.
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            self._waiting = None
            if waiting:
                self._start_round(key, waiting)  # the others still get their outcomes
            raise
        self._waiting = None
        if not waiting:
            return await self._one(key)
        return await asyncio.shield(self._start_round(key, waiting))

    def _start_round(
        self, key: Key, waiting: list[tuple[Key, asyncio.Future[Outcome]]]
    ) -> asyncio.Task[Outcome]:
        task = asyncio.ensure_future(self._round(key, waiting))
        self._rounds.add(task)
        task.add_done_callback(self._round_done)
        return task

    def _round_done(self, task: asyncio.Task[Outcome]) -> None:
        self._rounds.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved here too: the leader may have stopped waiting

    async def _round(self, key: Key, waiting: list[tuple[Key, asyncio.Future[Outcome]]]) -> Outcome:
        """Serve ``key`` and every waiting key in one call; settle each waiting future."""
        try:
            outcomes = await self._many([key, *(k for k, _ in waiting)])
        except BaseException as exc:
            for _, future in waiting:
                if future.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(exc)
            raise
        for (_, future), outcome in zip(waiting, outcomes[1:], strict=True):
            if not future.done():
                future.set_result(outcome)
        return outcomes[0]
