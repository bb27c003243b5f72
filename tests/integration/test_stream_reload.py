"""Bundle hot reload in a running stream worker, against the real broker and Redis.

The worker starts on bundle v1 through the ``current`` link and watches the link; the test
repoints the link at v2 (other weights, a superset of the items) while clicks flow, and later at
a tampered copy of v2. Records are compared with a batch recompute: the window by definition and
the vectors from the ONNX graph of the bundle the record names, fed by this file's own encoding.
"""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from infra.ports import free_port
from infra.topics import delete_topics
from mindstream.settings import Settings
from model_export.bundle import load_bundle, point_current
from model_export.data.synthetic import SyntheticConfig, click_events, generate
from model_export.onnx_tower import OnnxUserTower
from stream.events import encode_event, event_key
from stream.harness import WorkerProcess, publish
from stream.record import InterestRecord, read_many
from stream.rekey import rekey_topic_name
from stream.window import Behaviour, batch_window

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_ITEMS = 300  # items of the click log
N_V1_ITEMS = 260  # v1 does not know i261..i300; v2 knows them all
MAX_LEN = 25
HORIZON_S = 1800
CATCH_UP_S = 90.0
WATCH_INTERVAL_S = 0.3
RELOADS = "mindstream_stream_bundle_reloads_total"
TOWER_INFO = "mindstream_stream_tower_info"

Expected = dict[str, tuple[tuple[str, ...], int]]  # user -> (window items, events applied)


@dataclasses.dataclass(frozen=True)
class Bundles:
    root: Path
    v1: Path
    v2: Path


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Bundles:
    from model_export.export import export_bundle
    from model_export.model import MindConfig, build_tower

    root = tmp_path_factory.mktemp("bundles")
    ids = [f"i{n}" for n in range(1, N_ITEMS + 1)]
    v1 = build_tower(MindConfig(n_items=N_V1_ITEMS, dim=16, k=4, max_len=16, seed=5))
    v2 = build_tower(MindConfig(n_items=N_ITEMS, dim=16, k=4, max_len=16, seed=6))
    # v2 is exported next to v1 but not made current: the test switches the link itself.
    v2_path = export_bundle(v2.eval(), ids, root, make_current=False)
    v1_path = export_bundle(v1.eval(), ids[:N_V1_ITEMS], root)
    assert (root / "current").resolve() == v1_path.resolve()
    return Bundles(root, v1_path, v2_path)


@pytest.fixture(scope="module")
def clicks() -> list[dict]:
    data, _ = generate(
        SyntheticConfig(n_users=80, n_items=N_ITEMS, n_clusters=10, min_len=8, max_len=40, seed=13)
    )
    return list(click_events(data))


@pytest.fixture
def reload_settings(
    integration_settings: Settings, bundles: Bundles, tmp_path: Path
) -> Iterator[Settings]:
    settings = dataclasses.replace(
        integration_settings,
        bundle_path=str(bundles.root / "current"),
        worker_web_port=free_port(),
        window_max_len=MAX_LEN,
        window_horizon_s=HORIZON_S,
        batch_size=50,
        batch_deadline_ms=20,
        onnx_threads=1,
        stream_watch_interval_s=WATCH_INTERVAL_S,
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


class Reference:
    """A bundle's graph run directly, fed by an encoding written here, not stream.tower's."""

    def __init__(self, bundle_dir: Path) -> None:
        self.bundle = load_bundle(bundle_dir)
        self.index = {item: n + 1 for n, item in enumerate(self.bundle.item_ids)}
        self.graph = OnnxUserTower(self.bundle.onnx_path, threads=1)

    def __call__(self, items: tuple[str, ...]) -> np.ndarray:
        max_len = self.bundle.max_len
        known = [self.index[i] for i in items if i in self.index][-max_len:]
        if not known:
            return np.zeros((0, self.bundle.dim), np.float32)
        seq = np.zeros((1, max_len), np.int64)
        seq[0, : len(known)] = known
        interests, mask = self.graph(seq)
        return np.asarray(interests[0][mask[0]])


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


def _wait_metric(worker: WorkerProcess, name: str, value: float, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while worker.metrics().get(name) != value:
        assert worker.running, worker.log_tail()
        assert time.monotonic() < deadline, f"{name} never {value}:\n{worker.log_tail()}"
        time.sleep(0.1)


def _tower_versions(metrics: dict[str, float]) -> set[str]:
    """Versions the tower-info gauge names with value 1."""
    return {
        name.split('version="')[1].split('"')[0]
        for name, value in metrics.items()
        if name.startswith(TOWER_INFO + "{") and value == 1
    }


def _assert_records(
    records: dict[str, InterestRecord],
    expected: Expected,
    users: set[str],
    references: dict[str, Reference],
) -> None:
    """Each user's record is exact for its window under the bundle it names (one of
    ``references``, by version)."""
    assert users
    worst = 0.0
    for user in sorted(users):
        record = records[user]
        items, seq = expected[user]
        assert record.seq == seq, user  # not lost, not applied twice
        assert record.items == items, user
        assert record.model in references, (user, record.model, sorted(references))
        want = references[record.model](items)
        assert record.vectors.shape == want.shape, user
        if want.size:
            worst = max(worst, float(np.abs(record.vectors - want).max()))
    assert worst <= 1e-5, worst


def _tamper(bundle: Path, root: Path) -> Path:
    """A copy of ``bundle`` with one byte of its ONNX graph changed (same size)."""
    copy = root / f"tampered-{bundle.name}"
    shutil.copytree(bundle, copy)
    onnx = copy / "user_tower.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx.write_bytes(bytes(data))
    return copy


def test_bundle_swap_keeps_every_event_and_refuses_a_tampered_bundle(
    reload_settings: Settings,
    redis_client: redis.Redis,
    clicks: list[dict],
    bundles: Bundles,
    tmp_path: Path,
) -> None:
    settings = reload_settings
    ref1, ref2 = Reference(bundles.v1), Reference(bundles.v2)
    v1, v2 = ref1.bundle.version, ref2.bundle.version
    assert v1 != v2
    n = len(clicks)
    a, b, c = n * 2 // 5, n * 3 // 5, n * 17 // 20
    before, during, after, late = clicks[:a], clicks[a:b], clicks[b:c], clicks[c:]
    log = _keyed(clicks)
    with WorkerProcess(settings, tmp_path / "worker.log") as worker:
        worker.start()
        assert worker.wait_ready()["bundle"] == v1
        publish(settings, log[:a])
        records = _wait_for(settings, redis_client, _expected(before), worker)
        _assert_records(records, _expected(before), set(records), {v1: ref1})
        assert {r.model for r in records.values()} == {v1}

        # Clicks keep coming while the link is switched to v2.
        publisher = threading.Thread(
            target=lambda: [publish(settings, log[i : min(i + 50, b)]) for i in range(a, b, 50)]
        )
        publisher.start()
        try:
            point_current(bundles.root, bundles.v2)
            _wait_metric(worker, f'{RELOADS}{{outcome="swapped"}}', 1.0)
        finally:
            publisher.join(timeout=60)
        assert not publisher.is_alive()
        publish(settings, log[b:c])
        _wait_for(settings, redis_client, _expected(clicks[:c]), worker)
        metrics = worker.metrics()
        assert _tower_versions(metrics) == {v2}
        assert worker.wait_ready()["bundle"] == v2

        # A tampered bundle is refused; the worker goes on with v2.
        tampered = _tamper(bundles.v2, bundles.root)
        point_current(bundles.root, tampered)
        _wait_metric(worker, f'{RELOADS}{{outcome="rejected"}}', 1.0)
        publish(settings, log[c:])
        expected = _expected(clicks)
        records = _wait_for(settings, redis_client, expected, worker)
        metrics = worker.metrics()
        health = worker.wait_ready()
        log_text = worker.log_path.read_text(errors="replace")

    assert metrics[f'{RELOADS}{{outcome="swapped"}}'] == 1
    assert metrics[f'{RELOADS}{{outcome="rejected"}}'] == 1  # refused once, not retried
    assert _tower_versions(metrics) == {v2}
    assert health["bundle"] == v2
    rejected = [line for line in log_text.splitlines() if "bundle reload rejected" in line]
    assert len(rejected) == 1, rejected
    assert "[ERROR]" in rejected[0] and f"path={tampered.resolve()} " in rejected[0]
    assert "user_tower.onnx sha256" in rejected[0]  # the reason: the hash check failed
    assert sorted(records) == sorted(expected)
    # Every user's events are each applied once, whatever bundle was live.
    assert sum(r.seq for r in records.values()) == n
    # Users with clicks after the swap carry v2 and equal v2's recompute; so do users with
    # clicks only while it happened, or v1's; the others were not recomputed and keep v1.
    users_after = {e["user_id"] for e in after + late}
    users_during = {e["user_id"] for e in during} - users_after
    users_before = set(expected) - users_after - users_during
    _assert_records(records, expected, users_after, {v2: ref2})
    _assert_records(records, expected, users_during, {v1: ref1, v2: ref2})
    _assert_records(records, expected, users_before, {v1: ref1})
    # v2 knows items that v1 does not: the swap changed the item index too.
    assert any(i not in ref1.index for u in users_after for i in expected[u][0])
