"""Where the worker starts reading a partition it is assigned, and what Faust may commit.

- **The rewind.** After every rebalance (Faust's ``on_rebalance_complete``, while the partitions
  are still paused) the worker seeks each assigned source partition to its committed offset
  itself, or to the log start where there is no commit or where retention has deleted the
  committed records (a seek below the log start would make the consumer jump ahead unseen).
  aiokafka's ``seek_to_committed`` skips partitions whose committed offset is 0 or absent, and
  Faust 0.15 reads a record whose hand-over a rebalance interrupted again only through such a
  seek. Records read twice are replays, which the windows skip. (Run from
  ``on_partitions_assigned`` instead, the offset lookup never completes: that signal runs
  inside the consumer's rebalance callback.)
- **The seek skip.** Faust's recovery seeks the stream partitions to their committed offsets
  once more (``Consumer.perform_seek``) after it has resumed them; the rewind has done that
  seek already and set what ``perform_seek`` sets (read and committed offsets), so
  :class:`SeekOnce` makes the seek that follows it a no-op.
- **The commit cap.** :func:`limit_commits` keeps Faust from committing past the next offset
  the worker expects on a partition (Faust acknowledges a record that a stream takes while the
  flow is suspended, e.g. at a rebalance, without delivering it).

The source records reach the worker through its intake (``stream.intake``), not Faust's stream
path; the seek skip and the cap are defences against a record the consumer could move past
unseen, and the processor's offset guard (``stream.continuity``) checks that none ever is.
The rules are plain functions here; the wrapping of Faust's consumer and its committed-offset
record go through ``stream.faust_internals``. docs/ARCHITECTURE.md describes the Faust
behaviours this relies on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from mindstream.kafka_config import kafka_python_consumer_kwargs
from mindstream.settings import Settings
from stream import faust_internals

logger = logging.getLogger(__name__)


def committed_offsets(
    settings: Settings, partitions: list[tuple[str, int]]
) -> dict[tuple[str, int], int | None]:
    """The consumer group's committed offsets (blocking; kafka-python, no group membership)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        **kafka_python_consumer_kwargs(settings, group_id=settings.app_id),
        enable_auto_commit=False,
    )
    try:
        return {(t, p): consumer.committed(TopicPartition(t, p)) for t, p in partitions}
    finally:
        consumer.close()


class SeekOnce:
    """Faust's recovery seek (``perform_seek``) with the call right after :meth:`arm` skipped
    (the rewind has just done that seek); every other call runs as before."""

    def __init__(self, *, valid_s: float = 10.0) -> None:
        self._perform_seek: Callable[[], Awaitable[None]] | None = None
        self._armed_at: float | None = None
        self._valid_s = valid_s

    def wrap(self, perform_seek: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        """Take ``perform_seek`` (the consumer's own); return what replaces it."""
        self._perform_seek = perform_seek
        return self.perform_seek

    def arm(self) -> None:
        self._armed_at = time.monotonic()

    async def perform_seek(self) -> None:
        armed_at, self._armed_at = self._armed_at, None
        # only right after the rewind: a recovery that gave up before its seek must not
        # leave a later, unrelated seek skipped
        if armed_at is not None and time.monotonic() - armed_at < self._valid_s:
            logger.info("stream partitions already at their committed offsets: seek skipped")
            return
        if self._perform_seek is not None:
            await self._perform_seek()


def skip_seek_after_rewind(consumer: Any) -> SeekOnce:
    """Wrap ``consumer``'s recovery seek in a :class:`SeekOnce`, which the rewind arms."""
    once = SeekOnce()
    faust_internals.wrap_perform_seek(consumer, once.wrap)
    return once


async def rewind_to_committed(
    consumer: Any, settings: Settings, assigned: Iterable[Any], sources: set[str]
) -> dict[Any, int]:
    """Seek the assigned partitions of ``sources`` to their committed offsets (Faust consumer);
    return where each now starts."""
    tps = sorted((tp for tp in assigned if tp.topic in sources), key=lambda tp: tuple(tp))
    if not tps:
        # More workers in the group than partitions: this one reads nothing until a rebalance
        # (another worker leaving) gives it a partition. Said at every rebalance that leaves it
        # so, because from outside it looks healthy and idle.
        logger.warning(
            "this worker was assigned no partition of %s: it stands by until a rebalance gives "
            "it one (more workers than MINDSTREAM_TOPIC_PARTITIONS=%d partitions?)",
            ", ".join(sorted(sources)),
            settings.topic_partitions,
        )
        return {}
    committed = await asyncio.get_running_loop().run_in_executor(
        None, committed_offsets, settings, [(tp.topic, tp.partition) for tp in tps]
    )
    # The log start too, for every partition: a committed offset below it names records the
    # broker has deleted (retention ran while the group was behind or away), and seeking there
    # would make the consumer jump to the log start and the offset guard see a hole forever.
    start = await consumer.earliest_offsets(*tps)
    missing = [tp for tp in tps if committed[(tp.topic, tp.partition)] is None]
    positions = {}
    for tp in tps:
        offset = committed[(tp.topic, tp.partition)]
        first = start.get(tp)
        positions[tp] = first_readable(offset, first)
        if offset is not None and first is not None and offset < first:
            logger.warning(
                "committed offset below the log start topic=%s partition=%d committed=%d "
                "log_start=%d: %d records were deleted by the broker before they were read",
                tp.topic,
                tp.partition,
                offset,
                first,
                first - offset,
            )
        await consumer.seek(tp, positions[tp])
        if offset is not None:
            faust_internals.set_committed_offset(consumer, tp, offset)
    logger.info(
        "source partitions rewound to committed offsets partitions=%d without_commit=%d",
        len(tps),
        len(missing),
    )
    return positions


def first_readable(committed: int | None, log_start: int | None) -> int:
    """Where a partition's reading starts: its committed offset, the log start when there is
    no commit or the committed records are gone (0 when the log start is unknown)."""
    if committed is None:
        return log_start or 0
    return max(committed, log_start or 0)


def limit_commits(
    consumer: Any, sources: set[str], next_expected: Callable[[str, int], int | None]
) -> None:
    """Cap every offset Faust's consumer is about to commit for a source partition at the next
    offset the worker expects to see there (:func:`capped_offsets`)."""
    faust_internals.adjust_committable_offsets(
        consumer,
        lambda offsets, committed: capped_offsets(offsets, committed, sources, next_expected),
    )


def capped_offsets(
    offsets: Mapping[Any, int],
    committed: Mapping[Any, int | None],
    sources: set[str],
    next_expected: Callable[[str, int], int | None],
) -> dict[Any, int]:
    """What to commit of ``offsets`` (by partition, what the acknowledgements allow): each
    source partition's offset capped at the next offset the worker expects there
    (``stream.continuity``), so that a commit never passes a record acknowledged unseen; a
    partition left out when that is not past its ``committed`` offset. The cap changes nothing
    when every acknowledged record was delivered, the usual case."""
    out = {}
    for tp, offset in offsets.items():
        limit = next_expected(tp.topic, tp.partition) if tp.topic in sources else None
        if limit is not None and offset > limit:
            logger.warning(
                "commit capped topic=%s partition=%d offset=%d at=%d (acknowledged but "
                "never delivered to the worker)",
                tp.topic,
                tp.partition,
                offset,
                limit,
            )
            offset = limit
        before = committed.get(tp)
        if before is None or offset > before:
            out[tp] = offset
    return out
