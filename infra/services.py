"""The local services as a unit: ``up``, ``down`` and ``status`` of the broker and Redis.

The broker is Tansu (``broker="tansu"``, the default) or Apache Kafka (``broker="kafka"``, one
node or three). What runs is recorded in the state file (``infra.state``); ``up`` refuses to
start a second set while one runs, and restarts a set of which a member died. Apache Kafka nodes
can also be stopped and started again with their data (:func:`stop_nodes`,
:func:`restart_nodes`), which the fault tests use.
"""

from __future__ import annotations

import logging
import shlex
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from infra import kafka_broker, processes
from infra.broker import TANSU
from infra.exceptions import ServiceStateError
from infra.launch import ServiceDefinition, ServiceRecord, launch
from infra.ports import LOOPBACK
from infra.redis_server import REDIS
from infra.state import (
    BROKER_PROFILES,
    CLUSTER_NODE_PREFIX,
    DEFAULT_BROKER,
    KAFKA_PROFILE,
    SERVICES_DIR,
    STATE_FILE,
    LocalServices,
    clear_state,
    locked,
    read_state,
    services_dir,
    write_state,
)

__all__ = [
    "DEFINITIONS",
    "KAFKA_PROFILE",
    "LocalServices",
    "UpResult",
    "down",
    "read_state",
    "reap_orphans",
    "restart_nodes",
    "running",
    "services_dir",
    "shell_exports",
    "stop_nodes",
    "up",
]

logger = logging.getLogger(__name__)

DEFINITIONS: tuple[ServiceDefinition, ...] = (TANSU, REDIS)
# Where the Apache Kafka jars are kept under the data folder (fetched once, then reused).
KAFKA_JARS_DIR = "kafka-jars"


@dataclass(frozen=True)
class UpResult:
    services: LocalServices
    started: bool  # False when they were already running
    # Seconds from spawning to answering, per started service ("kafka" for all its nodes).
    startup_s: dict[str, float] = field(default_factory=dict)


def expected_services(
    broker: str, nodes: int, redis_definitions: tuple[ServiceDefinition, ...] = DEFINITIONS[1:]
) -> set[str]:
    """The names of the services ``up`` starts for this broker and this Redis."""
    if broker == "kafka":
        brokers = {f"{kafka_broker.NAME_PREFIX}{i}" for i in range(1, nodes + 1)}
    else:
        brokers = {TANSU.name}
    return brokers | {d.name for d in redis_definitions}


def shell_exports(env: Mapping[str, str]) -> str:
    """``export NAME=value`` lines, quoted for POSIX shells, for ``eval "$(...)"``."""
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in env.items())


def running(state: LocalServices) -> dict[str, bool]:
    """Which of the recorded services are alive."""
    return {name: processes.is_running(r.process) for name, r in state.services.items()}


def _stop_all(state: LocalServices, timeout_s: float) -> dict[str, processes.StopOutcome]:
    # All at once: the nodes of a Kafka cluster stopped one by one would each wait for the
    # others during their controlled shutdown; the services do not depend on each other.
    names = list(state.services)
    stopped = processes.stop_many([state.services[n].process for n in names], timeout_s)
    outcomes = dict(zip(names, stopped, strict=True))
    for name, outcome in outcomes.items():
        pid = state.services[name].process.pid
        logger.info("stopped service=%s pid=%d outcome=%s", name, pid, outcome.value)
    return outcomes


def up(
    data_dir: Path,
    *,
    host: str = LOOPBACK,
    timeout_s: float = 30.0,
    owner: processes.ProcessHandle | None = None,
    broker: str = DEFAULT_BROKER,
    nodes: int = 1,
    jars_root: Path | None = None,
    redis_cluster: bool = False,
) -> UpResult:
    """Start the broker and Redis unless they already run; return where they listen.

    ``broker`` is ``tansu`` or ``kafka``; ``nodes`` (1 or 3) applies to Apache Kafka, whose jars
    are kept in ``jars_root`` (default ``<data_dir>/kafka-jars``). ``redis_cluster``: a local
    Redis Cluster (3 masters, 3 replicas; ``infra.redis_cluster``) instead of one redis-server.
    With ``owner`` set (test sessions), :func:`reap_orphans` may stop them once that process is
    gone. Services recorded but partly dead are stopped and started afresh.
    """
    if broker not in BROKER_PROFILES:
        raise ServiceStateError(f"broker {broker!r}: expected one of {sorted(BROKER_PROFILES)}")
    if broker == "tansu" and nodes != 1:
        raise ServiceStateError("the local Tansu broker runs as one node; use --broker kafka")
    redis_definitions = tuple(d for d in DEFINITIONS if d is not TANSU)
    if redis_cluster:
        from infra.redis_cluster import cluster_definitions

        redis_definitions = tuple(cluster_definitions())
    wanted = expected_services(broker, nodes, redis_definitions)
    with locked(data_dir):
        state = read_state(data_dir)
        if state is not None:
            alive = running(state)
            if alive and all(alive.values()):
                if set(alive) == wanted:
                    return UpResult(state, started=False)
                raise ServiceStateError(
                    f"local services already run as another set ({', '.join(alive)}); "
                    f"stop them first: mindstream services down"
                )
            logger.warning("recorded services are not all running (%s); restarting them", alive)
            _stop_all(state, timeout_s=10.0)
            clear_state(data_dir)
        definitions = [TANSU, *redis_definitions] if broker == "tansu" else [*redis_definitions]
        for definition in definitions:
            definition.find_binary()  # refuse before starting anything when one is missing
        workdir = services_dir(data_dir)
        current = LocalServices(owner=owner, broker=broker)
        startup_s: dict[str, float] = {}

        def remember(record: ServiceRecord) -> None:
            nonlocal current
            current = current.with_service(record)
            write_state(data_dir, current)

        try:
            if broker == "kafka":
                began = time.monotonic()
                kafka_broker.launch_cluster(
                    workdir,
                    nodes=nodes,
                    host=host,
                    timeout_s=timeout_s,
                    jars_root=jars_root or Path(data_dir).resolve() / KAFKA_JARS_DIR,
                    on_spawn=remember,
                )
                startup_s["kafka"] = time.monotonic() - began
            for definition in definitions:
                began = time.monotonic()
                launch(definition, workdir, host=host, timeout_s=timeout_s, on_spawn=remember)
                startup_s[definition.name] = time.monotonic() - began
            if redis_cluster:
                from infra.redis_cluster import MASTERS, form_cluster

                cluster_nodes = [
                    r for n, r in current.services.items() if n.startswith(CLUSTER_NODE_PREFIX)
                ]
                form_cluster(cluster_nodes, masters=MASTERS, timeout_s=timeout_s)
        except BaseException:
            _stop_all(current, timeout_s=5.0)
            clear_state(data_dir)
            raise
        return UpResult(current, started=True, startup_s=startup_s)


def stop_nodes(
    data_dir: Path, names: list[str], *, kill: bool = False, timeout_s: float = 30.0
) -> dict[str, processes.StopOutcome]:
    """Stop some Apache Kafka nodes (SIGTERM, or SIGKILL with ``kill``), keeping their data and
    their records, so :func:`restart_nodes` can start them again."""
    with locked(data_dir):
        state = _kafka_state(data_dir, names)
        handles = [state.services[n].process for n in names]
        if kill:
            return {n: processes.kill(h) for n, h in zip(names, handles, strict=True)}
        return dict(zip(names, processes.stop_many(handles, timeout_s), strict=True))


def restart_nodes(data_dir: Path, names: list[str], *, timeout_s: float = 90.0) -> LocalServices:
    """Start stopped Apache Kafka nodes again with their data, on their own ports."""
    with locked(data_dir):
        state = _kafka_state(data_dir, names)
        restarted = kafka_broker.restart_nodes(
            [state.services[n] for n in names],
            services_dir(data_dir),
            expected_brokers=len(state.broker_nodes),
            timeout_s=timeout_s,
        )
        for record in restarted:
            state = state.with_service(record)
        write_state(data_dir, state)
        return state


def _kafka_state(data_dir: Path, names: list[str]) -> LocalServices:
    state = read_state(data_dir)
    if state is None or state.broker != "kafka":
        raise ServiceStateError(f"no local Apache Kafka recorded in {services_dir(data_dir)}")
    unknown = [n for n in names if n not in state.services or not kafka_broker.is_kafka_node(n)]
    if unknown:
        raise ServiceStateError(f"no such Apache Kafka node(s): {unknown}")
    return state


def down(data_dir: Path, *, timeout_s: float = 10.0) -> dict[str, processes.StopOutcome]:
    """Stop every recorded service and forget them; {} when none was recorded."""
    with locked(data_dir):
        state = read_state(data_dir)
        if state is None:
            return {}
        outcomes = _stop_all(state, timeout_s)
        clear_state(data_dir)
        return outcomes


def reap_orphans(root: Path, *, timeout_s: float = 5.0) -> list[Path]:
    """Stop services under ``root/*/`` whose owner process has died; return their data dirs.

    Test sessions start their services in ``root/<session>/`` with themselves as owner; a
    session killed before its teardown leaves them running, and the next session stops them.
    """
    reaped = []
    for state_file in sorted(Path(root).glob(f"*/{SERVICES_DIR}/{STATE_FILE}")):
        data_dir = state_file.parent.parent
        try:
            state = read_state(data_dir)
        except ServiceStateError as exc:
            logger.warning("skipping unreadable state file=%s error=%s", state_file, exc)
            continue
        if state is None or state.owner is None or processes.is_running(state.owner):
            continue
        down(data_dir, timeout_s=timeout_s)
        reaped.append(data_dir)
    return reaped
