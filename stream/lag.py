"""The worker's consumer lag per source partition, for ``/metrics`` (computed at each scrape).

``mindstream_stream_consumer_lag_records{topic,partition}`` = the partition's high watermark
minus the group's committed offset, for each assigned partition of the clicks topic and the
re-key topic. The committed offset, not the fetch position: it is the usual definition
(``kafka-consumer-groups``, Burrow, kafka-exporter, so the gauge agrees with what those show),
it counts records fetched into the consumer's buffers but not yet written to Redis (which the
position would hide), and it is what a restarted worker would read again. It overstates the
records still to process by at most those processed since the last commit (one commit
interval, 2.8 s by default); a partition with no commit counts from offset 0.

The committed offset is Faust's own bookkeeping (set when it commits or seeks to the committed
offsets, read through ``stream.faust_internals.committed_offsets``); no request. The high
watermark is the larger of two lower bounds of the log end:

- the value the broker put in the last fetch response for the partition (aiokafka's
  ``highwater``, read through ``Consumer.highwater`` as Faust's monitor does); exact on both
  brokers, but as old as the partition's last fetch, and the consumer does not fetch a
  partition while it still holds fetched records of it: under overload that is seconds
  (a burst test saw one partition's value 8,000 records behind for over 2 s);
- the log end offsets asked with ListOffsets (``Consumer.highwaters``, one request per scrape,
  at most ``LIST_TIMEOUT_S``; on failure the last answer is kept). Exact on Apache Kafka; the
  local broker (Tansu) answers with the last record batch's first offset + 1, which is short
  of the end when a batch holds several records (1,000 records in multi-record batches: fetch
  said 1000, ListOffsets 1), so it is only ever a floor, never the answer alone.

A partition with neither yet (just assigned) has no sample.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import Any

from faust.exceptions import ConsumerNotStarted
from prometheus_client.metrics_core import GaugeMetricFamily

from stream.faust_internals import committed_offsets

logger = logging.getLogger(__name__)

LAG_METRIC = "mindstream_stream_consumer_lag_records"
LAG_HELP = (
    "Source partition's high watermark (last fetch response or ListOffsets, the larger) "
    "minus the worker's committed offset."
)
LIST_TIMEOUT_S = 1.0


@dataclasses.dataclass(frozen=True)
class SourceOffsets:
    """Where one assigned source partition stands (None: not known yet)."""

    topic: str
    partition: int
    highwater: int | None
    committed: int | None


def partition_lag(highwater: int | None, committed: int | None) -> int | None:
    """Records between the committed offset and the high watermark; None if the watermark is
    unknown. Never negative: a watermark older than a commit means none are waiting."""
    if highwater is None:
        return None
    return max(0, highwater - (committed or 0))


def latest(*offsets: int | None) -> int | None:
    """The largest known of several lower bounds of a log end offset (None: none known)."""
    known = [o for o in offsets if o is not None]
    return max(known) if known else None


def source_offsets(
    consumer: Any, sources: Collection[str], listed: Mapping[tuple[str, int], int] | None = None
) -> list[SourceOffsets]:
    """The offsets a Faust consumer holds for its assigned partitions of ``sources``, the
    watermark raised to ``listed`` (ListOffsets answers, by (topic, partition)) where higher.

    Reads memory only. Between a consumer start or a rebalance and the first fetch, a partition
    can be missing or have no watermark yet; nothing here raises for that.
    """
    listed = listed or {}
    try:
        assigned = [tp for tp in consumer.assignment() if tp.topic in sources]
    except ConsumerNotStarted:
        return []
    committed = committed_offsets(consumer)
    out = []
    for tp in sorted(assigned, key=lambda tp: (tp.topic, tp.partition)):
        try:
            highwater = consumer.highwater(tp)
        # aiokafka asserts the partition is assigned; a rebalance may have revoked it since
        except (AssertionError, AttributeError, KeyError, ConsumerNotStarted):
            highwater = None
        highwater = latest(highwater, listed.get((tp.topic, tp.partition)))
        out.append(SourceOffsets(tp.topic, tp.partition, highwater, committed.get(tp)))
    return out


class ListedEnds:
    """The last ListOffsets answer for the assigned source partitions, by (topic, partition)."""

    def __init__(self) -> None:
        self.ends: dict[tuple[str, int], int] = {}

    async def refresh(
        self, consumer: Any, sources: Collection[str], timeout_s: float = LIST_TIMEOUT_S
    ) -> None:
        """Ask the broker (through the consumer's thread); keep the last answer on failure."""
        try:
            tps = [tp for tp in consumer.assignment() if tp.topic in sources]
            if not tps:
                return
            answer = await asyncio.wait_for(consumer.highwaters(*tps), timeout_s)
        # Only a floor for the fetch watermark: whatever went wrong (not started, rebalance,
        # broker away, timeout) must not fail the scrape.
        except Exception as exc:
            logger.debug("lag: log end offsets not listed error=%r", exc)
            return
        for tp, end in answer.items():
            if end is not None:
                self.ends[(tp.topic, tp.partition)] = end


def lag_family(offsets: Iterable[SourceOffsets]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(LAG_METRIC, LAG_HELP, labels=["topic", "partition"])
    for o in offsets:
        lag = partition_lag(o.highwater, o.committed)
        if lag is not None:
            family.add_metric([o.topic, str(o.partition)], lag)
    return family


class ConsumerLagCollector:
    """A prometheus_client collector: the lag gauge, from ``read()`` at each collection."""

    def __init__(self, read: Callable[[], Iterable[SourceOffsets]]) -> None:
        self.read = read

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Registering calls this instead of collect(), which would read the consumer too early.
        yield lag_family(())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield lag_family(self.read())
