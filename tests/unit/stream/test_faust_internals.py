"""stream.faust_internals against the installed faust-streaming and aiokafka (no broker).

Each test drives Faust's own objects (an app, its consumer, a RocksDB table store) through one
thing the worker relies on, so that an upgrade that changes it fails here. The version and
fingerprint checks are shown to refuse, with a message that says what to do.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import faust
import faust.streams
import pytest
from faust.transport.consumer import Consumer, Fetcher
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP, Message

from stream import faust_internals, positions
from stream.faust_internals import FaustInternalsMismatch
from stream.intake import Intake

CLICKS, OTHER = "clicks", "other"


@pytest.fixture
def restore_faust(monkeypatch: pytest.MonkeyPatch) -> None:
    """Undo install() after the test (monkeypatch puts the originals back)."""
    monkeypatch.setattr(Consumer, "_drain_messages", Consumer._drain_messages)
    monkeypatch.setattr(
        AIOKafkaConsumerThread,
        "_create_worker_consumer",
        AIOKafkaConsumerThread._create_worker_consumer,
    )


def make_app(name: str, tmp_path: Path, store: str = "memory://") -> Any:
    app = faust.App(
        name,
        broker="kafka://127.0.0.1:9",  # never connected to
        store=store,
        datadir=str(tmp_path / name),
        web_enabled=False,
        autodiscover=False,
    )
    app.finalize()
    return app


async def acking(app: Any, *topics: str) -> None:
    """Subscribe ``topics`` with acknowledgements, as an agent's stream does when it starts."""
    for name in topics:
        app.topics.add(app.topic(name, key_type=bytes, value_type=bytes))
    await app.topics._update_indices()


def message(topic: str, partition: int, offset: int) -> Message:
    return Message(
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp=time.time(),
        timestamp_type=0,
        headers=[],
        key=b"u1",
        value=b"{}",
        checksum=None,
    )


def test_the_installed_faust_is_the_one_the_door_was_written_for() -> None:
    faust_internals.check_faust()


def test_another_faust_version_is_refused_with_what_to_do(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, restore_faust: None
) -> None:
    monkeypatch.setattr(faust_internals, "FAUST_VERSION", "0.14.9")
    app = make_app("refused-version", tmp_path)
    drain = Consumer._drain_messages
    with pytest.raises(FaustInternalsMismatch) as refused:
        faust_internals.install(app, Intake(10), {CLICKS})
    text = str(refused.value)
    assert "faust-streaming 0.14.9" in text and "pin faust-streaming==0.14.9" in text
    assert "update FAUST_VERSION and the fingerprints" in text
    assert Consumer._drain_messages is drain  # nothing patched


def test_a_changed_function_is_refused_with_what_to_do(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, restore_faust: None
) -> None:
    first, *rest = faust_internals.FINGERPRINTS
    changed = dataclasses.replace(first, sha256="0000000000000000")
    monkeypatch.setattr(faust_internals, "FINGERPRINTS", (changed, *rest))
    drain = Consumer._drain_messages
    with pytest.raises(FaustInternalsMismatch) as refused:
        faust_internals.install(make_app("refused-source", tmp_path), Intake(10), {CLICKS})
    text = str(refused.value)
    assert "faust.transport.consumer.Consumer._drain_messages" in text
    assert f"source fingerprint {first.sha256}, expected 0000000000000000" in text
    assert "update its fingerprint in FINGERPRINTS" in text
    assert Consumer._drain_messages is drain


def test_every_fingerprint_names_a_function_that_exists() -> None:
    for fp in faust_internals.FINGERPRINTS:
        assert faust_internals.source_fingerprint(faust_internals._resolve(fp)) == fp.sha256


class Fetch:
    """Replaces a Faust consumer's ``getmany`` (the broker): serves ``fetches``, then stops."""

    def __init__(self, consumer: Any, fetcher: Any, fetches: list[list[Message]]) -> None:
        self.consumer, self.fetcher, self.fetches = consumer, fetcher, fetches

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        if not self.fetches:
            self.fetcher._stopped.set()
            return
        for m in self.fetches.pop(0):
            yield m.tp, m


async def test_the_installed_fetch_loop_fills_the_intake_with_faust_bookkeeping(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, restore_faust: None
) -> None:
    app = make_app("fetch-loop", tmp_path)
    other_app = make_app("fetch-loop-other", tmp_path)
    intake = Intake(100)
    faust_internals.install(app, intake, {CLICKS})
    assert faust_internals.installed(app) and not faust_internals.installed(other_app)
    await acking(app, CLICKS, OTHER)
    consumer = app.consumer
    tp = TP(CLICKS, 0)
    # offsets 3..4 are missing (compaction); the "other" record goes to Faust's callback
    clicks = [message(CLICKS, 0, o) for o in (0, 1, 2, 5, 6)]
    delivered: list[Message] = []

    async def callback(m: Message) -> None:
        delivered.append(m)

    monkeypatch.setattr(consumer, "callback", callback)
    fetcher = Fetcher(app)
    fetch = Fetch(consumer, fetcher, [clicks[:3], [*clicks[3:], message(OTHER, 0, 0)]])
    monkeypatch.setattr(consumer, "getmany", fetch.getmany)
    await asyncio.wait_for(Consumer._drain_messages(consumer, fetcher), 5)

    batch = await intake.next_batch(100, 0.0)
    assert batch == clicks
    assert [m.topic for m in delivered] == [OTHER]
    assert consumer._read_offset[tp] == 6  # Faust's read position
    assert set(consumer.unacked) >= set(clicks)  # tracked as in flight until acknowledged
    # Faust's commit bookkeeping: nothing acknowledged yet, so nothing to commit
    assert consumer._filter_committable_offsets([tp]) == {}
    sensors = app.sensors
    Intake.acknowledge(consumer, sensors, batch)
    assert not set(consumer.unacked) & set(clicks)
    # acknowledged 0..2 and 5..6 with the gap known, the commit passes the gap (without it,
    # it would stop at 3). Faust's gap includes the record after it (3..5), so 5 is counted
    # twice and the next offset, 7, comes one computation later.
    assert consumer._filter_committable_offsets([tp]) == {tp: 6}
    assert consumer._filter_committable_offsets([tp]) == {tp: 7}


async def test_a_suspended_flow_leaves_source_records_unread_on_fausts_consumer(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, restore_faust: None
) -> None:
    app = make_app("fetch-suspended", tmp_path)
    intake = Intake(100)
    faust_internals.install(app, intake, {CLICKS})
    consumer = app.consumer
    fetcher = Fetcher(app)
    consumer.suspend_flow.set()  # what Faust does while it rebalances
    fetch = Fetch(consumer, fetcher, [[message(CLICKS, 0, o) for o in range(3)]])
    monkeypatch.setattr(consumer, "getmany", fetch.getmany)
    await asyncio.wait_for(Consumer._drain_messages(consumer, fetcher), 5)
    assert len(intake) == 0
    assert consumer._read_offset.get(TP(CLICKS, 0)) is None


async def test_commits_are_capped_on_fausts_consumer(tmp_path: Path) -> None:
    app = make_app("commit-cap", tmp_path)
    await acking(app, CLICKS)
    consumer = app.consumer
    tp = TP(CLICKS, 0)
    for offset in range(10):
        m = message(CLICKS, 0, offset)
        consumer.track_message(m)
        consumer.ack(m)
    expected: dict[tuple[str, int], int] = {(CLICKS, 0): 6}
    positions.limit_commits(consumer, {CLICKS}, lambda t, p: expected.get((t, p)))
    # Faust would commit 10; the worker has seen records up to 5 only
    assert consumer._filter_committable_offsets([tp]) == {tp: 6}
    # what set_committed_offset records is what Faust compares new commits with
    faust_internals.set_committed_offset(consumer, tp, 6)
    assert faust_internals.committed_offsets(consumer).get(tp) == 6
    assert not consumer._should_commit(tp, 6) and consumer._should_commit(tp, 7)
    unknown = TP(CLICKS, 9)
    assert faust_internals.committed_offsets(consumer).get(unknown) is None
    assert unknown not in faust_internals.committed_offsets(consumer)  # .get inserts nothing


async def test_the_recovery_seek_is_wrapped_and_records_what_the_rewind_records(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    app = make_app("seek", tmp_path)
    consumer = app.consumer
    tp = TP(CLICKS, 1)
    seeks: list[int] = []

    async def seek_to_committed() -> dict[TP, int]:  # the broker's answer
        seeks.append(7)
        return {tp: 7}

    monkeypatch.setattr(consumer, "seek_to_committed", seek_to_committed)
    once = positions.skip_seek_after_rewind(consumer)
    await consumer.perform_seek()  # Faust's own, through the wrapper
    assert seeks == [7]
    # Faust's perform_seek sets the read and committed offsets; the rewind sets the same
    assert consumer._read_offset[tp] == 7
    assert faust_internals.committed_offsets(consumer).get(tp) == 7
    once.arm()
    await consumer.perform_seek()  # right after the rewind: skipped
    assert seeks == [7]
    await consumer.perform_seek()
    assert seeks == [7, 7]


async def test_the_fetch_wait_is_set_on_the_apps_aiokafka_consumer_only(
    tmp_path: Path, restore_faust: None
) -> None:
    app = make_app("fetch-wait", tmp_path)
    other = make_app("fetch-wait-other", tmp_path)
    faust_internals.install(app, Intake(10), {CLICKS}, fetch_max_wait_ms=50)
    built = [a.consumer._thread._create_worker_consumer(a.transport) for a in (app, other)]
    try:
        assert [c._fetch_max_wait_ms for c in built] == [50, 1500]
    finally:
        for c in built:
            await c.stop()


def test_installing_twice_is_refused(tmp_path: Path, restore_faust: None) -> None:
    app = make_app("twice", tmp_path)
    faust_internals.install(app, Intake(10), {CLICKS})
    with pytest.raises(FaustInternalsMismatch, match="installed already"):
        faust_internals.install(app, Intake(10), {CLICKS})


@pytest.fixture
def rocksdb_table(tmp_path: Path) -> Iterator[Any]:
    app = make_app("store", tmp_path, store="rocksdb://")
    table = app.Table("windows", key_type=bytes, value_type=bytes, partitions=4)
    yield table
    table.data.reset_state()  # drops the partitions' databases


def test_a_table_store_write_lands_in_the_partition_of_its_event(rocksdb_table: Any) -> None:
    table = rocksdb_table
    with pytest.raises(AssertionError):
        table.data[b"u1"] = b"w"  # a RocksDB store needs Faust's current event
    faust_internals.write_table_store(table, b"u1", b"window", message("clicks", 2, 41))
    assert faust.streams.current_event() is None  # reset after the write
    store = table.data
    assert store._db_for_partition(2)[b"u1"] == b"window"
    assert store._db_for_partition(1).get(b"u1") is None
    changelog = TP("store-windows-changelog", 2)
    faust_internals.set_persisted_offset(table, changelog, 41)
    assert store.persisted_offset(changelog) == 41
