"""The consumer lag gauge: lag from offsets, offsets from a Faust consumer, the exposition."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import pytest
from faust.exceptions import ConsumerNotStarted
from faust.types import TP
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from stream.lag import (
    LAG_METRIC,
    ConsumerLagCollector,
    ListedEnds,
    SourceOffsets,
    latest,
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


def test_latest_of_lower_bounds() -> None:
    assert latest(None, None) is None
    assert latest(7, None) == 7
    assert latest(None, 7) == 7
    assert latest(9, 7) == 9  # e.g. a fetch watermark above a short ListOffsets answer


class FakeConsumer:
    """What stream.lag uses of a Faust consumer; unassigned partitions fail as aiokafka's."""

    def __init__(
        self,
        fetched: Mapping[TP, int | None],
        committed: dict[TP, int],
        listed: Mapping[TP, int | None] | BaseException | None = None,
    ) -> None:
        self.fetched = fetched  # the watermarks of the last fetch responses
        self._committed_offset: defaultdict[TP, int | None] = defaultdict(lambda: None)
        self._committed_offset.update(committed)
        self.revoked: set[TP] = set()
        self.listed = listed
        self.asked: list[tuple[TP, ...]] = []

    def assignment(self) -> set[TP]:
        return set(self.fetched)

    def highwater(self, tp: TP) -> int | None:
        if tp in self.revoked:
            raise AssertionError("Partition is not assigned")
        return self.fetched[tp]

    async def highwaters(self, *tps: TP) -> Mapping[TP, int | None]:
        self.asked.append(tps)
        if isinstance(self.listed, BaseException):
            raise self.listed
        if self.listed is None:
            await asyncio.sleep(60)  # a broker that does not answer
        assert isinstance(self.listed, Mapping)
        return {tp: self.listed[tp] for tp in tps if tp in self.listed}


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


def test_listed_ends_raise_a_stale_fetch_watermark() -> None:
    consumer = FakeConsumer(
        {TP(CLICKS, 0): 70, TP(CLICKS, 1): 50, TP(REKEY, 0): None},
        {TP(CLICKS, 0): 20},
    )
    listed = {(CLICKS, 0): 90, (CLICKS, 1): 40, (REKEY, 0): 3}
    assert source_offsets(consumer, {CLICKS, REKEY}, listed) == [
        SourceOffsets(REKEY, 0, 3, None),
        SourceOffsets(CLICKS, 0, 90, 20),
        SourceOffsets(CLICKS, 1, 50, None),  # a short (Tansu) answer never lowers it
    ]


def test_listed_ends_refresh_asks_for_assigned_sources_and_keeps_answers_on_failure() -> None:
    tps = {TP(CLICKS, 0): 70, TP(CLICKS, 1): 50, TP(OTHER, 0): 9}
    ends = ListedEnds()
    answer: dict[TP, int | None] = {TP(CLICKS, 0): 80, TP(CLICKS, 1): None}
    consumer = FakeConsumer(tps, {}, answer)
    asyncio.run(ends.refresh(consumer, {CLICKS, REKEY}))
    assert [set(asked) for asked in consumer.asked] == [{TP(CLICKS, 0), TP(CLICKS, 1)}]
    assert ends.ends == {(CLICKS, 0): 80}

    for failure in (ConsumerNotStarted("not yet"), RuntimeError("broker away"), None):
        consumer = FakeConsumer(tps, {}, failure)
        asyncio.run(ends.refresh(consumer, {CLICKS}, timeout_s=0.05))  # None: times out
        assert consumer.asked and ends.ends == {(CLICKS, 0): 80}

    nothing_assigned = FakeConsumer({TP(OTHER, 0): 9}, {}, RuntimeError("must not be asked"))
    asyncio.run(ends.refresh(nothing_assigned, {CLICKS}))
    assert nothing_assigned.asked == []


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
