"""The local Apache Kafka launcher's pure parts: configuration, cluster id, jars, missing tools."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from infra import kafka_broker, kafka_jars, processes, services
from infra.exceptions import BinaryNotFoundError, InfraError
from infra.launch import ServiceRecord


def _properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines())


def test_single_node_is_broker_and_controller_with_replication_one() -> None:
    node = kafka_broker.KafkaNode(1, 19092, 19093)
    props = _properties(kafka_broker.server_properties(node, [node], "127.0.0.1", Path("/d")))
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["log.dirs"] == "/d"
    for key in (
        "default.replication.factor",
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "min.insync.replicas",
        "transaction.state.log.min.isr",
    ):
        assert props[key] == "1", key


def test_three_nodes_replicate_three_times_with_two_in_sync() -> None:
    cluster = [kafka_broker.KafkaNode(i, 100 + i, 200 + i) for i in (1, 2, 3)]
    props = _properties(kafka_broker.server_properties(cluster[1], cluster, "h", Path("/d2")))
    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"] == "1@h:201,2@h:202,3@h:203"
    assert props["advertised.listeners"] == "PLAINTEXT://h:102"
    assert props["default.replication.factor"] == "3"
    assert props["offsets.topic.replication.factor"] == "3"
    assert props["min.insync.replicas"] == "2"
    assert props["transaction.state.log.min.isr"] == "2"


def test_cluster_ids_are_kafka_uuids() -> None:
    ids = {kafka_broker.new_cluster_id() for _ in range(2000)}
    assert len(ids) == 2000
    for cluster_id in ids:
        assert len(cluster_id) == 22 and "=" not in cluster_id
        assert not cluster_id.startswith("-")  # the storage tool would take it for an option
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_node_command_line_keeps_the_heap_small() -> None:
    argv = kafka_broker.node_argv(Path("/j/java"), Path("/jars"), Path("/n/kafka-1"), "384m")
    assert argv[0] == "/j/java" and "-Xmx384m" in argv and "-XX:+UseSerialGC" in argv
    assert argv[argv.index("-cp") + 1] == "/jars/*"
    assert argv[-2:] == ["kafka.Kafka", "/n/kafka-1/server.properties"]


def test_the_pom_pins_one_kafka_4_release() -> None:
    version = kafka_jars.kafka_version()
    assert version.split(".")[0] == "4"
    with pytest.raises(InfraError, match=r"kafka\.version"):
        kafka_jars.pinned_version("<project></project>")


def test_missing_java_or_maven_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(BinaryNotFoundError, match="openjdk-17"):
        kafka_jars.find_java()
    with pytest.raises(BinaryNotFoundError, match="apt-get install maven"):
        kafka_jars.find_maven()


def test_jars_already_fetched_need_no_maven(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / kafka_jars.kafka_version()
    folder.mkdir()
    (folder / f"kafka_2.13-{kafka_jars.kafka_version()}.jar").write_bytes(b"")
    (folder / kafka_jars.COMPLETE_MARKER).write_text("done\n")
    monkeypatch.setenv("PATH", "")
    assert kafka_jars.ensure_jars(tmp_path) == folder


def test_unreachable_maven_central_names_the_artifact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stand-in for mvn failing as it does offline (the real one needs the network).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    mvn = bin_dir / "mvn"
    mvn.write_text(
        "#!/bin/sh\necho '[ERROR] Failed to execute goal: Could not resolve dependencies: "
        "Could not transfer artifact from/to central: Network is unreachable'\nexit 1\n"
    )
    mvn.chmod(mvn.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(kafka_jars.JarFetchError) as caught:
        kafka_jars.ensure_jars(tmp_path / "jars")
    message = str(caught.value)
    assert f"org.apache.kafka:kafka_2.13:{kafka_jars.kafka_version()}" in message
    assert "Network is unreachable" in message
    assert not (tmp_path / "jars" / kafka_jars.kafka_version()).exists()


def _record(name: str, port: int) -> ServiceRecord:
    handle = processes.ProcessHandle(4000 + port % 100, "/usr/bin/java", 9)
    return ServiceRecord(name, "127.0.0.1", port, handle, Path(f"/tmp/{name}.log"))


def test_kafka_services_export_every_node_with_the_standard_profile(tmp_path: Path) -> None:
    state = services.LocalServices(
        {
            "kafka-1": _record("kafka-1", 19001),
            "kafka-2": _record("kafka-2", 19002),
            "kafka-3": _record("kafka-3", 19003),
            "redis": _record("redis", 16379),
        },
        broker="kafka",
    )
    assert state.connection_env() == {
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:19001,127.0.0.1:19002,127.0.0.1:19003",
        "REDIS_URL": "redis://127.0.0.1:16379/0",
        "MINDSTREAM_KAFKA_PROFILE": "standard",
    }
    services.write_state(tmp_path, state)
    assert services.read_state(tmp_path) == state
    assert services.expected_services("kafka", 3) == {"kafka-1", "kafka-2", "kafka-3", "redis"}
    assert services.expected_services("tansu", 1) == {"broker", "redis"}


def test_nodes_other_than_one_or_three_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InfraError, match="1 or 3 nodes"):
        kafka_broker.launch_cluster(
            tmp_path, nodes=2, host="127.0.0.1", timeout_s=1, jars_root=tmp_path
        )
    with pytest.raises(InfraError, match="--broker kafka"):
        services.up(tmp_path, broker="tansu", nodes=3)
