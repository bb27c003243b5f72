"""Fixtures of the stream worker's integration tests (test_stream_*.py, test_faults.py): a small
bundle, worker settings on the test's own topics, group and Redis prefix, a redis-server of
the test's own that it can stop and start, and a Redis Cluster of the test's own (3 masters,
3 replicas; see tests/conftest.py for the shared services themselves).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from infra import processes
from infra.launch import ServiceRecord
from infra.ports import free_port
from infra.redis_cluster import start_cluster
from infra.redis_server import find_redis_server, redis_argv
from mindstream.settings import Settings
from mindstream.topics import delete_topics
from stream.rekey import rekey_topic_name
from tests.integration.streamcheck import HORIZON_S, MAX_LEN, Report, export_small_bundle


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bundles")
    export_small_bundle(root)
    return root / "current"


@pytest.fixture
def stream_settings(
    integration_settings: Settings, bundle_dir: Path, tmp_path: Path
) -> Iterator[Settings]:
    settings = dataclasses.replace(
        integration_settings,
        bundle_path=str(bundle_dir),
        worker_web_port=free_port(),
        window_max_len=MAX_LEN,
        window_horizon_s=HORIZON_S,
        batch_size=100,
        batch_deadline_ms=20,
        onnx_threads=1,
        stream_watch_interval_s=0.5,
        stream_shutdown_grace_s=2.0,
        # The shortest session Apache Kafka allows (group.min.session.timeout.ms): a SIGKILLed
        # worker's partitions go to its successor after 6 s, not the standard profile's 30 s.
        kafka_session_timeout_ms=6_000,
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


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Callable[..., object]]:
    """A redis-server of this test's own, which the test can stop and start again."""
    port = free_port()
    procs: list[subprocess.Popen[bytes]] = []

    def control(action: str) -> object:
        if action == "start":
            proc = subprocess.Popen(
                redis_argv(find_redis_server(), "127.0.0.1", port, tmp_path),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            procs.append(proc)
            client = redis.Redis(port=port)
            for _ in range(100):
                try:
                    client.ping()
                    return client
                except redis.ConnectionError:
                    time.sleep(0.05)
            raise RuntimeError("own redis did not start")
        if action == "kill":
            procs[-1].kill()
            procs[-1].wait()
            return None
        return f"redis://127.0.0.1:{port}/0"

    yield control
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[list[ServiceRecord]]:
    """A Redis Cluster of this test's own: 3 masters then 3 replicas (node i+3 replicates
    node i), formed and ok; every node stopped by its PID afterwards."""
    started: list[ServiceRecord] = []
    nodes = start_cluster(tmp_path / "redis-cluster", on_spawn=started.append)
    try:
        yield nodes
    finally:
        for record in started:
            processes.stop(record.process, timeout_s=5.0)


ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Report:
    """``report(name, figures)``: write ``var/reliability/<name>.json`` and print the figures
    past pytest's output capture (they are the point of the run)."""

    def write(name: str, figures: dict[str, Any]) -> None:
        out = ROOT / "var" / "reliability"
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{name}.json").write_text(json.dumps(figures, indent=2) + "\n")
        line = " ".join(f"{k}={v}" for k, v in figures.items() if k != "test")
        capture = request.config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled():
            print(f"\nRELIABILITY {name}: {line}", flush=True)

    return write
