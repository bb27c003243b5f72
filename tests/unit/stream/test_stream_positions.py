"""On assignment, source partitions are sought to their committed offsets, 0 and none included."""

from __future__ import annotations

import asyncio
from collections import namedtuple
from typing import Any

import pytest

from mindstream.settings import Settings
from stream import positions

TP = namedtuple("TP", "topic partition")


class Consumer:
    def __init__(self) -> None:
        self.seeks: dict[TP, int] = {}
        self._committed_offset: dict[TP, int | None] = {}
        self.faust_seeks = 0

    async def perform_seek(self) -> None:
        self.faust_seeks += 1

    async def earliest_offsets(self, *tps: TP) -> dict[TP, int]:
        # the log start: records below it were deleted by retention
        starts = {TP("rekey", 0): 5, TP("clicks", 2): 10}
        return {tp: starts.get(tp, 0) for tp in tps}

    async def seek(self, tp: TP, offset: int) -> None:
        self.seeks[tp] = offset


def test_rewind_covers_zero_missing_and_deleted_commits(monkeypatch: pytest.MonkeyPatch) -> None:
    committed = {("clicks", 0): 0, ("clicks", 1): 42, ("clicks", 2): 3, ("rekey", 0): None}

    def fake(settings: Settings, partitions: list[tuple[str, int]]) -> dict[Any, Any]:
        return {p: committed[p] for p in partitions}

    monkeypatch.setattr(positions, "committed_offsets", fake)
    consumer = Consumer()
    assigned = [
        TP("clicks", 0),
        TP("clicks", 1),
        TP("clicks", 2),
        TP("rekey", 0),
        TP("app-windows-changelog", 0),
    ]
    started = asyncio.run(
        positions.rewind_to_committed(consumer, Settings(), assigned, {"clicks", "rekey"})
    )
    # the changelog partition is Faust's recovery's business and is left alone; clicks[2]'s
    # committed records 3..9 were deleted: it starts at the log start, where the guard expects
    assert consumer.seeks == {
        TP("clicks", 0): 0,
        TP("clicks", 1): 42,
        TP("clicks", 2): 10,
        TP("rekey", 0): 5,
    }
    assert started == consumer.seeks
    # what Faust's own perform_seek would record: the committed offsets that exist
    assert consumer._committed_offset == {
        TP("clicks", 0): 0,
        TP("clicks", 1): 42,
        TP("clicks", 2): 3,
    }


def test_a_worker_given_no_source_partition_says_it_stands_by(
    caplog: pytest.LogCaptureFixture,
) -> None:
    consumer = Consumer()
    assigned = [TP("app-windows-changelog", 0)]  # a standby copy only
    with caplog.at_level("WARNING", logger="stream.positions"):
        started = asyncio.run(
            positions.rewind_to_committed(
                consumer, Settings(topic_partitions=4), assigned, {"clicks", "rekey"}
            )
        )
    assert started == {} and consumer.seeks == {}
    assert "assigned no partition of clicks, rekey" in caplog.text
    assert "MINDSTREAM_TOPIC_PARTITIONS=4" in caplog.text


def test_first_readable_offset() -> None:
    assert positions.first_readable(None, None) == 0
    assert positions.first_readable(None, 7) == 7
    assert positions.first_readable(12, 7) == 12
    assert positions.first_readable(3, 7) == 7


def test_the_seek_right_after_a_rewind_is_skipped_once() -> None:
    consumer = Consumer()
    once = positions.skip_seek_after_rewind(consumer)
    asyncio.run(consumer.perform_seek())
    assert consumer.faust_seeks == 1
    once.arm()
    asyncio.run(consumer.perform_seek())  # recovery's seek after the rewind: skipped
    asyncio.run(consumer.perform_seek())  # any later one runs
    assert consumer.faust_seeks == 2
    stale = positions.SeekOnce(valid_s=0.0)
    consumer.perform_seek = stale.wrap(consumer.perform_seek)  # type: ignore[method-assign]
    stale.arm()
    asyncio.run(consumer.perform_seek())  # armed too long ago: runs
    assert consumer.faust_seeks == 3


def test_commits_never_pass_a_record_the_worker_did_not_see() -> None:
    class Committing:
        def __init__(self) -> None:
            self._committed_offset: dict[TP, int | None] = {TP("clicks", 0): 100}

        def _filter_committable_offsets(self, tps: Any) -> dict[TP, int]:
            # what Faust computed from its acknowledgements
            return {TP("clicks", 0): 142, TP("clicks", 1): 9, TP("other", 0): 50}

    consumer = Committing()
    expected = {("clicks", 0): 141, ("clicks", 1): 12, ("other", 0): 1}
    positions.limit_commits(consumer, {"clicks"}, lambda t, p: expected.get((t, p)))
    tps = [TP("clicks", 0), TP("clicks", 1), TP("other", 0)]
    # clicks[0]: 141 was acknowledged but never delivered: capped there; others untouched
    assert consumer._filter_committable_offsets(tps) == {
        TP("clicks", 0): 141,
        TP("clicks", 1): 9,
        TP("other", 0): 50,
    }
    consumer._committed_offset[TP("clicks", 0)] = 141
    assert TP("clicks", 0) not in consumer._filter_committable_offsets(tps)  # nothing new


def test_capped_offsets_is_the_rule_alone() -> None:
    offsets = {TP("clicks", 0): 142, TP("clicks", 1): 9, TP("other", 0): 50}
    expected = {("clicks", 0): 141}
    committed = {TP("clicks", 1): 9}
    assert positions.capped_offsets(
        offsets, committed, {"clicks"}, lambda t, p: expected.get((t, p))
    ) == {TP("clicks", 0): 141, TP("other", 0): 50}  # clicks[1]: nothing past the commit
