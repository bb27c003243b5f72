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

    async def earliest_offsets(self, *tps: TP) -> dict[TP, int]:
        return {tp: 5 for tp in tps}

    async def seek(self, tp: TP, offset: int) -> None:
        self.seeks[tp] = offset


def test_rewind_covers_zero_and_missing_commits(monkeypatch: pytest.MonkeyPatch) -> None:
    committed = {("clicks", 0): 0, ("clicks", 1): 42, ("rekey", 0): None}

    def fake(settings: Settings, partitions: list[tuple[str, int]]) -> dict[Any, Any]:
        return {p: committed[p] for p in partitions}

    monkeypatch.setattr(positions, "committed_offsets", fake)
    consumer = Consumer()
    assigned = [TP("clicks", 0), TP("clicks", 1), TP("rekey", 0), TP("app-windows-changelog", 0)]
    asyncio.run(positions.rewind_to_committed(consumer, Settings(), assigned, {"clicks", "rekey"}))
    # the changelog partition is Faust's recovery's business and is left alone
    assert consumer.seeks == {TP("clicks", 0): 0, TP("clicks", 1): 42, TP("rekey", 0): 5}
