"""A local Redis Cluster of Debian's ``redis-server``: masters and replicas on loopback ports.

Each node is a :class:`~infra.launch.ServiceDefinition` started with :func:`infra.launch.launch`
(its own free client port and a free cluster-bus port, nothing saved to disk); the cluster is
then formed with plain cluster commands: every node MEETs the first, the masters take equal
ranges of the 16384 slots, each replica REPLICATEs its master, and :func:`wait_cluster_ok`
waits until every node reports ``cluster_state:ok``, knows every other node and every replica's
link is up. ``mindstream services up --redis-cluster`` and the cluster tests use it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from infra import processes
from infra.exceptions import ServiceStartError
from infra.launch import ServiceDefinition, ServiceRecord, launch
from infra.ports import LOOPBACK, free_port
from infra.redis_server import find_redis_server, redis_answers, redis_argv, redis_env
from infra.state import CLUSTER_NODE_PREFIX

logger = logging.getLogger(__name__)

SLOTS = 16384
# How long a master may be unreachable before its replica takes over: short, so that a local
# failover (a test's SIGKILL) completes in a few seconds.
NODE_TIMEOUT_MS = 1000
_POLL_S = 0.05
# The shape of ``mindstream services up --redis-cluster``.
MASTERS = 3
REPLICAS_PER_MASTER = 1


def cluster_definitions(
    masters: int = MASTERS, replicas: int = REPLICAS_PER_MASTER
) -> tuple[ServiceDefinition, ...]:
    """The nodes of a cluster, masters first (start them all, then :func:`form_cluster`)."""
    return tuple(node_definition(n) for n in range(masters * (1 + replicas)))


def node_argv(
    binary: Path, host: str, port: int, workdir: Path, *, bus_port: int, node_timeout_ms: int
) -> list[str]:
    """Command line of a cluster node (its node file ``nodes-<port>.conf`` in ``workdir``)."""
    return [
        *redis_argv(binary, host, port, workdir),
        *("--cluster-enabled", "yes"),
        *("--cluster-config-file", f"nodes-{port}.conf"),
        *("--cluster-port", str(bus_port)),
        *("--cluster-node-timeout", str(node_timeout_ms)),
        # a replica whose master is gone takes over however stale its link was
        *("--cluster-replica-validity-factor", "0"),
    ]


def node_definition(index: int, node_timeout_ms: int = NODE_TIMEOUT_MS) -> ServiceDefinition:
    """Node ``index`` of a new cluster: a redis-server in cluster mode with its own bus port."""

    def argv(binary: Path, host: str, port: int, workdir: Path) -> list[str]:
        # A node file left by an earlier cluster on the same port would rejoin that cluster.
        (workdir / f"nodes-{port}.conf").unlink(missing_ok=True)
        return node_argv(
            binary,
            host,
            port,
            workdir,
            bus_port=free_port(host),
            node_timeout_ms=node_timeout_ms,
        )

    return ServiceDefinition(
        name=f"{CLUSTER_NODE_PREFIX}{index}",
        find_binary=find_redis_server,
        argv=argv,
        env=redis_env,
        probe=redis_answers,
    )


def restart_node(
    record: ServiceRecord, *, node_timeout_ms: int = NODE_TIMEOUT_MS, timeout_s: float = 30.0
) -> ServiceRecord:
    """Start a node that died again, on its port and bus port with its node file, as a
    supervisor would: it rejoins its cluster (a failed master comes back as a replica)."""
    workdir = record.log_path.parent.parent / record.name
    bus_port = _own_bus_port(workdir / f"nodes-{record.port}.conf")
    binary = find_redis_server()
    argv = node_argv(
        binary,
        record.host,
        record.port,
        workdir,
        bus_port=bus_port,
        node_timeout_ms=node_timeout_ms,
    )
    handle = processes.spawn(argv, record.log_path, env=redis_env(os.environ), cwd=workdir)
    again = ServiceRecord(record.name, record.host, record.port, handle, record.log_path)
    processes.wait_until_ready(
        handle,
        lambda: redis_answers(record.host, record.port),
        what=f"{record.name} on {record.host}:{record.port}",
        log_path=record.log_path,
        timeout_s=timeout_s,
    )
    return again


def _own_bus_port(node_file: Path) -> int:
    for line in node_file.read_text().splitlines():
        fields = line.split()
        if len(fields) > 2 and "myself" in fields[2]:
            return int(fields[1].split("@", 1)[1].split(",", 1)[0])
    raise ServiceStartError(f"{node_file} does not name the node itself")


def slot_ranges(masters: int) -> list[tuple[int, int]]:
    """(first, last) slot of each master: equal ranges covering all 16384 slots."""
    if masters < 1:
        raise ValueError(f"a cluster needs at least one master, got {masters}")
    bounds = [SLOTS * n // masters for n in range(masters + 1)]
    return [(bounds[n], bounds[n + 1] - 1) for n in range(masters)]


def start_cluster(
    workdir: Path,
    *,
    masters: int = 3,
    replicas: int = 1,
    host: str = LOOPBACK,
    timeout_s: float = 30.0,
    node_timeout_ms: int = NODE_TIMEOUT_MS,
    on_spawn: Callable[[ServiceRecord], None] = lambda record: None,
) -> list[ServiceRecord]:
    """Start ``masters * (1 + replicas)`` nodes and form the cluster; the masters come first.

    ``on_spawn`` sees every node as soon as its process exists (to write it down). On any
    failure the nodes started here are stopped before the error is raised.
    """
    records: list[ServiceRecord] = []
    try:
        for index in range(masters * (1 + replicas)):
            record = launch(
                node_definition(index, node_timeout_ms),
                workdir,
                host=host,
                timeout_s=timeout_s,
                on_spawn=on_spawn,
            )
            records.append(record)
        form_cluster(records, masters=masters, timeout_s=timeout_s)
    except BaseException:
        for record in records:
            processes.stop(record.process, timeout_s=5.0)
        raise
    logger.info(
        "redis cluster ready masters=%d replicas_per_master=%d nodes=%s",
        masters,
        replicas,
        ",".join(f"{r.host}:{r.port}" for r in records),
    )
    return records


def form_cluster(records: Sequence[ServiceRecord], *, masters: int, timeout_s: float) -> None:
    """Join the started nodes into one cluster: slots to the first ``masters`` nodes, each
    following node a replica of master ``n % masters``."""
    import redis

    clients = [redis.Redis(host=r.host, port=r.port, socket_timeout=5.0) for r in records]
    try:
        ids = [str(_text(c.execute_command("CLUSTER", "MYID"))) for c in clients]
        first = clients[0]
        for client, (lo, hi) in zip(clients[:masters], slot_ranges(masters), strict=True):
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)
        first_bus = _bus_port(first)
        for client in clients[1:]:
            client.execute_command("CLUSTER", "MEET", records[0].host, records[0].port, first_bus)
        _wait(
            lambda: all(len(_nodes(c)) == len(clients) for c in clients),
            "every node to know every other node",
            records,
            timeout_s,
        )
        for n, client in enumerate(clients[masters:]):
            client.execute_command("CLUSTER", "REPLICATE", ids[n % masters])
        wait_cluster_ok(records, timeout_s=timeout_s, replicas=len(records) - masters)
    finally:
        for client in clients:
            client.close()


def wait_cluster_ok(
    records: Sequence[ServiceRecord], *, timeout_s: float = 30.0, replicas: int | None = None
) -> None:
    """Wait until every live node says ``cluster_state:ok`` (and, with ``replicas``, that many
    replicas have their master link up); raise ServiceStartError otherwise."""
    import redis

    live = [r for r in records if processes.is_running(r.process)]
    clients = [redis.Redis(host=r.host, port=r.port, socket_timeout=2.0) for r in live]

    def ok() -> bool:
        try:
            if not all(_cluster_info(c).get("cluster_state") == "ok" for c in clients):
                return False
            if replicas is None:
                return True
            linked = 0
            for client in clients:
                info = client.info("replication")
                linked += info.get("role") == "slave" and info.get("master_link_status") == "up"
            return linked >= replicas
        except (redis.RedisError, OSError):
            return False

    try:
        _wait(ok, "the cluster to be ok", live, timeout_s)
    finally:
        for client in clients:
            client.close()


def _wait(
    condition: Callable[[], bool],
    what: str,
    records: Sequence[ServiceRecord],
    timeout_s: float,
) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {r.name}\n{processes.log_tail(r.log_path)}" for r in records)
            raise ServiceStartError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{logs}")
        time.sleep(_POLL_S)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _cluster_info(client: object) -> dict[str, str]:
    text = _text(client.execute_command("CLUSTER", "INFO"))  # type: ignore[attr-defined]
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def _nodes(client: object) -> list[str]:
    text = _text(client.execute_command("CLUSTER", "NODES"))  # type: ignore[attr-defined]
    return [line for line in text.splitlines() if line.strip()]


def _bus_port(client: object) -> int:
    """The cluster-bus port of the node ``client`` talks to (from its own CLUSTER NODES line:
    ``id host:port@busport flags ...``)."""
    for line in _nodes(client):
        fields = line.split()
        if "myself" in fields[2]:
            return int(fields[1].split("@", 1)[1].split(",", 1)[0])
    raise ServiceStartError("a cluster node did not list itself in CLUSTER NODES")
