"""Coalesced reads: reads asked for in one loop round go out together, each gets its own
outcome, a lone read goes out alone, a failure reaches every read of its round, and a leader
whose handler is cancelled does not cancel the others' reads."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from recall.reads import CoalescedReads


class Store:
    """Records what was asked of it; answers ``value-<key>``, or fails as told."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.error = error
        self.release = asyncio.Event()
        self.release.set()

    async def one(self, key: str) -> str:
        self.calls.append((key,))
        return (await self._answer([key]))[0]

    async def many(self, keys: Sequence[str]) -> list[str]:
        self.calls.append(tuple(keys))
        return await self._answer(keys)

    async def _answer(self, keys: Sequence[str]) -> list[str]:
        await self.release.wait()
        if self.error is not None:
            raise self.error
        return [f"value-{k}" for k in keys]


def reads(store: Store) -> CoalescedReads[str]:
    return CoalescedReads(store.one, store.many)


async def round_in_flight(
    store: Store,
) -> tuple[CoalescedReads[str], asyncio.Task[str], asyncio.Task[str]]:
    """Reads of "a" (the leader) and "b" sent as one round that the store holds unanswered."""
    store.release.clear()
    coalesced = reads(store)
    leader = asyncio.ensure_future(coalesced.read("a"))
    follower = asyncio.ensure_future(coalesced.read("b"))
    while not store.calls:
        await asyncio.sleep(0)
    return coalesced, leader, follower


async def test_reads_of_one_round_share_one_call_and_keep_their_own_outcome() -> None:
    store = Store()
    coalesced = reads(store)
    got = await asyncio.gather(*(coalesced.read(k) for k in ("a", "b", "c", "d")))
    assert got == ["value-a", "value-b", "value-c", "value-d"]
    assert store.calls == [("a", "b", "c", "d")]


async def test_a_lone_read_is_sent_alone_and_later_rounds_start_anew() -> None:
    store = Store()
    coalesced = reads(store)
    assert await coalesced.read("a") == "value-a"
    assert await asyncio.gather(coalesced.read("b"), coalesced.read("c")) == ["value-b", "value-c"]
    assert await coalesced.read("d") == "value-d"
    assert store.calls == [("a",), ("b", "c"), ("d",)]


async def test_a_read_asked_while_a_round_is_in_flight_goes_in_the_next_round() -> None:
    store = Store()
    store.release.clear()
    coalesced = reads(store)
    first = asyncio.gather(coalesced.read("a"), coalesced.read("b"))
    while not store.calls:
        await asyncio.sleep(0)
    late = asyncio.ensure_future(coalesced.read("c"))
    await asyncio.sleep(0)
    store.release.set()
    assert await first == ["value-a", "value-b"]
    assert await late == "value-c"
    assert store.calls == [("a", "b"), ("c",)]


async def test_a_failure_reaches_every_read_of_the_round() -> None:
    store = Store(ConnectionError("redis went away"))
    coalesced = reads(store)
    got = await asyncio.gather(*(coalesced.read(k) for k in "abc"), return_exceptions=True)
    assert [type(g) for g in got] == [ConnectionError] * 3
    assert store.calls == [("a", "b", "c")]


async def test_a_leader_cancelled_in_flight_leaves_the_other_reads_their_outcomes() -> None:
    store = Store()
    coalesced, leader, follower = await round_in_flight(store)
    leader.cancel()
    await asyncio.sleep(0)
    assert leader.cancelled() and not follower.done()
    store.release.set()
    assert await follower == "value-b"
    assert store.calls == [("a", "b")]
    # The next round is not blocked by the cancelled one.
    assert await coalesced.read("c") == "value-c"


async def test_a_leader_cancelled_before_sending_still_sends_the_round() -> None:
    store = Store()
    coalesced = reads(store)
    leader = asyncio.ensure_future(coalesced.read("a"))
    follower = asyncio.ensure_future(coalesced.read("b"))
    await asyncio.sleep(0)  # the leader is in its one-round wait, the follower has joined
    assert not store.calls
    leader.cancel()
    assert await follower == "value-b"
    assert leader.cancelled()
    assert store.calls == [("a", "b")]


async def test_a_failed_round_whose_leader_is_gone_is_not_left_unretrieved() -> None:
    store = Store(ConnectionError("redis went away"))
    coalesced, leader, follower = await round_in_flight(store)
    leader.cancel()
    store.release.set()
    with pytest.raises(ConnectionError):
        await follower
    await asyncio.sleep(0)
    assert not coalesced._rounds  # the round's task ended and was let go
