"""``mindstream services up --broker kafka --nodes 3``, ``status`` and ``down`` end to end."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra import kafka_broker, processes, services
from infra.exceptions import BinaryNotFoundError
from infra.kafka_jars import find_java
from infra.ports import accepts_connections
from infra.redis_server import find_redis_server

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
# Shared with the test services (tests/conftest.py), so the jars are fetched once per checkout.
JARS_ROOT = ROOT / "var" / "test-services" / services.KAFKA_JARS_DIR


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    try:
        find_java()
        find_redis_server()
    except BinaryNotFoundError as exc:
        if os.environ.get("CI", "").lower() == "true":
            raise
        pytest.skip(str(exc))
    path = tmp_path / "data"
    yield path
    services.down(path, timeout_s=5)  # only does something when the test failed half-way


def test_three_broker_cluster_up_status_and_down(data_dir: Path) -> None:
    up = services.up(data_dir, broker="kafka", nodes=3, timeout_s=180, jars_root=JARS_ROOT)
    state = up.services
    assert up.started and set(up.startup_s) == {"kafka", "redis"}
    nodes = state.broker_nodes
    assert [n.name for n in nodes] == ["kafka-1", "kafka-2", "kafka-3"]
    assert state.connection_env()["MINDSTREAM_KAFKA_PROFILE"] == "standard"
    # Every node sees the whole cluster.
    for node in nodes:
        assert kafka_broker.cluster_answers(node.host, node.port, expected_brokers=3)

    env = {k: v for k, v in os.environ.items() if not k.startswith("MINDSTREAM_")}
    status = subprocess.run(
        [sys.executable, "-m", "infra", "status", "--data-dir", str(data_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    assert [line.split()[:2] for line in status.stdout.splitlines()[:4]] == [
        ["kafka-1", "running"],
        ["kafka-2", "running"],
        ["kafka-3", "running"],
        ["redis", "running"],
    ]

    down = subprocess.run(
        [sys.executable, "-m", "infra", "down", "--data-dir", str(data_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert down.returncode == 0, down.stderr
    for record in state.services.values():
        assert not processes.is_running(record.process)
        assert not accepts_connections(record.host, record.port)
    assert services.read_state(data_dir) is None


def test_a_port_taken_meanwhile_moves_the_node_to_other_free_ports(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Something else listens on the port picked first (as when another process takes it
    # between the pick and the bind): the node exits at once and starts again elsewhere.
    busy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    taken = busy.getsockname()[1]
    picks: list[list[int]] = []
    real_free_ports = kafka_broker._free_ports

    def free_ports(host: str, count: int) -> list[int]:
        ports = real_free_ports(host, count)
        if not picks:
            ports[0] = taken
        picks.append(ports)
        return ports

    monkeypatch.setattr(kafka_broker, "_free_ports", free_ports)
    try:
        state = services.up(data_dir, broker="kafka", timeout_s=120, jars_root=JARS_ROOT).services
    finally:
        busy.close()
    (node,) = state.broker_nodes
    assert len(picks) == 2 and node.port == picks[1][0] != taken
    assert kafka_broker.cluster_answers(node.host, node.port, expected_brokers=1)
    services.down(data_dir, timeout_s=30)
    assert not processes.is_running(node.process)
