"""The intake: batches by size or deadline, bounded, and the fetch loop that fills it.

The fetch loop (``stream.faust_internals.drain_messages``) runs here against a stand-in for
Faust's consumer, to pin down its rules case by case (tests/unit/stream/test_faust_internals.py
runs it on Faust's own consumer): records of the source topics land in the intake in order and
are tracked; other topics go through the consumer's callback; a suspended flow leaves records
unread; records are acknowledged only when the agent says so.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pytest

from stream.faust_internals import drain_messages
from stream.intake import Intake, already_read, offset_gap


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_a_full_batch_is_given_at_once() -> None:
    intake = Intake(10)
    for i in range(7):
        intake.put(i)
    assert await asyncio.wait_for(intake.next_batch(5, 60.0), 1) == [0, 1, 2, 3, 4]
    assert len(intake) == 2


async def test_a_partial_batch_waits_for_the_deadline_of_its_oldest_record() -> None:
    clock = FakeClock()
    intake = Intake(10, clock=clock)
    intake.put("a")
    clock.now += 0.5
    intake.put("b")
    waiter = asyncio.ensure_future(intake.next_batch(5, 1.0))
    await asyncio.sleep(0)  # one step: the waiter runs until it waits (or returns, if broken)
    assert not waiter.done()
    clock.now += 0.5  # the oldest has now waited 1 s
    assert await asyncio.wait_for(waiter, 2) == ["a", "b"]


async def test_a_waiting_batch_completes_when_enough_records_arrive() -> None:
    intake = Intake(10)
    waiter = asyncio.ensure_future(intake.next_batch(3, 60.0))
    await asyncio.sleep(0)
    for i in range(4):
        intake.put(i)
        await asyncio.sleep(0)
    assert await asyncio.wait_for(waiter, 1) == [0, 1, 2]
    assert await asyncio.wait_for(intake.next_batch(3, 0.01), 1) == [3]


async def test_room_opens_when_a_batch_is_taken() -> None:
    intake = Intake(3)
    for i in range(3):
        intake.put(i)
    assert intake.full
    assert not await intake.wait_for_room(0.01)
    room = asyncio.ensure_future(intake.wait_for_room(5.0))
    await asyncio.sleep(0)
    assert await intake.next_batch(2, 1.0) == [0, 1]
    assert await asyncio.wait_for(room, 1)


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        Intake(0)


class TP(NamedTuple):
    topic: str
    partition: int


@dataclass(eq=False)
class Record:
    tp: TP
    offset: int
    acked: bool = False


class Flag:
    def __init__(self) -> None:
        self.value = False

    def is_set(self) -> bool:
        return self.value

    def set(self) -> None:
        self.value = True

    async def wait(self) -> None:
        while not self.value:
            await asyncio.sleep(0.001)


@dataclass
class FakeConsumer:
    """What drain_messages uses of faust.transport.consumer.Consumer."""

    fetches: list[list[Record]]
    fetcher: Any = None
    suspend_at: int | None = None  # suspend the flow before this fetch
    _read_offset: dict[TP, int | None] = field(default_factory=dict)
    _commit_every: int | None = None
    _n_acked: int = 0
    _stopped: Flag = field(default_factory=Flag)
    suspend_flow: Flag = field(default_factory=Flag)
    should_stop: bool = False
    delivered: list[Record] = field(default_factory=list)
    tracked: list[Record] = field(default_factory=list)
    gaps: list[tuple[TP, int, int]] = field(default_factory=list)
    consumer_stopped_errors: tuple[type[BaseException], ...] = (EOFError,)
    app: Any = None
    diag: Any = None
    transport: Any = None

    def __post_init__(self) -> None:
        self._read_offset = defaultdict(lambda: None)  # as Faust's
        self.app = type("App", (), {"topics": type("T", (), {"acks_enabled_for": str})()})()
        self.diag = type("Diag", (), {"set_flag": print, "unset_flag": print})()
        self.diag.set_flag = self.diag.unset_flag = lambda flag: None

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Record]]:
        if not self.fetches:
            self.fetcher._stopped.set()
            return
        if self.suspend_at is not None and len(self.fetches) == self.suspend_at:
            self.suspend_flow.set()
        for record in self.fetches.pop(0):
            yield record.tp, record

    async def callback(self, message: Record) -> None:
        self.delivered.append(message)

    def track_message(self, message: Record) -> None:
        self.tracked.append(message)

    def ack(self, message: Record) -> bool:
        message.acked = True
        return True

    async def _add_gap(self, tp: TP, start: int, end: int) -> None:
        self.gaps.append((tp, start, end))

    async def commit(self) -> None: ...

    async def wait_first(self, *coros: Any) -> None:
        await coros[0]
        for coro in coros[1:]:
            coro.close()


class Sensors:
    def __init__(self) -> None:
        self.out: list[tuple[TP, int]] = []

    def on_message_out(self, tp: TP, offset: int, message: Record) -> None:
        self.out.append((tp, offset))


@dataclass
class FakeFetcher:
    _stopped: Flag = field(default_factory=Flag)


def records(topic: str, partition: int, offsets: range) -> list[Record]:
    return [Record(TP(topic, partition), o) for o in offsets]


async def drain(consumer: FakeConsumer, intake: Intake) -> None:
    consumer.fetcher = FakeFetcher()
    await asyncio.wait_for(drain_messages(consumer, consumer.fetcher, intake, {"clicks"}), 5)


async def test_source_records_go_to_the_intake_and_others_to_faust() -> None:
    clicks = records("clicks", 0, range(5))
    changelog = records("changelog", 0, range(3))
    consumer = FakeConsumer([clicks[:3] + changelog, clicks[3:]])
    intake = Intake(100)
    await drain(consumer, intake)
    batch = await intake.next_batch(100, 0.0)
    assert batch == clicks
    assert consumer.tracked == clicks
    assert consumer.delivered == changelog
    assert consumer._read_offset[TP("clicks", 0)] == 4
    assert not any(r.acked for r in clicks)  # acknowledged only when processed
    sensors = Sensors()
    Intake.acknowledge(consumer, sensors, batch)
    assert all(r.acked for r in clicks)
    assert sensors.out == [(r.tp, r.offset) for r in clicks]


async def test_records_read_already_are_dropped_and_gaps_are_recorded() -> None:
    consumer = FakeConsumer(
        [records("clicks", 0, range(10, 13)) + records("clicks", 0, range(20, 22))]
    )
    consumer._read_offset[TP("clicks", 0)] = 11
    intake = Intake(100)
    await drain(consumer, intake)
    assert [r.offset for r in await intake.next_batch(100, 0.0)] == [11, 12, 20, 21]
    assert consumer.gaps == [(TP("clicks", 0), 13, 20)]


async def test_a_suspended_flow_leaves_records_unread() -> None:
    consumer = FakeConsumer([records("clicks", 0, range(3)), records("clicks", 0, range(3, 6))])
    consumer.suspend_at = 1  # a rebalance starts before the second fetch
    intake = Intake(100)
    await drain(consumer, intake)
    assert [r.offset for r in await intake.next_batch(100, 0.0)] == [0, 1, 2]
    # the rewind after the rebalance seeks back to the committed offset and reads 3.. again
    assert consumer._read_offset[TP("clicks", 0)] == 2


class ObservedIntake(Intake):
    """An intake that says when the fetch loop starts waiting for room in it."""

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self.waiting_for_room = asyncio.Event()

    async def wait_for_room(self, timeout: float) -> bool:
        if self.full:
            self.waiting_for_room.set()
        return await super().wait_for_room(timeout)


async def test_a_full_intake_holds_the_fetch_loop_until_a_batch_is_taken() -> None:
    consumer = FakeConsumer([records("clicks", 0, range(i, i + 4)) for i in range(0, 12, 4)])
    intake = ObservedIntake(4)
    consumer.fetcher = FakeFetcher()
    loop = asyncio.ensure_future(drain_messages(consumer, consumer.fetcher, intake, {"clicks"}))
    await asyncio.wait_for(intake.waiting_for_room.wait(), 5)
    assert len(intake) == 4 and len(consumer.fetches) == 2  # one fetch made, two left
    got = []
    while len(got) < 12:
        got += [r.offset for r in await asyncio.wait_for(intake.next_batch(4, 0.0), 2)]
    await asyncio.wait_for(loop, 2)
    assert got == list(range(12))


def test_offset_rules_of_the_fetch_loop() -> None:
    assert not already_read(None, 0)  # nothing read yet
    assert already_read(11, 10)
    assert not already_read(11, 11)  # the read offset itself: read again after a seek
    assert offset_gap(None, 5) is None
    assert offset_gap(0, 5) is None  # as Faust's loop: no gap counted from offset 0
    assert offset_gap(4, 5) is None
    assert offset_gap(12, 20) == (13, 20)
