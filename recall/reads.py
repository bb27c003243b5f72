"""Single-user record reads, coalesced: the reads that requests ask for while the event loop runs
one round of ready callbacks go to Redis together, as one pipeline.

Under load several requests reach their Redis read in the same round (the loop handles every
socket that became readable, and each handler runs up to its first ``await``); one pipeline of
four reads costs redis-py about half the client CPU of four separate commands (BENCHMARKS.md).
The first read of a round leads: it yields the loop once, then sends every read asked for
meanwhile and hands each waiting request its outcome. A lone read is sent as a plain command,
so it costs no more than an uncoalesced one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Outcome = TypeVar("Outcome")


class CoalescedReads(Generic[Outcome]):
    """Reads of one key each, sent together when they are asked for in the same loop round.

    ``read_one(key)`` reads one key, ``read_many(keys)`` several in one round trip, aligned
    with ``keys``; an exception either raises (a connection error) reaches every read of that
    round. A round of several reads runs as a task of its own, so a request whose handler is
    cancelled (its client gone, the server stopping) does not take the other requests' reads
    of its round with it.
    """

    def __init__(
        self,
        read_one: Callable[[str], Awaitable[Outcome]],
        read_many: Callable[[Sequence[str]], Awaitable[Sequence[Outcome]]],
    ) -> None:
        self._read_one = read_one
        self._read_many = read_many
        # Reads waiting for the current round's leader: (key, future of its outcome).
        self._waiting: list[tuple[str, asyncio.Future[Outcome]]] | None = None
        # Rounds in flight (the loop keeps only weak references to tasks).
        self._rounds: set[asyncio.Task[Outcome]] = set()

    async def read(self, key: str) -> Outcome:
        if self._waiting is not None:
            future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
            self._waiting.append((key, future))
            return await future
        waiting: list[tuple[str, asyncio.Future[Outcome]]] = []
        self._waiting = waiting
        try:
            # One loop round: the other requests that are ready run up to their read.
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            self._waiting = None
            if waiting:
                self._start_round(key, waiting)  # the others still get their outcomes
            raise
        self._waiting = None
        if not waiting:
            return await self._read_one(key)
        return await asyncio.shield(self._start_round(key, waiting))

    def _start_round(
        self, key: str, waiting: list[tuple[str, asyncio.Future[Outcome]]]
    ) -> asyncio.Task[Outcome]:
        task = asyncio.ensure_future(self._round(key, waiting))
        self._rounds.add(task)
        task.add_done_callback(self._round_done)
        return task

    def _round_done(self, task: asyncio.Task[Outcome]) -> None:
        self._rounds.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved here too: the leader may have stopped waiting

    async def _round(self, key: str, waiting: list[tuple[str, asyncio.Future[Outcome]]]) -> Outcome:
        """Read ``key`` and every waiting key in one call; settle each waiting future."""
        try:
            outcomes = await self._read_many([key, *(k for k, _ in waiting)])
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
