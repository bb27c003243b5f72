"""The worker's source records, handed from the consumer's fetch loop to the agent in batches.

Faust sends every fetched record through its stream machinery: in the fetch loop each record
is delivered by ``wait_first(callback(message), suspend_flow.wait())``, two tasks and an
``asyncio.wait`` per record, then the conductor wraps it in an event and queues it for the
agent's stream. A Faust agent that only counts drained 6,527 records/s on a 2-core machine
(0.15 ms of one core per record) against 175,506/s for a bare aiokafka consumer that also
decodes the JSON (``mindstream bench stream``, BENCHMARKS.md).

So for the worker's own source topics (the clicks topic and its re-key topic) the fetch loop
(``stream.faust_internals.drain_messages``) puts each record into an :class:`Intake`, and the
agent takes whole batches from it, gathered while the previous batch is processed. Records of
every other topic (table changelogs during recovery) go the way Faust sends them. Faust's
bookkeeping is kept: each record is tracked as in flight from the moment it is in the intake (a
rebalance or a stop waits until it is processed, ``Consumer.wait_empty``: bounded by the
intake's capacity, two batches, plus one fetch, at most one batch with
``broker_max_poll_records``) and acknowledged (so committable) only after its batch is written
(:meth:`Intake.acknowledge`).

This module is the part without Faust's private names: the intake itself and the offset rules
the fetch loop applies to each record (:func:`already_read`, :func:`offset_gap`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection
from typing import Any

logger = logging.getLogger(__name__)


class Intake:
    """Records in fetch order (per partition, offset order), waiting to be processed.

    Holds at most ``capacity`` records before :meth:`wait_for_room` makes the fetch loop wait;
    :meth:`next_batch` gives up to ``size`` records once ``size`` are there or ``deadline_s``
    has passed since the oldest one arrived."""

    def __init__(self, capacity: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if capacity < 1:
            raise ValueError(f"intake capacity must be >= 1, not {capacity}")
        self.capacity = capacity
        self._clock = clock
        self._records: list[Any] = []
        self._oldest_at = 0.0
        self._wanted = 1  # records the batch being waited for needs
        self._data = _Signal()
        self._room = _Signal()

    def __len__(self) -> int:
        return len(self._records)

    @property
    def full(self) -> bool:
        return len(self._records) >= self.capacity

    def put(self, record: Any) -> None:
        records = self._records
        if not records:
            self._oldest_at = self._clock()
        records.append(record)
        if len(records) == 1 or len(records) >= self._wanted:
            self._data.notify()

    async def next_batch(self, size: int, deadline_s: float) -> list[Any]:
        """Wait for the next batch: ``size`` records, or fewer once the oldest has waited
        ``deadline_s``."""
        self._wanted = size
        while len(self._records) < size:
            if self._records:
                left = self._oldest_at + deadline_s - self._clock()
                if left <= 0:
                    break
                await self._data.wait(left)
            else:
                await self._data.wait(None)
        batch, self._records = self._records[:size], self._records[size:]
        if self._records:
            # they arrived after the batch's records; counting their wait from now only makes
            # them wait longer than the deadline by at most one batch's processing
            self._oldest_at = self._clock()
        self._room.notify()
        return batch

    async def wait_for_room(self, timeout: float) -> bool:
        """Wait (at most ``timeout``) until the intake is below capacity; True if it is."""
        if self.full:
            await self._room.wait(timeout)
        return not self.full

    @staticmethod
    def acknowledge(consumer: Any, sensors: Any, records: Collection[Any]) -> None:
        """Mark ``records`` as processed: Faust may commit past them now (and its sensors see
        them leave, as when a stream acknowledges them)."""
        for record in records:
            if consumer.ack(record):
                sensors.on_message_out(record.tp, record.offset, record)


class _Signal:
    """Wakes whoever waits in :meth:`wait` at the next :meth:`notify` (a one-shot event)."""

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None

    def notify(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = None

    async def wait(self, timeout: float | None) -> None:
        if self._event is None:
            self._event = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)


def already_read(read: int | None, offset: int) -> bool:
    """Whether the record at ``offset`` lies below the partition's read offset (Faust's
    ``_read_offset``, None before the first record): read already, to be dropped."""
    return read is not None and offset < read


def offset_gap(read: int | None, offset: int) -> tuple[int, int] | None:
    """The gap between the last record read and the one at ``offset`` (compaction, transaction
    markers) as Faust's fetch loop passes it to its commit bookkeeping (``Consumer._add_gap``):
    ``(read + 1, offset)``, or None when the records follow each other (or nothing was read)."""
    if read and offset - read > 1:
        return read + 1, offset
    return None
