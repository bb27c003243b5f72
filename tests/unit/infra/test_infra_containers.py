"""The Apache Kafka container's configuration (checked without a Docker engine)."""

from __future__ import annotations

import time

import pytest

from infra import containers


def test_docker_probe_answers_quickly_either_way() -> None:
    started = time.monotonic()
    containers.docker_engine_reachable(timeout_s=1.0)
    assert time.monotonic() - started < 5


def test_start_script_advertises_the_host_side_and_runs_the_image_entry_point() -> None:
    script = containers.apache_kafka_start_script("localhost", 32771)
    assert "KAFKA_ADVERTISED_LISTENERS=PLAINTEXT://localhost:32771,BROKER://" in script
    assert script.rstrip().endswith("exec /etc/kafka/docker/run")


def test_kraft_configuration_without_confluent_scripts(monkeypatch: pytest.MonkeyPatch) -> None:
    core = pytest.importorskip("testcontainers.core.container")

    class NoEngine:
        def __init__(self, **kwargs: object) -> None:
            pass

    monkeypatch.setattr(core, "DockerClient", NoEngine)
    kafka = containers._apache_kafka_container(containers.KAFKA_IMAGE)
    kafka.configure()
    env = kafka.env
    assert kafka.image.endswith("apache/kafka:3.9.1")
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
    assert "CONTROLLER://" in env["KAFKA_LISTENERS"]
    assert env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == "0"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert kafka.boot_command == ""
