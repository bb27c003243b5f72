"""Broker faults on a three-node Apache Kafka cluster (replication factor 3, min.insync.replicas
2) while a sustained click stream runs, with the checks of ``test_faults.py``: every Redis
record equals the batch recompute, lost 0, duplicated 0, dead letters exact.

- SIGKILL, mid-stream, of the broker leading clicks partition 0, of the one leading the window
  changelog's partition 0, and of the one leading the ``__consumer_offsets`` partition of the
  worker's group (its group coordinator); the node is started again with its data afterwards,
  as an operator would;
- a restart of the whole cluster (every node stopped, then all started again with their data).

The cluster is this module's own (``infra.services.up(broker="kafka", nodes=3)``), started when
the session's test services are the local Apache Kafka (``MINDSTREAM_TEST_SERVICES=kafka``, what
CI runs); Redis is the session's. The worker's own topics are created with replication factor 3
(``MINDSTREAM_TOPIC_REPLICATION_FACTOR``), the clicks and dead-letter topics with the brokers'.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from benchmarks.harness import WorkerProcess
from infra import processes, services
from infra.testing import KAFKA_JARS_DIR, ServiceEndpoints, Source
from mindstream.kafka_config import kafka_python_kwargs
from mindstream.settings import Settings
from mindstream.topics import ensure_topics
from tests.integration.faultcheck import FAULT_RATE, click_log, verify
from tests.integration.streamcheck import Report, SustainedStream

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NODES = 3
OFFSETS_TOPIC_PARTITIONS = 50  # the brokers' offsets.topic.num.partitions (Kafka's default)


@pytest.fixture(scope="module")
def cluster(
    service_endpoints: ServiceEndpoints, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """The data folder of this module's three-node cluster (started once, stopped at the end)."""
    if service_endpoints.source is not Source.KAFKA or service_endpoints.data_dir is None:
        pytest.skip(
            "needs the local Apache Kafka (MINDSTREAM_TEST_SERVICES=kafka): the three-node "
            "cluster is started from its jars"
        )
    data_dir = tmp_path_factory.mktemp("kafka-cluster")
    services.up(
        data_dir,
        broker="kafka",
        nodes=NODES,
        timeout_s=180,
        jars_root=service_endpoints.data_dir.parent / KAFKA_JARS_DIR,
        owner=processes.current_process(),
    )
    try:
        yield data_dir
    finally:
        services.down(data_dir, timeout_s=30)


@pytest.fixture
def cluster_settings(cluster: Path, stream_settings: Settings) -> Settings:
    state = services.read_state(cluster)
    assert state is not None
    settings = dataclasses.replace(
        stream_settings,
        kafka_bootstrap_servers=state.bootstrap_servers,
        topic_replication_factor=NODES,
    )
    ensure_topics(
        settings,
        {
            settings.clicks_topic: settings.topic_partitions,
            settings.dlq_topic: settings.topic_partitions,
        },
        timeout_s=30,
    )
    return settings


def partition_leader(settings: Settings, topic: str, partition: int) -> int:
    """The node id leading ``topic[partition]`` (kafka-python's metadata)."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(**kafka_python_kwargs(settings, client_id="faults-admin"))
    try:
        (described,) = admin.describe_topics([topic])
    finally:
        admin.close()
    for entry in described["partitions"]:
        index = entry.get("partition", entry.get("partition_index"))
        if index == partition:
            return int(entry.get("leader", entry.get("leader_id")))
    raise AssertionError(f"{topic}[{partition}] not in {described}")


def offsets_partition(group_id: str) -> int:
    """The ``__consumer_offsets`` partition of a group: Kafka's ``abs(groupId.hashCode()) %
    partitions``, with Java's String hash and ``Utils.abs`` (the sign bit masked)."""
    h = 0
    data = group_id.encode("utf-16-be")  # Java hashes UTF-16 code units
    for i in range(0, len(data), 2):
        h = (31 * h + int.from_bytes(data[i : i + 2], "big")) & 0xFFFFFFFF
    return (h & 0x7FFFFFFF) % OFFSETS_TOPIC_PARTITIONS


def target_partition(settings: Settings, target: str) -> tuple[str, int]:
    if target == "clicks":
        return settings.clicks_topic, 0
    if target == "changelog":
        return f"{settings.app_id}-windows-changelog", 0
    return "__consumer_offsets", offsets_partition(settings.app_id)


def _events_in(worker: WorkerProcess) -> float:
    return sum(v for k, v in worker.metrics().items() if "events_in_total" in k)


def _wait_mid_stream(worker: WorkerProcess, events: float) -> None:
    deadline = time.monotonic() + 90
    while _events_in(worker) < events:
        assert time.monotonic() < deadline and worker.running, worker.log_tail()
        time.sleep(0.1)


@pytest.mark.parametrize("target", ["clicks", "changelog", "consumer-offsets"])
def test_sigkill_of_a_partition_leader(
    target: str,
    cluster: Path,
    cluster_settings: Settings,
    redis_client: redis.Redis,
    bundle_dir: Path,
    tmp_path: Path,
    unique_name: Callable[[str], str],
    report: Report,
) -> None:
    settings = cluster_settings
    log = click_log(FAULT_RATE * 15, seed=8)
    with WorkerProcess(settings, tmp_path / "worker.log") as worker:
        worker.start()
        worker.wait_ready(timeout_s=120)
        stream = SustainedStream(settings, log.records, FAULT_RATE).start()
        _wait_mid_stream(worker, FAULT_RATE * 2)
        topic, partition = target_partition(settings, target)
        leader = f"kafka-{partition_leader(settings, topic, partition)}"
        killed_at = time.monotonic()
        outcome = services.stop_nodes(cluster, [leader], kill=True)
        assert outcome == {leader: processes.StopOutcome.KILLED}
        sent_at_kill = stream.sent
        # The stream goes on on the two others (min.insync.replicas 2); then the node returns.
        _wait_mid_stream(worker, _events_in(worker) + FAULT_RATE * 2)
        assert worker.running, worker.log_tail()
        services.restart_nodes(cluster, [leader], timeout_s=180)
        back_s = time.monotonic() - killed_at
        positions = stream.join()
        figures: dict[str, Any] = {
            "brokers": NODES,
            "sigkill_of_leader_of": f"{topic}[{partition}]",
            "node": leader,
            "records_sent_before_kill": sent_at_kill,
            "leader_back_after_s": round(back_s, 1),
            "worker_starts": worker.starts,
        }
        verify(
            f"cluster_leader_sigkill_{target}",
            settings,
            redis_client,
            log,
            positions,
            bundle_dir,
            unique_name,
            worker,
            figures,
            report,
        )
        assert worker.running and worker.starts == 1, worker.log_tail()


def test_restart_of_the_whole_cluster(
    cluster: Path,
    cluster_settings: Settings,
    redis_client: redis.Redis,
    bundle_dir: Path,
    tmp_path: Path,
    unique_name: Callable[[str], str],
    report: Report,
) -> None:
    settings = cluster_settings
    log = click_log(FAULT_RATE * 15, seed=9)
    state = services.read_state(cluster)
    assert state is not None
    nodes = [r.name for r in state.broker_nodes]
    with WorkerProcess(settings, tmp_path / "worker.log") as worker:
        worker.start()
        worker.wait_ready(timeout_s=120)
        stream = SustainedStream(settings, log.records, FAULT_RATE).start()
        _wait_mid_stream(worker, FAULT_RATE * 2)
        stopped_at = time.monotonic()
        outcomes = services.stop_nodes(cluster, nodes, timeout_s=60)
        assert set(outcomes) == set(nodes), outcomes
        sent_at_stop = stream.sent
        assert worker.running, worker.log_tail()
        services.restart_nodes(cluster, nodes, timeout_s=180)
        down_s = time.monotonic() - stopped_at
        positions = stream.join()
        figures: dict[str, Any] = {
            "brokers": NODES,
            "cluster_restarts": 1,
            "stop_outcomes": sorted(o.value for o in outcomes.values()),
            "records_sent_before_stop": sent_at_stop,
            "cluster_down_s": round(down_s, 1),
            "worker_starts": worker.starts,
        }
        verify(
            "cluster_restart",
            settings,
            redis_client,
            log,
            positions,
            bundle_dir,
            unique_name,
            worker,
            figures,
            report,
        )
        assert worker.running and worker.starts == 1, worker.log_tail()
