"""Bundle hot reload in a running stream worker, against the real broker and Redis.

The worker starts on bundle v1 through the ``current`` link and watches the link; the test
repoints the link at v2 (other weights, a superset of the items) while clicks flow, and later at
a tampered copy of v2. Every 7th click is unkeyed and goes through the re-key topic. Records
are compared with a batch recompute (tests/integration/streamcheck.py): the window by definition
and the vectors from the ONNX graph of the bundle the record names.
"""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time
from pathlib import Path

import pytest
import redis

from benchmarks.harness import WorkerProcess, publish
from mindstream.settings import Settings
from model_export.bundle import load_bundle, point_current
from model_export.data.synthetic import SyntheticConfig, click_events, generate
from stream.record import InterestRecord
from tests.integration.streamcheck import (
    BUNDLE_SEED,
    N_BUNDLE_ITEMS,
    UNKEYED_EVERY,
    assert_equal_to_batch_recompute,
    click_records,
    expected_windows,
    export_small_bundle,
    wait_for_records,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_ITEMS = 300  # items of the click log: v1 does not know i261..i300; v2 knows them all
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
    root = tmp_path_factory.mktemp("bundles")
    # v2 is exported next to v1 but not made current: the test switches the link itself.
    v2 = export_small_bundle(root, n_items=N_ITEMS, seed=BUNDLE_SEED + 1, make_current=False)
    v1 = export_small_bundle(root, n_items=N_BUNDLE_ITEMS)
    assert (root / "current").resolve() == v1.resolve()
    return Bundles(root, v1, v2)


@pytest.fixture(scope="module")
def bundle_dir(bundles: Bundles) -> Path:
    """The bundle ``stream_settings`` names (conftest's overridden): the link the test repoints."""
    return bundles.root / "current"


@pytest.fixture(scope="module")
def clicks() -> list[dict]:
    data, _ = generate(
        SyntheticConfig(n_users=80, n_items=N_ITEMS, n_clusters=10, min_len=8, max_len=40, seed=13)
    )
    return list(click_events(data))


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


def _assert_users(
    bundle_dirs: list[Path],
    records: dict[str, InterestRecord],
    expected: Expected,
    users: set[str],
) -> None:
    """The batch recompute for ``users`` only, each under the bundle its record names."""
    assert_equal_to_batch_recompute(
        bundle_dirs, {u: records[u] for u in users}, {u: expected[u] for u in users}
    )


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
    stream_settings: Settings,
    redis_client: redis.Redis,
    clicks: list[dict],
    bundles: Bundles,
    tmp_path: Path,
) -> None:
    settings = dataclasses.replace(stream_settings, batch_size=50, stream_watch_interval_s=0.3)
    v1, v2 = load_bundle(bundles.v1), load_bundle(bundles.v2)
    assert v1.version != v2.version
    n = len(clicks)
    a, b, c = n * 2 // 5, n * 3 // 5, n * 17 // 20
    before, during, after, late = clicks[:a], clicks[a:b], clicks[b:c], clicks[c:]
    log = click_records(clicks)
    with WorkerProcess(settings, tmp_path / "worker.log") as worker:
        worker.start()
        assert worker.wait_ready()["bundle"] == v1.version
        publish(settings, log[:a])
        records = wait_for_records(settings, redis_client, expected_windows(before), worker=worker)
        assert_equal_to_batch_recompute(bundles.v1, records, expected_windows(before))

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
        wait_for_records(settings, redis_client, expected_windows(clicks[:c]), worker=worker)
        metrics = worker.metrics()
        assert _tower_versions(metrics) == {v2.version}
        assert worker.wait_ready()["bundle"] == v2.version

        # A tampered bundle is refused; the worker goes on with v2.
        tampered = _tamper(bundles.v2, bundles.root)
        point_current(bundles.root, tampered)
        _wait_metric(worker, f'{RELOADS}{{outcome="rejected"}}', 1.0)
        publish(settings, log[c:])
        expected = expected_windows(clicks)
        records = wait_for_records(settings, redis_client, expected, worker=worker)
        metrics = worker.metrics()
        health = worker.wait_ready()
        log_text = worker.log_path.read_text(errors="replace")

    assert metrics[f'{RELOADS}{{outcome="swapped"}}'] == 1
    assert metrics[f'{RELOADS}{{outcome="rejected"}}'] == 1  # refused once, not retried
    assert _tower_versions(metrics) == {v2.version}
    assert health["bundle"] == v2.version
    rejected = [line for line in log_text.splitlines() if "bundle reload rejected" in line]
    assert len(rejected) == 1, rejected
    assert "[ERROR]" in rejected[0] and f"path={tampered.resolve()} " in rejected[0]
    assert "user_tower.onnx sha256" in rejected[0]  # the reason: the hash check failed
    assert sorted(records) == sorted(expected)
    # Every user's events are each applied once, whatever bundle was live.
    assert sum(r.seq for r in records.values()) == n
    rekeyed = sum(v for k, v in metrics.items() if k.startswith("mindstream_stream_rekeyed_total"))
    assert rekeyed == len(range(0, n, UNKEYED_EVERY))  # the unkeyed clicks went through re-keying
    # Users with clicks after the swap carry v2 and equal v2's recompute; so do users with
    # clicks only while it happened, or v1's; the others were not recomputed and keep v1.
    users_after = {e["user_id"] for e in after + late}
    users_during = {e["user_id"] for e in during} - users_after
    users_before = set(expected) - users_after - users_during
    _assert_users([bundles.v2], records, expected, users_after)
    _assert_users([bundles.v1, bundles.v2], records, expected, users_during)
    _assert_users([bundles.v1], records, expected, users_before)
    # v2 knows items that v1 does not: the swap changed the item index too.
    known_to_v1 = set(v1.item_ids)
    assert any(i not in known_to_v1 for u in users_after for i in expected[u][0])
