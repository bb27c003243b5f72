"""What the stream integration tests share: a small bundle, the click log as Kafka records, the
expected windows by definition, the reference vectors from the bundle's ONNX graph, the
comparison of every user's Redis record with that batch recompute, a worker run until every
record is written, and the records as ``stream show`` and the recall service read them
(fixtures are in this folder's conftest.py).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from benchmarks.harness import Record, WorkerProcess, publish
from infra.ports import LOOPBACK
from mindstream.kafka_config import kafka_python_producer_kwargs
from mindstream.redis_config import redis_client
from mindstream.settings import Settings, known_env
from model_export.bundle import load_bundle
from model_export.onnx_tower import OnnxUserTower
from stream.events import encode_event, event_key
from stream.publish import Pacer
from stream.record import InterestRecord, read_many
from stream.window import Behaviour, batch_window

N_BUNDLE_ITEMS = 260  # the logs have 300 items: i261..i300 are unknown to the model
MAX_LEN = 25  # window; the model sees its newest 16 known behaviours
HORIZON_S = 1800
UNKEYED_EVERY = 7  # every 7th click has no key and goes through the re-key topic
CATCH_UP_S = 120.0
BUNDLE_SEED = 5


def export_small_bundle(
    root: Path,
    *,
    n_items: int = N_BUNDLE_ITEMS,
    seed: int = BUNDLE_SEED,
    make_current: bool = True,
) -> Path:
    """A bundle of a small untrained model knowing items i1..i<n_items>, written under ``root``;
    returns its folder (``root/current`` points at it where ``make_current``)."""
    from model_export.export import export_bundle
    from model_export.model import MindConfig, build_tower

    tower = build_tower(MindConfig(n_items=n_items, dim=16, k=4, max_len=16, seed=seed))
    item_ids = [f"i{n}" for n in range(1, n_items + 1)]
    return export_bundle(tower.eval(), item_ids, root, make_current=make_current)


def click_records(
    events: list[dict], unkeyed_every: int = UNKEYED_EVERY
) -> list[tuple[bytes | None, bytes]]:
    out = []
    for n, e in enumerate(events):
        key = None if unkeyed_every and n % unkeyed_every == 0 else event_key(e["user_id"])
        value = encode_event(
            e["user_id"], e["item_id"], e["ts"], event=e["event"], category=e.get("category")
        )
        out.append((key, value))
    return out


def expected_windows(events: list[dict]) -> dict[str, tuple[tuple[str, ...], int]]:
    """user -> (window items, events applied) by the window's definition."""
    per_user: dict[str, list[Behaviour]] = defaultdict(list)
    for n, e in enumerate(events):
        per_user[e["user_id"]].append(Behaviour(e["item_id"], e["ts"], "log/0", n))
    out = {}
    for user, behaviours in per_user.items():
        window = batch_window(behaviours, max_len=MAX_LEN, horizon_ms=HORIZON_S * 1000)
        out[user] = (window.items, window.seq)
    return out


def reference_vectors(bundle_dir: Path, windows: list[tuple[str, ...]]) -> list[np.ndarray]:
    """The bundle's graph run directly, fed by an encoding written here, not stream.tower's."""
    bundle = load_bundle(bundle_dir)
    index = {item: n + 1 for n, item in enumerate(bundle.item_ids)}
    tower = OnnxUserTower(bundle.onnx_path, threads=1)
    out = []
    for items in windows:
        known = [index[i] for i in items if i in index][-bundle.max_len :]
        if not known:
            out.append(np.zeros((0, bundle.dim), np.float32))
            continue
        seq = np.zeros((1, bundle.max_len), np.int64)
        seq[0, : len(known)] = known
        interests, mask = tower(seq)
        out.append(interests[0][mask[0]])
    return out


def kill_mid_stream(worker: WorkerProcess, rng: random.Random, timeout_s: float = 60.0) -> float:
    """SIGKILL the worker at a random moment soon after it has consumed a record; returns the
    events it replayed (and skipped) in the run that ends."""
    deadline = time.monotonic() + timeout_s
    while not sum(
        v for k, v in worker.metrics().items() if k.startswith("mindstream_stream_events_in")
    ):
        assert time.monotonic() < deadline, worker.log_tail()
        time.sleep(0.05)
    time.sleep(rng.uniform(0.0, 0.3))
    replayed = worker.metrics()["mindstream_stream_events_replayed_total"]
    worker.kill()
    return replayed


def wait_for_records(
    settings: Settings,
    client: redis.Redis,
    expected: dict[str, tuple[tuple[str, ...], int]],
    *,
    timeout_s: float = CATCH_UP_S,
    worker: WorkerProcess | None = None,
) -> dict[str, InterestRecord]:
    users = sorted(expected)
    deadline = time.monotonic() + timeout_s
    behind: list[str] = users
    while time.monotonic() < deadline:
        records = read_many(client, settings.redis_prefix, users)
        behind = [
            u for u, r in zip(users, records, strict=True) if r is None or r.seq < expected[u][1]
        ]
        if not behind:
            return {u: r for u, r in zip(users, records, strict=True) if r is not None}
        if worker is not None and not worker.running:
            pytest.fail(f"worker exited with {worker.returncode}:\n{worker.log_tail()}")
        time.sleep(0.2)
    tail = worker.log_tail() if worker is not None else ""
    got = dict(zip(users, read_many(client, settings.redis_prefix, users), strict=True))
    detail = [(u, getattr(got[u], "seq", None), expected[u][1]) for u in behind[:5]]
    pytest.fail(
        f"{len(behind)} users not caught up after {timeout_s:.0f} s; (user, seq, expected): "
        f"{detail}\n{tail}"
    )


def assert_equal_to_batch_recompute(
    bundle_dirs: Path | Sequence[Path],
    records: dict[str, InterestRecord],
    expected: dict[str, tuple[tuple[str, ...], int]],
) -> None:
    """Every user of ``expected`` has a record (and no other user has) with the expected window,
    each event applied once, and the vectors of the bundle the record names (one of
    ``bundle_dirs``) recomputed from its ONNX graph (max abs diff <= 1e-5)."""
    users = sorted(expected)
    assert users
    assert sorted(records) == users
    dirs = [bundle_dirs] if isinstance(bundle_dirs, Path) else list(bundle_dirs)
    by_version = {load_bundle(d).version: d for d in dirs}
    for user in users:
        record = records[user]
        items, seq = expected[user]
        assert record.items == items, user
        assert record.seq == seq, user  # exactly once: not lost, not applied twice
        assert record.n_behaviours == len(items)
        topic, partition, offset = record.src.rsplit("/", 2)
        assert topic and int(partition) >= 0 and int(offset) >= 0
        assert record.model in by_version, (user, record.model, sorted(by_version))
    worst = 0.0
    for version, bundle_dir in by_version.items():
        named = [u for u in users if records[u].model == version]
        references = reference_vectors(bundle_dir, [expected[u][0] for u in named])
        for user, want in zip(named, references, strict=True):
            assert records[user].vectors.shape == want.shape, user
            if want.size:
                worst = max(worst, float(np.abs(records[user].vectors - want).max()))
    assert worst <= 1e-5, worst


Report = Callable[[str, dict[str, Any]], None]  # report(name, figures): the conftest fixture


class SustainedStream:
    """Publishes a log at a steady rate from a thread; every send is followed to its ack.

    ``rate`` 0 sends as fast as the producer takes records; ``producer_options`` override the
    settings' producer options (e.g. multi-record batches for a burst). ``ends`` holds, per
    partition, the offset after the highest acknowledged record: the log end offsets, known
    exactly from the acknowledgements (the local broker's own answer is wrong for
    multi-record batches).
    """

    def __init__(
        self,
        settings: Settings,
        records: list[Record],
        rate: float,
        producer_options: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.records = records
        self.rate = rate
        self.producer_options = producer_options or {}
        self.sent = 0
        self.acked = 0
        self.ends: dict[int, int] = {}
        self.positions: list[tuple[int, int]] = []
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="sustained-stream", daemon=True)

    def _on_ack(self, metadata: Any) -> None:
        with self._lock:
            self.acked += 1
            end = self.ends.get(metadata.partition, 0)
            self.ends[metadata.partition] = max(end, metadata.offset + 1)

    def _run(self) -> None:
        from kafka import KafkaProducer

        try:
            options = kafka_python_producer_kwargs(self.settings, client_id="faults-stream")
            producer = KafkaProducer(**{**options, **self.producer_options})
            try:
                pacer = Pacer(self.rate)
                futures = []
                for key, value in self.records:
                    pacer.wait()
                    future = producer.send(self.settings.clicks_topic, key=key, value=value)
                    future.add_callback(self._on_ack)
                    futures.append(future)
                    self.sent += 1
                producer.flush(timeout=120)
                self.positions = [(m.partition, m.offset) for m in (f.get(60) for f in futures)]
            finally:
                producer.close(timeout=10)
        except BaseException as exc:
            self.error = exc

    def start(self) -> SustainedStream:
        self._thread.start()
        return self

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def join(self, timeout_s: float = 300.0) -> list[tuple[int, int]]:
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise AssertionError(f"the stream did not finish within {timeout_s:.0f} s")
        if self.error is not None:
            raise AssertionError(f"publishing failed: {self.error!r}") from self.error
        assert len(self.positions) == len(self.records)
        return self.positions


def synthetic_clicks(n_users: int = 30) -> list[dict]:
    """A small planted-interest click log (300 items, 10 clusters, 4-20 clicks a user)."""
    from model_export.data.synthetic import SyntheticConfig, click_events, generate

    data, _ = generate(
        SyntheticConfig(n_users=n_users, n_items=300, n_clusters=10, min_len=4, max_len=20, seed=7)
    )
    return list(click_events(data))


def run_worker_until_written(
    settings: Settings, clicks: list[dict], log_path: Path
) -> tuple[dict[str, InterestRecord], str]:
    """Start a worker, publish ``clicks``, wait until every user's record holds its expected
    window, stop the worker (it must exit 0); the records and the worker's log."""
    expected = expected_windows(clicks)
    client = redis_client(settings)
    try:
        with WorkerProcess(settings, log_path) as worker:
            worker.start()
            worker.wait_ready()
            publish(settings, click_records(clicks))
            records = wait_for_records(settings, client, expected, worker=worker)
            assert worker.terminate() == 0, worker.log_tail()
            log = worker.log_path.read_text(errors="replace")
    finally:
        client.close()
    return records, log


def stream_show(settings: Settings, users: list[str]) -> dict[str, dict[str, Any]]:
    """``mindstream stream show USERS`` as a user runs it, configured by the environment."""
    env = {k: v for k, v in os.environ.items() if k not in known_env()}
    env.update(settings.as_env())
    done = subprocess.run(
        [sys.executable, "-m", "mindstream", "stream", "show", *users],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    return {line["user_id"]: line for line in lines}


async def recall_interests(settings: Settings, users: list[str]) -> dict[str, dict[str, Any]]:
    """Each user's interests as the recall service answers them (its own Redis client)."""
    from aiohttp.test_utils import TestClient, TestServer

    from recall.registry import IndexRegistry
    from recall.service import create_app

    registry = IndexRegistry(settings)
    registry.load(settings.bundle_path)
    out = {}
    async with TestClient(TestServer(create_app(settings, registry), host=LOOPBACK)) as client:
        for user in users:
            response = await client.get(f"/v1/users/{user}/interests")
            assert response.status == 200, await response.text()
            out[user] = await response.json()
    return out
