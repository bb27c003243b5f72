"""The stream worker with its window table in RocksDB (``MINDSTREAM_TABLE_STORE=rocksdb://``),
against the real broker and Redis: killed with SIGKILL mid-stream and restarted on the same data
directory (after each kill the local store may hold no window the changelog lacks), then
restarted once more without its RocksDB files (recovery from the changelog alone). Every 7th
click is unkeyed and goes through the re-key topic. The final Redis records and the windows in
the RocksDB files must equal a batch recompute (tests/integration/streamcheck.py): the window by
definition, the vectors from the bundle's ONNX graph (max abs diff <= 1e-5), every event applied
exactly once.
"""

from __future__ import annotations

import dataclasses
import random
import shutil
import time
from collections import defaultdict
from pathlib import Path

import pytest
import redis

from benchmarks.harness import WorkerProcess, publish
from mindstream.kafka_config import kafka_python_consumer_kwargs
from mindstream.settings import Settings
from model_export.data.synthetic import SyntheticConfig, click_events, generate
from stream.window import decode_window
from tests.integration.streamcheck import (
    assert_equal_to_batch_recompute,
    click_records,
    expected_windows,
    kill_mid_stream,
    wait_for_records,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# rocksdict comes with the `rocksdb` extra (make test and CI install it); without it, a skip.
rocksdict = pytest.importorskip("rocksdict", reason="MINDSTREAM_TABLE_STORE=rocksdb:// needs it")

CHUNK = 400
KILLS = 3


@pytest.fixture(scope="module")
def clicks() -> list[dict]:
    data, _ = generate(
        SyntheticConfig(n_users=80, n_items=300, n_clusters=10, min_len=8, max_len=40, seed=17)
    )
    return list(click_events(data))


def _rocksdb_paths(data_dir: Path) -> list[Path]:
    """The window table's RocksDB folders (one per partition) under the worker's data dir."""
    paths = sorted(data_dir.glob("stream/*/**/windows-*.db"))
    assert paths, f"no RocksDB files of the window table under {data_dir}"
    return paths


def _rocksdb_values(data_dir: Path) -> dict[bytes, bytes]:
    """user key -> window bytes in the worker's RocksDB files (the worker is not running)."""
    out: dict[bytes, bytes] = {}
    for path in _rocksdb_paths(data_dir):
        db = rocksdict.Rdict(
            str(path),
            options=rocksdict.Options(raw_mode=True),
            access_type=rocksdict.AccessType.read_only(),
        )
        try:
            for key, value in db.items():
                if key.startswith(b"__faust"):
                    continue  # the persisted changelog offset
                assert key not in out, f"{key!r} in two partitions' stores"
                out[key] = value
        finally:
            db.close()
    return out


def _changelog_values(settings: Settings) -> dict[bytes, set[bytes]]:
    """user key -> every window value the window changelog holds for it, read to its end."""
    from kafka import KafkaConsumer, TopicPartition

    topic = f"{settings.app_id}-windows-changelog"
    consumer = KafkaConsumer(
        **kafka_python_consumer_kwargs(settings, group_id=None), enable_auto_commit=False
    )
    out: dict[bytes, set[bytes]] = defaultdict(set)
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        deadline = time.monotonic() + 30
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            assert time.monotonic() < deadline, "changelog not read to its end in 30 s"
            for batch in consumer.poll(timeout_ms=200).values():
                for r in batch:
                    out[r.key].add(r.value)
    finally:
        consumer.close()
    return out


def _assert_store_within_changelog(settings: Settings, data_dir: Path) -> None:
    """No window in the local store that the changelog lacks: a worker recovering from the
    changelog alone (another machine, a lost disk) must not miss events that were committed."""
    stored = _rocksdb_values(data_dir)
    changelog = _changelog_values(settings)
    missing = [key for key, value in stored.items() if value not in changelog.get(key, ())]
    assert not missing, f"windows of {len(missing)} users in RocksDB, not in the changelog"


def test_rocksdb_store_survives_sigkills_exactly(
    stream_settings: Settings,
    redis_client: redis.Redis,
    clicks: list[dict],
    bundle_dir: Path,
    tmp_path: Path,
) -> None:
    settings = dataclasses.replace(
        stream_settings, table_store="rocksdb://", batch_size=20, stream_watch_interval_s=0.0
    )
    expected = expected_windows(clicks)
    log = click_records(clicks)
    chunks = [log[i : i + CHUNK] for i in range(0, len(log), CHUNK)]
    assert len(chunks) > KILLS
    rng = random.Random(3)
    replayed = 0.0
    with WorkerProcess(settings, tmp_path / "worker.log") as worker:
        worker.start()
        worker.wait_ready()
        for chunk in chunks[:KILLS]:
            publish(settings, chunk)
            replayed += kill_mid_stream(worker, rng)
            _assert_store_within_changelog(settings, tmp_path)
            worker.start()
            worker.wait_ready()
        wait_for_records(
            settings, redis_client, expected_windows(clicks[: KILLS * CHUNK]), worker=worker
        )
        replayed += worker.metrics()["mindstream_stream_events_replayed_total"]
        assert worker.terminate() == 0, worker.log_tail()
        # The local store is lost (a new machine takes over the partitions): the windows come
        # back from the changelog alone, which must therefore hold every applied event.
        for path in _rocksdb_paths(tmp_path):
            shutil.rmtree(path)
        worker.start()
        worker.wait_ready()
        for chunk in chunks[KILLS:]:
            publish(settings, chunk)
        records = wait_for_records(settings, redis_client, expected, worker=worker)
        assert worker.terminate() == 0, worker.log_tail()

    # the store itself holds the exact windows
    windows = {k.decode(): decode_window(v) for k, v in _rocksdb_values(tmp_path).items()}
    assert {u: (w.items, w.seq) for u, w in windows.items()} == expected
    assert_equal_to_batch_recompute(bundle_dir, records, expected)
    assert replayed > 0  # the restarts did replay uncommitted events, and skipped them
