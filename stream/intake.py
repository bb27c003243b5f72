"""The worker's source records, handed from the consumer's fetch loop to the agent in batches.

Faust 0.15 sends every fetched record through its stream machinery: in the fetch loop
(``Consumer._drain_messages``) each record is delivered by ``wait_first(callback(message),
suspend_flow.wait())``, two tasks and an ``asyncio.wait`` per record, then the conductor wraps it
in an event and queues it for the agent's stream, which hands it to ``take_events``' buffer
through a processor coroutine. A Faust agent that only counts drained 6,527 records/s on this
box (0.15 ms of one core per record) against 175,506/s for a bare aiokafka consumer that also
decodes the JSON (``mindstream bench stream``); that per-record path was most of the worker's
CPU, and the batches it gathered stopped while a batch was processed.

So for the worker's own source topics (the clicks topic and its re-key topic) the fetch loop
puts each record into an :class:`Intake` directly, and the agent takes whole batches from it,
gathered while the previous batch is processed. Records of every other topic (table changelogs
during recovery) go the way Faust sends them. Faust's bookkeeping is kept: each record is
tracked as in flight from the moment it is in the intake (a rebalance or a stop waits until it
is processed, ``Consumer.wait_empty``: bounded by the intake's capacity, two batches, plus one
fetch, at most one batch with ``broker_max_poll_records``) and acknowledged (so committable)
only after its batch is written (:meth:`Intake.acknowledge`).

Unlike Faust's loop, a record is never marked as read unless it is in the intake: Faust's moves
the read position past a record whose hand-over a flow suspension (a rebalance) interrupted
(see ``stream.positions``). While the flow is suspended, records are dropped without being
marked as read; the rewind after the rebalance reads them again.

Written for faust-streaming 0.15 (pinned in pyproject.toml): :func:`install` checks that the
consumer has what this relies on and fails the start otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection
from typing import Any

logger = logging.getLogger(__name__)

# what the fetch loop below uses of a Faust consumer (faust.transport.consumer.Consumer)
CONSUMER_NEEDS = (
    "_drain_messages",
    "_read_offset",
    "_add_gap",
    "_commit_every",
    "_n_acked",
    "_stopped",
    "callback",
    "getmany",
    "track_message",
    "ack",
    "suspend_flow",
    "wait_first",
    "consumer_stopped_errors",
    "diag",
)
FETCHING_FLAG = "FETCHING"  # faust.transport.consumer.CONSUMER_FETCHING
ROOM_POLL_S = 0.1
YIELD_EVERY = 100  # records, as Faust's loop


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


def check_consumer(consumer: Any) -> None:
    missing = [name for name in CONSUMER_NEEDS if not hasattr(consumer, name)]
    if missing:
        raise RuntimeError(
            "this faust-streaming consumer lacks what stream.intake relies on "
            f"({', '.join(missing)}); mindstream is written for faust-streaming 0.15"
        )


async def drain_messages(
    consumer: Any, fetcher: Any, intake: Intake, sources: Collection[str]
) -> None:
    """Faust's fetch loop (``Consumer._drain_messages``, faust-streaming 0.15.3), with the
    records of ``sources`` put into ``intake`` instead of sent through the conductor."""
    callback = consumer.callback
    get_read_offset = consumer._read_offset.__getitem__
    set_read_offset = consumer._read_offset.__setitem__
    consumer_should_stop = consumer._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    suspended = consumer.suspend_flow.is_set
    track = consumer.track_message
    commit_every = consumer._commit_every
    put = intake.put
    acks_enabled_for = consumer.app.topics.acks_enabled_for
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            consumer.diag.set_flag(FETCHING_FLAG)
            records = consumer.getmany(timeout=1.0)
            await asyncio.sleep(0)  # as Faust's: getmany can return at once, again and again
            if consumer.should_stop:
                continue
            since_yield = 0
            async for tp, message in records:
                since_yield += 1
                if since_yield > YIELD_EVERY:
                    # as Faust's: let the agent and the web endpoint run during a long fetch
                    await asyncio.sleep(0)
                    since_yield = 0
                offset = message.offset
                read = get_read_offset(tp)
                if read is not None and offset < read:
                    continue  # read already (Faust drops these too)
                if read and offset - read > 1 and acks_enabled_for(tp.topic):
                    # a gap in the offsets (compaction, transaction markers): Faust's commit
                    # bookkeeping must know it or it stops committing at the gap
                    await consumer._add_gap(tp, read + 1, offset)
                if commit_every is not None and consumer._n_acked >= commit_every:
                    consumer._n_acked = 0
                    await consumer.commit()
                if tp.topic in sources:
                    if suspended():
                        continue  # not marked as read: the rewind after the rebalance reads it
                    track(message)
                    put(message)
                else:
                    await consumer.wait_first(callback(message), consumer.suspend_flow.wait())
                set_read_offset(tp, offset)
            consumer.diag.unset_flag(FETCHING_FLAG)
            while intake.full and not (suspended() or consumer_should_stop()):
                if fetcher_should_stop():
                    break
                await intake.wait_for_room(ROOM_POLL_S)
    except consumer.consumer_stopped_errors:
        if consumer.transport.app.should_stop:
            logger.info("broker stopped the consumer, shutting down")
            return
        raise
    except asyncio.CancelledError:
        if consumer.transport.app.should_stop:
            return
        raise
    except Exception as exc:
        logger.exception("fetch loop failed: %r", exc)
        raise
    finally:
        consumer.diag.unset_flag(FETCHING_FLAG)


def install(app: Any, intake: Intake, sources: Collection[str]) -> None:
    """Route the records of ``sources`` that ``app``'s consumer fetches into ``intake``."""
    from faust.transport.consumer import Consumer

    original = Consumer._drain_messages
    if getattr(original, "mindstream_intake", False):
        raise RuntimeError("stream.intake is installed already")

    async def _drain_messages(self: Any, fetcher: Any) -> None:
        if self.app is not app:
            await original(self, fetcher)
            return
        check_consumer(self)
        await drain_messages(self, fetcher, intake, frozenset(sources))

    _drain_messages.mindstream_intake = True  # type: ignore[attr-defined]
    Consumer._drain_messages = _drain_messages  # type: ignore[method-assign]
