"""The stream worker with its window table in RocksDB (``MINDSTREAM_TABLE_STORE=rocksdb://``),
against the real broker and Redis: killed with SIGKILL mid-stream and restarted on the same data
directory (after each kill the local store may hold no window the changelog lacks), then
restarted once more without its RocksDB files (recovery from the changelog alone). The final
Redis records and the windows in the RocksDB files must equal a batch recompute: the window by
definition, the vectors from the bundle's ONNX graph (max abs diff <= 1e-5), every event applied
exactly once.
"""

from __future__ import annotations

import dataclasses
import random
import shutil
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from infra.kafka_config import kafka_python_consumer_kwargs
from infra.ports import free_port
from infra.topics import delete_topics
from mindstream.settings import Settings
from model_export.bundle import load_bundle
from model_export.data.synthetic import SyntheticConfig, click_events, generate
from model_export.onnx_tower import OnnxUserTower
from stream.events import encode_event, event_key
from stream.harness import WorkerProcess, publish
from stream.record import InterestRecord, read_many
from stream.rekey import rekey_topic_name
from stream.window import Behaviour, batch_window, decode_window

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# rocksdict is not among the project's dependencies yet (no extra installs it).
rocksdict = pytest.importorskip("rocksdict", reason="MINDSTREAM_TABLE_STORE=rocksdb:// needs it")

N_BUNDLE_ITEMS = 260  # the log has 300 items: some are unknown to the model
MAX_LEN = 25
HORIZON_S = 1800
CATCH_UP_S = 90.0
CHUNK = 400
KILLS = 3

Expected = dict[str, tuple[tuple[str, ...], int]]  # user -> (window items, events applied)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from model_export.export import export_bundle
    from model_export.model import MindConfig, build_tower

    tower = build_tower(MindConfig(n_items=N_BUNDLE_ITEMS, dim=16, k=4, max_len=16, seed=7))
    root = tmp_path_factory.mktemp("bundles")
    export_bundle(tower.eval(), [f"i{n}" for n in range(1, N_BUNDLE_ITEMS + 1)], root)
    return root / "current"


@pytest.fixture(scope="module")
def clicks() -> list[dict]:
    data, _ = generate(
        SyntheticConfig(n_users=80, n_items=300, n_clusters=10, min_len=8, max_len=40, seed=17)
    )
    return list(click_events(data))


@pytest.fixture
def rocksdb_settings(
    integration_settings: Settings, bundle_dir: Path, tmp_path: Path
) -> Iterator[Settings]:
    settings = dataclasses.replace(
        integration_settings,
        table_store="rocksdb://",
        bundle_path=str(bundle_dir),
        worker_web_port=free_port(),
        window_max_len=MAX_LEN,
        window_horizon_s=HORIZON_S,
        batch_size=20,
        batch_deadline_ms=20,
        onnx_threads=1,
        stream_watch_interval_s=0.0,
        stream_shutdown_grace_s=2.0,
        log_level="INFO",
    )
    yield settings
    delete_topics(
        settings,
        [
            rekey_topic_name(settings.app_id, settings.clicks_topic),
            f"{settings.app_id}-windows-changelog",
        ],
    )


def _keyed(events: list[dict]) -> list[tuple[bytes | None, bytes | None]]:
    # Keyed clicks only: re-keyed ones meet a known, rare loss right after a restart on the
    # local broker (see test_stream_worker's with-rekeyed restart test), unrelated to the store.
    return [
        (
            event_key(e["user_id"]),
            encode_event(
                e["user_id"], e["item_id"], e["ts"], event=e["event"], category=e.get("category")
            ),
        )
        for e in events
    ]


def _expected(events: list[dict]) -> Expected:
    per_user: dict[str, list[Behaviour]] = defaultdict(list)
    for n, e in enumerate(events):
        per_user[e["user_id"]].append(Behaviour(e["item_id"], e["ts"], "log/0", n))
    out = {}
    for user, behaviours in per_user.items():
        window = batch_window(behaviours, max_len=MAX_LEN, horizon_ms=HORIZON_S * 1000)
        out[user] = (window.items, window.seq)
    return out


def _reference_vectors(bundle_dir: Path, windows: list[tuple[str, ...]]) -> list[np.ndarray]:
    """The bundle's graph run directly, fed by an encoding written here, not stream.tower's."""
    bundle = load_bundle(bundle_dir)
    index = {item: n + 1 for n, item in enumerate(bundle.item_ids)}
    graph = OnnxUserTower(bundle.onnx_path, threads=1)
    out = []
    for items in windows:
        known = [index[i] for i in items if i in index][-bundle.max_len :]
        if not known:
            out.append(np.zeros((0, bundle.dim), np.float32))
            continue
        seq = np.zeros((1, bundle.max_len), np.int64)
        seq[0, : len(known)] = known
        interests, mask = graph(seq)
        out.append(np.asarray(interests[0][mask[0]]))
    return out


def _wait_for(
    settings: Settings, client: redis.Redis, expected: Expected, worker: WorkerProcess
) -> dict[str, InterestRecord]:
    """Records once every user has applied all its events (none can apply more)."""
    users = sorted(expected)
    deadline = time.monotonic() + CATCH_UP_S
    while True:
        records = dict(zip(users, read_many(client, settings.redis_prefix, users), strict=True))
        behind = [u for u, r in records.items() if r is None or r.seq < expected[u][1]]
        if not behind:
            return {u: r for u, r in records.items() if r is not None}
        if not worker.running:
            pytest.fail(f"worker exited with {worker.returncode}:\n{worker.log_tail()}")
        if time.monotonic() > deadline:
            detail = [(u, getattr(records[u], "seq", None), expected[u][1]) for u in behind[:5]]
            pytest.fail(f"{len(behind)} users behind, (user, seq, want): {detail}")
        time.sleep(0.2)


def _events_in(worker: WorkerProcess) -> float:
    return sum(
        v for k, v in worker.metrics().items() if k.startswith("mindstream_stream_events_in_total")
    )


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
    rocksdb_settings: Settings,
    redis_client: redis.Redis,
    clicks: list[dict],
    bundle_dir: Path,
    tmp_path: Path,
) -> None:
    settings = rocksdb_settings
    expected = _expected(clicks)
    log = _keyed(clicks)
    chunks = [log[i : i + CHUNK] for i in range(0, len(log), CHUNK)]
    assert len(chunks) > KILLS
    rng = random.Random(3)
    replayed = 0.0
    kills = 0
    with WorkerProcess(settings, tmp_path / "worker.log") as worker:
        worker.start()
        worker.wait_ready()
        for chunk in chunks[:KILLS]:
            publish(settings, chunk)
            # let this run consume some records, then pull the plug mid-stream
            deadline = time.monotonic() + 60
            while not _events_in(worker):
                assert time.monotonic() < deadline, worker.log_tail()
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 0.3))
            replayed += worker.metrics()["mindstream_stream_events_replayed_total"]
            worker.kill()
            kills += 1
            _assert_store_within_changelog(settings, tmp_path)
            worker.start()
            worker.wait_ready()
        _wait_for(settings, redis_client, _expected(clicks[: KILLS * CHUNK]), worker)
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
        records = _wait_for(settings, redis_client, expected, worker)
        assert worker.terminate() == 0, worker.log_tail()

    users = sorted(expected)
    assert sorted(records) == users
    # the store itself holds the exact windows
    windows = {k.decode(): decode_window(v) for k, v in _rocksdb_values(tmp_path).items()}
    assert {u: (w.items, w.seq) for u, w in windows.items()} == expected
    version = load_bundle(bundle_dir).version
    worst = 0.0
    references = _reference_vectors(bundle_dir, [expected[u][0] for u in users])
    for user, want in zip(users, references, strict=True):
        record = records[user]
        items, seq = expected[user]
        assert record.seq == seq, user  # exactly once: not lost, not applied twice
        assert record.items == items, user
        assert record.model == version
        assert record.vectors.shape == want.shape, user
        if want.size:
            worst = max(worst, float(np.abs(record.vectors - want).max()))
    assert worst <= 1e-5, worst
    assert kills == KILLS
    assert replayed > 0  # the restarts did replay uncommitted events, and skipped them
