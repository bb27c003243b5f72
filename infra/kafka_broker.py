"""The local Apache Kafka broker: KRaft nodes as JVM processes, no Docker.

One node acting as broker and controller by default; with ``nodes=3`` three such nodes forming
one cluster (replication factor 3, ``min.insync.replicas`` 2). Each node has its own folder
under the services folder: ``server.properties``, its log directory (formatted once with a
generated cluster id) and ``command.json``, the command line that starts it again with its data.
The jars come from ``infra.kafka_jars``.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import logging
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from infra import processes
from infra.exceptions import InfraError, ServiceExitedError, ServiceStartError
from infra.kafka_jars import ensure_jars, find_java
from infra.launch import PORT_ATTEMPTS, ServiceRecord
from infra.ports import answers_request

logger = logging.getLogger(__name__)

NAME_PREFIX = "kafka-"
COMMAND_FILE = "command.json"
PROBE_TIMEOUT_MS = 2_000
FORMAT_TIMEOUT_S = 120.0
# Small heaps: the box running the tests has two cores and is shared with them. A node holding
# the tests' topics (hundreds of small partitions) stays well inside 384 MiB.
HEAP_SINGLE = "384m"
HEAP_PER_NODE_OF_THREE = "256m"
_JVM_OPTIONS = (
    "-XX:+UseSerialGC",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.out.ref = OUT
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = INFO
"""


@dataclass(frozen=True)
class KafkaNode:
    """One KRaft node: its id, its client (PLAINTEXT) port and its controller port."""

    node_id: int
    port: int
    controller_port: int

    @property
    def name(self) -> str:
        return f"{NAME_PREFIX}{self.node_id}"


def is_kafka_node(service_name: str) -> bool:
    return service_name.startswith(NAME_PREFIX)


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (as Kafka's Uuid).

    Like Kafka's ``Uuid.randomUuid``, never one starting with "-": the storage tool would read
    it as an option."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def server_properties(
    node: KafkaNode, cluster: Sequence[KafkaNode], host: str, log_dir: Path
) -> str:
    """``server.properties`` of ``node`` in a cluster of combined broker+controller nodes."""
    replicas = min(len(cluster), 3)
    min_isr = 2 if replicas >= 3 else 1
    voters = ",".join(f"{n.node_id}@{host}:{n.controller_port}" for n in cluster)
    options = {
        "process.roles": "broker,controller",
        "node.id": node.node_id,
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://{host}:{node.port},CONTROLLER://{host}:{node.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{node.port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(log_dir),
        "num.partitions": 1,
        "default.replication.factor": replicas,
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": replicas,
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": min_isr,
        "share.coordinator.state.topic.replication.factor": replicas,
        "share.coordinator.state.topic.min.isr": min_isr,
        # A local broker: no reason to wait for more members before the first rebalance.
        "group.initial.rebalance.delay.ms": 0,
        # Sized for two cores and a small heap (the cleaner's default buffer alone is 128 MiB).
        "num.network.threads": 2,
        "num.io.threads": 2,
        "num.recovery.threads.per.data.dir": 1,
        "log.cleaner.threads": 1,
        "log.cleaner.dedupe.buffer.size": 16 * 1024 * 1024,
    }
    return "".join(f"{key}={value}\n" for key, value in options.items())


def node_argv(java: Path, jars: Path, node_dir: Path, heap: str) -> list[str]:
    """The JVM command line of the node whose configuration is in ``node_dir``."""
    return [
        str(java),
        f"-Xms{heap}",
        f"-Xmx{heap}",
        *_JVM_OPTIONS,
        f"-Dlog4j2.configurationFile={node_dir / 'log4j2.properties'}",
        "-cp",
        f"{jars}/*",
        "kafka.Kafka",
        str(node_dir / "server.properties"),
    ]


def _format_argv(java: Path, jars: Path, node_dir: Path, cluster_id: str) -> list[str]:
    return [
        str(java),
        "-Xmx128m",
        "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1",  # a short-lived tool: start-up matters, not peak speed
        f"-Dlog4j2.configurationFile={node_dir / 'log4j2.properties'}",
        "-cp",
        f"{jars}/*",
        "kafka.tools.StorageTool",
        "format",
        "--cluster-id",
        cluster_id,
        "--config",
        str(node_dir / "server.properties"),
    ]


def _free_ports(host: str, count: int) -> list[int]:
    """``count`` distinct free ports (held open together, so the OS cannot repeat one)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def _format_storage(java: Path, jars: Path, node_dirs: Sequence[Path], cluster_id: str) -> None:
    """Format every node's log directory at once (one short JVM each, run in parallel)."""
    running = []
    for node_dir in node_dirs:
        shutil.rmtree(node_dir / "data", ignore_errors=True)
        running.append(
            subprocess.Popen(
                _format_argv(java, jars, node_dir, cluster_id),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    failures = []
    for node_dir, proc in zip(node_dirs, running, strict=True):
        try:
            output, _ = proc.communicate(timeout=FORMAT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        if proc.returncode != 0:
            failures.append(f"{node_dir}: exit {proc.returncode}: {output.strip()[-2000:]}")
    if failures:
        raise ServiceStartError("formatting the KRaft storage failed: " + "; ".join(failures))


def cluster_answers(host: str, port: int, expected_brokers: int) -> bool:
    """Whether the node on ``host:port`` answers a metadata request naming ``expected_brokers``
    unfenced brokers (so the whole cluster is up, not just this node)."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    def all_registered(admin: KafkaAdminClient) -> bool:
        brokers = admin.describe_cluster().get("brokers") or []
        unfenced = [b for b in brokers if not b.get("is_fenced", False)]
        return len(unfenced) >= expected_brokers

    return answers_request(
        "kafka",
        host,
        port,
        connect=lambda: KafkaAdminClient(
            bootstrap_servers=f"{host}:{port}",
            client_id="mindstream-probe",
            request_timeout_ms=PROBE_TIMEOUT_MS,
            bootstrap_timeout_ms=PROBE_TIMEOUT_MS,
        ),
        request=all_registered,
        errors=(KafkaError, OSError),
    )


def _spawn_node(node_dir: Path, log_path: Path, host: str, port: int) -> ServiceRecord:
    argv = json.loads((node_dir / COMMAND_FILE).read_text())
    handle = processes.spawn(argv, log_path, cwd=node_dir)
    name = node_dir.name
    logger.info("started service=%s pid=%d address=%s:%d", name, handle.pid, host, port)
    return ServiceRecord(name, host, port, handle, log_path)


def _await_nodes(records: Sequence[ServiceRecord], expected: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for record in records:
        processes.wait_until_ready(
            record.process,
            functools.partial(cluster_answers, record.host, record.port, expected),
            what=f"{record.name} on {record.host}:{record.port}",
            log_path=record.log_path,
            timeout_s=max(0.0, deadline - time.monotonic()),
        )


def launch_cluster(
    workdir: Path,
    *,
    nodes: int,
    host: str,
    timeout_s: float,
    jars_root: Path,
    on_spawn: Callable[[ServiceRecord], None] = lambda record: None,
) -> list[ServiceRecord]:
    """Format and start ``nodes`` KRaft nodes on free ports; return once all have registered.

    A node that exits while starting (a port taken in the meantime) makes the whole cluster
    start again on other ports, up to ``PORT_ATTEMPTS`` times.
    """
    if nodes not in (1, 3):
        raise InfraError(f"a local Apache Kafka cluster has 1 or 3 nodes, not {nodes}")
    java = find_java()
    jars = ensure_jars(jars_root)
    heap = HEAP_SINGLE if nodes == 1 else HEAP_PER_NODE_OF_THREE
    cluster_id = new_cluster_id()
    for attempt in range(1, PORT_ATTEMPTS + 1):
        ports = _free_ports(host, 2 * nodes)
        cluster = [KafkaNode(i + 1, ports[2 * i], ports[2 * i + 1]) for i in range(nodes)]
        node_dirs = []
        for node in cluster:
            node_dir = workdir / node.name
            node_dir.mkdir(parents=True, exist_ok=True)
            (node_dir / "log4j2.properties").write_text(_LOG4J2)
            (node_dir / "server.properties").write_text(
                server_properties(node, cluster, host, node_dir / "data")
            )
            (node_dir / COMMAND_FILE).write_text(
                json.dumps(node_argv(java, jars, node_dir, heap), indent=1) + "\n"
            )
            node_dirs.append(node_dir)
        _format_storage(java, jars, node_dirs, cluster_id)
        records: list[ServiceRecord] = []
        try:
            for node, node_dir in zip(cluster, node_dirs, strict=True):
                record = _spawn_node(
                    node_dir, workdir / "logs" / f"{node.name}.log", host, node.port
                )
                records.append(record)
                on_spawn(record)
            _await_nodes(records, nodes, timeout_s)
            return records
        except ServiceExitedError:
            processes.stop_many([r.process for r in records], timeout_s=10.0)
            if attempt >= PORT_ATTEMPTS:
                raise
            logger.warning(
                "a kafka node exited while starting; trying other ports (attempt %d)", attempt + 1
            )
        except BaseException:
            processes.stop_many([r.process for r in records], timeout_s=10.0)
            raise
    raise AssertionError("unreachable")  # the loop returns or raises


def restart_nodes(
    records: Sequence[ServiceRecord], workdir: Path, *, expected_brokers: int, timeout_s: float
) -> list[ServiceRecord]:
    """Start stopped nodes again, each on its own ports with its data; return their new records.

    All are spawned before waiting, so a whole cluster can be restarted (a node alone cannot
    answer for the cluster while the controller quorum is missing).
    """
    for record in records:
        if processes.is_running(record.process):
            raise InfraError(f"{record.name} (pid {record.process.pid}) still runs; stop it first")
    restarted = [_spawn_node(workdir / r.name, r.log_path, r.host, r.port) for r in records]
    try:
        _await_nodes(restarted, expected_brokers, timeout_s)
    except ServiceExitedError as exc:
        processes.stop_many([r.process for r in restarted], timeout_s=10.0)
        raise ServiceStartError(
            f"a node could not start again on its own ports (another process may have taken "
            f"one): {exc}"
        ) from exc
    return restarted
