"""The consumer lag gauge: lag from offsets, offsets from a Faust consumer, the exposition."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
from faust.exceptions import ConsumerNotStarted
from faust.types import TP
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from stream.lag import (
    LAG_METRIC,
    ConsumerLagCollector,
    SourceOffsets,
    partition_lag,
    source_offsets,
)

CLICKS, REKEY, OTHER = "clicks", "app-clicks-rekey", "app-windows-changelog"


@pytest.mark.parametrize(
    ("highwater", "committed", "lag"),
    [
        (100, 40, 60),
        (100, 100, 0),
        (100, None, 100),  # nothing committed: everything from offset 0 waits
        (0, None, 0),
        (None, 40, None),  # not fetched yet: unknown, not 0
        (None, None, None),
        (90, 100, 0),  # a watermark older than the commit
    ],
)
def test_partition_lag(highwater: int | None, committed: int | None, lag: int | None) -> None:
    assert partition_lag(highwater, committed) == lag


class FakeConsumer:
    """What source_offsets uses of a Faust consumer; unassigned partitions fail as aiokafka's."""

    def __init__(self, highwaters: dict[TP, int | None], committed: dict[TP, int]) -> None:
        self.highwaters = highwaters
        self._committed_offset: defaultdict[TP, int | None] = defaultdict(lambda: None)
        self._committed_offset.update(committed)
        self.revoked: set[TP] = set()

    def assignment(self) -> set[TP]:
        return set(self.highwaters)

    def highwater(self, tp: TP) -> int | None:
        if tp in self.revoked:
            raise AssertionError("Partition is not assigned")
        return self.highwaters[tp]


def test_source_offsets_reads_assigned_source_partitions_only() -> None:
    consumer = FakeConsumer(
        {TP(CLICKS, 1): 50, TP(CLICKS, 0): 70, TP(REKEY, 0): None, TP(OTHER, 0): 9},
        {TP(CLICKS, 0): 20, TP(OTHER, 0): 3},
    )
    assert source_offsets(consumer, {CLICKS, REKEY}) == [
        SourceOffsets(REKEY, 0, None, None),
        SourceOffsets(CLICKS, 0, 70, 20),
        SourceOffsets(CLICKS, 1, 50, None),
    ]
    # reading must not add partitions to Faust's defaultdict
    assert set(consumer._committed_offset) == {TP(CLICKS, 0), TP(OTHER, 0)}


def test_source_offsets_during_a_rebalance_and_before_start() -> None:
    consumer = FakeConsumer({TP(CLICKS, 0): 70}, {TP(CLICKS, 0): 20})
    consumer.revoked.add(TP(CLICKS, 0))
    assert source_offsets(consumer, {CLICKS}) == [SourceOffsets(CLICKS, 0, None, 20)]

    class NotStarted:
        def assignment(self) -> Any:
            raise ConsumerNotStarted("Consumer thread not yet started")

    assert source_offsets(NotStarted(), {CLICKS}) == []


def _samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    text = generate_latest(registry).decode()
    return {
        (s.labels["topic"], s.labels["partition"]): s.value
        for family in text_string_to_metric_families(text)
        if family.name == LAG_METRIC
        for s in family.samples
    }


def test_collector_exposes_one_sample_per_partition_with_a_known_watermark() -> None:
    offsets = [
        SourceOffsets(CLICKS, 0, 70, 20),
        SourceOffsets(CLICKS, 1, 50, None),
        SourceOffsets(REKEY, 0, None, 5),
    ]
    registry = CollectorRegistry()
    registry.register(ConsumerLagCollector(lambda: offsets))
    assert _samples(registry) == {(CLICKS, "0"): 50.0, (CLICKS, "1"): 50.0}
    assert f"# TYPE {LAG_METRIC} gauge" in generate_latest(registry).decode()

    # computed at each scrape: a commit shows at the next one, a revoked partition goes away
    offsets[:] = [SourceOffsets(CLICKS, 0, 70, 70)]
    assert _samples(registry) == {(CLICKS, "0"): 0.0}


def test_registering_does_not_read_the_consumer() -> None:
    def read() -> list[SourceOffsets]:
        raise AssertionError("read at registration")

    registry = CollectorRegistry(auto_describe=True)
    registry.register(ConsumerLagCollector(read))
    with pytest.raises(AssertionError, match="read at registration"):
        generate_latest(registry)
