"""Changelog batches: order per partition, size-bounded batches, a single-record tail on Tansu."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from stream.changelog import ChangelogWriter


@dataclass
class Builder:
    max_bytes: int
    records: list[tuple[bytes, bytes]] = field(default_factory=list)
    size: int = 0

    def append(self, *, key: bytes, value: bytes, timestamp: None) -> object | None:
        cost = len(key) + len(value)
        if self.records and self.size + cost > self.max_bytes:
            return None
        self.records.append((key, value))
        self.size += cost
        return object()


@dataclass
class Producer:
    """aiokafka's batch API, in memory: offsets per partition, like a broker."""

    max_bytes: int = 100
    log: dict[int, list[list[tuple[bytes, bytes]]]] = field(default_factory=dict)

    def create_batch(self) -> Builder:
        return Builder(self.max_bytes)

    async def send_batch(self, batch: Builder, topic: str, *, partition: int) -> asyncio.Future:
        batches = self.log.setdefault(partition, [])
        base = sum(len(b) for b in batches)
        batches.append(batch.records)
        future = asyncio.get_running_loop().create_future()
        future.set_result(SimpleNamespace(offset=base))
        return future


def records(n: int, partition: int) -> list[tuple[int, bytes, bytes]]:
    return [(partition, f"u{i}".encode(), b"x" * 30) for i in range(n)]


@pytest.mark.parametrize("tail", [True, False])
def test_batches_keep_order_fit_the_size_and_end_with_one_record_on_tansu(tail: bool) -> None:
    producer = Producer()
    persisted: dict[int, int] = {}
    writer = ChangelogWriter(
        producer, "t", single_record_tail=tail, on_persisted=persisted.__setitem__
    )
    batch = records(7, 0) + records(1, 3)
    asyncio.run(writer.write(batch))
    flat = [r for b in producer.log[0] for r in b]
    assert flat == [(k, v) for p, k, v in batch if p == 0]  # order kept
    assert all(sum(len(k) + len(v) for k, v in b) <= 100 for b in producer.log[0])
    assert len(producer.log[0][-1]) == (1 if tail else len(producer.log[0][-1]))
    if tail:
        assert len(producer.log[0]) >= 2 and len(producer.log[0][0]) > 1
    assert producer.log[3] == [[(b"u0", b"x" * 30)]]
    assert persisted == {0: 6, 3: 0}  # the last offset written per partition
    asyncio.run(writer.write(records(2, 0)))
    assert persisted[0] == 8


def test_nothing_to_write() -> None:
    producer = Producer()
    asyncio.run(ChangelogWriter(producer, "t", single_record_tail=True).write([]))
    assert producer.log == {}
