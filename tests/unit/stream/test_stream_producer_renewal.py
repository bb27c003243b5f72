"""A producer whose idempotence state the brokers lost is replaced before the write is retried."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, OutOfOrderSequenceNumber

from stream.batchwriter import BatchWriter
from stream.exceptions import StoreUnavailable
from stream.runtime import ProducerRenewal, write_or_unavailable


class Producer:
    def __init__(self, fail_with: Exception | None) -> None:
        self.fail_with = fail_with
        self.started = self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True


class Writer(BatchWriter):
    async def write(self, records: Any) -> None:
        if self.producer.fail_with is not None:
            raise self.producer.fail_with


def _writers(error: Exception) -> tuple[ProducerRenewal, Producer, list[Writer]]:
    old = Producer(error)
    writers = [Writer(old, t, single_record_tail=False) for t in ("changelog", "rekey")]
    return ProducerRenewal(lambda: Producer(None), list(writers)), old, writers


def test_lost_sequence_state_replaces_the_shared_producer_then_the_retry_succeeds() -> None:
    renewal, old, writers = _writers(OutOfOrderSequenceNumber())
    with pytest.raises(StoreUnavailable, match="producer replaced"):
        asyncio.run(write_or_unavailable(writers[0], [], "window changelog", renewal))
    new = renewal.producer
    assert new is not old and new.started and old.stopped
    assert all(w.producer is new for w in writers)  # both writers share the new one
    assert renewal.renewals == 1
    asyncio.run(write_or_unavailable(writers[1], [], "re-key topic", renewal))  # retried: ok


def test_other_broker_errors_keep_the_producer() -> None:
    renewal, old, writers = _writers(KafkaConnectionError())
    with pytest.raises(StoreUnavailable):
        asyncio.run(write_or_unavailable(writers[0], [], "window changelog", renewal))
    assert renewal.producer is old and renewal.renewals == 0
