"""The worker's consumer lag per source partition, for ``/metrics`` (computed at each scrape).

``mindstream_stream_consumer_lag_records{topic,partition}`` = the partition's high watermark
minus the group's committed offset, for each assigned partition of the clicks topic and the
re-key topic. The committed offset, not the fetch position: it is the usual definition
(``kafka-consumer-groups``, Burrow, kafka-exporter, so the gauge agrees with what those show),
it counts records fetched into Faust's buffers but not yet written to Redis (which the
position would hide), and it is what a restarted worker would read again. It overstates the
records still to process by at most those processed since the last commit (one commit
interval, 2.8 s by default); a partition with no commit counts from offset 0.

Both numbers are what the Faust consumer already holds, so a scrape sends nothing to the
broker: the committed offset from Faust's own bookkeeping (``Consumer._committed_offset``,
private in Faust 0.15: set when it commits or seeks to the committed offsets), the high
watermark from ``Consumer.highwater`` = aiokafka's ``highwater``, the value the broker put in
the last fetch response for the partition (Faust reads it the same way for its monitor). Not
ListOffsets: the local broker (Tansu) answers "latest" with the last batch's first offset + 1
when a batch holds several records, while its fetch responses carry the true end (1000
records in multi-record batches: fetch said 1000, ListOffsets 1). The watermark is as old as
the partition's last fetch, so while Faust's buffer for a partition is full the gauge can
understate its lag; a partition not fetched yet since its assignment has no sample.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any

from faust.exceptions import ConsumerNotStarted
from prometheus_client.metrics_core import GaugeMetricFamily

logger = logging.getLogger(__name__)

LAG_METRIC = "mindstream_stream_consumer_lag_records"
LAG_HELP = (
    "Source partition's high watermark (from the last fetch response) minus the worker's "
    "committed offset."
)


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


def source_offsets(consumer: Any, sources: Collection[str]) -> list[SourceOffsets]:
    """The offsets a Faust consumer holds for its assigned partitions of ``sources``.

    Reads memory only. Between a consumer start or a rebalance and the first fetch, a partition
    can be missing or have no watermark yet; nothing here raises for that.
    """
    try:
        assigned = [tp for tp in consumer.assignment() if tp.topic in sources]
    except ConsumerNotStarted:
        return []
    committed = getattr(consumer, "_committed_offset", {})
    out = []
    for tp in sorted(assigned, key=lambda tp: (tp.topic, tp.partition)):
        try:
            highwater = consumer.highwater(tp)
        # aiokafka asserts the partition is assigned; a rebalance may have revoked it since
        except (AssertionError, AttributeError, KeyError, ConsumerNotStarted):
            highwater = None
        # .get: Faust's mapping is a defaultdict, a lookup would insert the partition
        out.append(SourceOffsets(tp.topic, tp.partition, highwater, committed.get(tp)))
    return out


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
