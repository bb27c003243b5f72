"""Batch writer: order per partition, one batch in flight per partition, a single-record tail."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from stream.batchwriter import BatchWriter


@dataclass
class Builder:
    max_bytes: int
    records: list[tuple[bytes, bytes, list]] = field(default_factory=list)
    size: int = 0

    def append(self, *, key: bytes, value: bytes, timestamp: None, headers: list) -> object | None:
        cost = len(key) + len(value)
        if self.records and self.size + cost > self.max_bytes:
            return None
        self.records.append((key, value, headers))
        self.size += cost
        return object()


@dataclass
class Producer:
    """aiokafka's batch API in memory: offsets per partition, acknowledgements that take a
    while, and a record of how many batches of a partition were in flight at once."""

    max_bytes: int = 100
    log: dict[int, list[list[tuple[bytes, bytes, list]]]] = field(default_factory=dict)
    in_flight: dict[int, int] = field(default_factory=dict)
    most_in_flight: int = 0

    def create_batch(self) -> Builder:
        return Builder(self.max_bytes)

    async def send_batch(self, batch: Builder, topic: str, *, partition: int) -> asyncio.Future:
        self.in_flight[partition] = self.in_flight.get(partition, 0) + 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight[partition])
        loop = asyncio.get_running_loop()
        future = loop.create_future()

        def acknowledge() -> None:
            batches = self.log.setdefault(partition, [])
            base = sum(len(b) for b in batches)
            batches.append(batch.records)
            self.in_flight[partition] -= 1
            future.set_result(SimpleNamespace(offset=base))

        loop.call_later(0.001, acknowledge)
        return future


def records(n: int, partition: int) -> list[tuple[int, bytes, bytes, list]]:
    return [(partition, f"u{i}".encode(), b"x" * 30, [("h", b"1")]) for i in range(n)]


@pytest.mark.parametrize("tail", [True, False])
def test_order_size_one_batch_in_flight_and_tail(tail: bool) -> None:
    producer = Producer()
    persisted: dict[int, int] = {}
    writer = BatchWriter(producer, "t", single_record_tail=tail, on_persisted=persisted.__setitem__)
    batch = records(7, 0) + records(1, 3)
    asyncio.run(writer.write(batch))
    flat = [r for b in producer.log[0] for r in b]
    assert flat == [(k, v, h) for p, k, v, h in batch if p == 0]  # order and headers kept
    assert all(sum(len(k) + len(v) for k, v, _ in b) <= 100 for b in producer.log[0])
    assert producer.most_in_flight == 1  # the next batch waits for the previous one's ack
    if tail:
        assert len(producer.log[0][-1]) == 1 and len(producer.log[0][0]) > 1
    assert producer.log[3] == [[(b"u0", b"x" * 30, [("h", b"1")])]]
    assert persisted == {0: 6, 3: 0}  # the last offset written per partition
    asyncio.run(writer.write(records(2, 0)))
    assert persisted[0] == 8


def test_nothing_to_write() -> None:
    producer = Producer()
    asyncio.run(BatchWriter(producer, "t", single_record_tail=True).write([]))
    assert producer.log == {}
