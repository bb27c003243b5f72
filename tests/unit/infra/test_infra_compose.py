"""docker-compose.yml and the Dockerfile: configured through the settings only, and consistent."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from mindstream.app.cli import build_parser
from mindstream.settings import Settings, known_env

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
# The only variables that are not mindstream settings: those of the Kafka and Redis images.
CONTAINER_OWN_ENV = {
    "kafka": {
        "CLUSTER_ID",
        "KAFKA_NODE_ID",
        "KAFKA_PROCESS_ROLES",
        "KAFKA_LISTENERS",
        "KAFKA_ADVERTISED_LISTENERS",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
        "KAFKA_INTER_BROKER_LISTENER_NAME",
        "KAFKA_CONTROLLER_LISTENER_NAMES",
        "KAFKA_CONTROLLER_QUORUM_VOTERS",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE",
    },
    "redis": set(),
}
MINDSTREAM_JOBS = {"topics", "trainer", "stream-worker", "recall"}
INTENDED_COMMANDS = {"services", "train", "evaluate", "export", "stream", "recall", "publish"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _env(service: dict[str, Any]) -> dict[str, Any]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "use the mapping form of `environment`"
    return env


def _depends(service: dict[str, Any]) -> dict[str, str]:
    return {name: spec["condition"] for name, spec in service.get("depends_on", {}).items()}


def test_the_expected_services_exist(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {"kafka", "redis"} | MINDSTREAM_JOBS


def test_mindstream_jobs_use_only_settings_variables(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in MINDSTREAM_JOBS:
        env = _env(services[name])
        unknown = set(env) - known_env()
        assert not unknown, f"{name}: {sorted(unknown)} are not settings (mindstream.settings)"
        assert all(isinstance(v, str) for v in env.values()), f"{name}: quote every value"
        settings = Settings.from_env(env)  # values parse and validate
        assert settings.kafka_bootstrap_servers == "kafka:9092"
        assert settings.redis_url == "redis://redis:6379/0"
        assert settings.kafka_profile == "standard", "compose runs real Apache Kafka"
        assert settings.bundle_path == "/bundles/current"
    recall = Settings.from_env(_env(services["recall"]))
    assert recall.recall_host == "0.0.0.0"


def test_service_containers_use_only_their_own_variables(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, allowed in CONTAINER_OWN_ENV.items():
        assert set(_env(services[name])) <= allowed, name


def test_kafka_is_apache_kafka_in_kraft_mode_reachable_as_configured(
    services: dict[str, dict[str, Any]],
) -> None:
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = _env(kafka)
    assert "controller" in env["KAFKA_PROCESS_ROLES"].split(",")
    assert not any("ZOOKEEPER" in k for k in env)
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert services["redis"]["image"].startswith("redis:")


def test_healthchecks_and_dependencies_are_consistent(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in ("kafka", "redis"):
        assert "test" in services[name]["healthcheck"], name
    for name, service in services.items():
        one_shot = service.get("restart") == "no"
        if not one_shot:
            assert "healthcheck" in service, f"{name} runs for good: give it a healthcheck"
        for dependency, condition in _depends(service).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            target = services[dependency]
            if condition == "service_healthy":
                assert "healthcheck" in target, f"{name} waits for {dependency}'s health"
            elif condition == "service_completed_successfully":
                assert target.get("restart") == "no", f"{dependency} must be a one-shot job"
            else:
                pytest.fail(f"{name} -> {dependency}: use a condition, not {condition!r}")
    # No cycles: every service can be ordered after its dependencies.
    ordered: list[str] = []
    pending = dict.fromkeys(services)
    while pending:
        ready = [n for n in pending if set(_depends(services[n])) <= set(ordered)]
        assert ready, f"dependency cycle among {sorted(pending)}"
        ordered += ready
        for n in ready:
            del pending[n]


def test_jobs_wait_for_what_they_use(services: dict[str, dict[str, Any]]) -> None:
    worker = _depends(services["stream-worker"])
    assert worker["kafka"] == worker["redis"] == "service_healthy"
    assert worker["trainer"] == worker["topics"] == "service_completed_successfully"
    recall = _depends(services["recall"])
    assert recall["redis"] == "service_healthy"
    assert recall["trainer"] == "service_completed_successfully"


def test_healthchecks_probe_the_configured_ports(services: dict[str, dict[str, Any]]) -> None:
    recall, worker = services["recall"], services["stream-worker"]
    recall_port = _env(recall)["MINDSTREAM_RECALL_PORT"]
    assert f"127.0.0.1:{recall_port}/healthz" in " ".join(recall["healthcheck"]["test"])
    worker_port = _env(worker)["MINDSTREAM_WORKER_WEB_PORT"]
    assert f"127.0.0.1:{worker_port}/health" in " ".join(worker["healthcheck"]["test"])


def test_volumes_are_declared_and_bundles_shared(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    used: set[str] = set()
    for service in compose["services"].values():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if not source.startswith((".", "/")):
                used.add(source)
    assert used == declared
    trainer_mounts = compose["services"]["trainer"]["volumes"]
    assert "bundles:/bundles" in trainer_mounts
    for reader in ("stream-worker", "recall"):
        assert "bundles:/bundles:ro" in compose["services"][reader]["volumes"]


def _mindstream_argv(command: list[str]) -> list[str] | None:
    if command[:1] == ["mindstream"]:
        return command[1:]
    if command[:2] == ["sh", "-c"]:
        words = shlex.split(command[2].split("exec ")[-1])
        if words[:1] == ["mindstream"]:
            return words[1:]
    return None


def test_jobs_run_mindstream_subcommands(services: dict[str, dict[str, Any]]) -> None:
    parser = build_parser()
    registered = {
        command
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for command in action.choices
    }
    for name in MINDSTREAM_JOBS:
        argv = _mindstream_argv(services[name]["command"])
        assert argv, f"{name} must run the mindstream command"
        assert argv[0] in INTENDED_COMMANDS, name
        assert argv[0] in registered, name
        parser.parse_args(argv)


def _stages(dockerfile: str) -> dict[str, str]:
    parts = re.split(r"^FROM\s+", dockerfile, flags=re.MULTILINE)[1:]
    stages = {}
    for part in parts:
        header = part.splitlines()[0]
        match = re.search(r"\sAS\s+(\S+)", header, flags=re.IGNORECASE)
        assert match, f"name every stage: FROM {header}"
        stages[match.group(1)] = part
    return stages


def test_dockerfile_targets_and_torch_only_in_the_trainer(
    services: dict[str, dict[str, Any]],
) -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", text, flags=re.MULTILINE)
    stages = _stages(text)
    for name, service in services.items():
        if "build" in service:
            assert service["build"]["target"] in stages, name
    for name, body in stages.items():
        mentions_torch = "torch" in body.replace("MINDSTREAM", "")
        assert mentions_torch == (name == "trainer"), name
    assert "download.pytorch.org/whl/cpu" in stages["trainer"]
    assert '"torch==${TORCH_VERSION}"' in stages["trainer"]
    assert re.search(r"^ARG TORCH_VERSION=2\.13\.0$", text, flags=re.MULTILINE)
    # the base image: onnxruntime's CPU build and the RocksDB table store, never the GPU build
    assert 'extras = project["optional-dependencies"]' in stages["base"]
    assert 'extras["cpu"] + extras["rocksdb"]' in stages["base"]
    assert '"gpu"' not in stages["base"]


def test_docker_build_context_keeps_what_the_build_copies() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    copied = set(re.findall(r"^COPY (\S+)", DOCKERFILE.read_text(), flags=re.MULTILINE))
    for path in copied:
        assert path.rstrip("/") not in ignored, path
    assert {".venv", ".git", "var"} <= ignored
