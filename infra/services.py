"""The local services as a unit: ``up``, ``down`` and ``status`` of the broker and Redis.

What runs is recorded in the state file (``infra.state``); ``up`` refuses to start a second set
while one runs, and restarts a set of which a member died.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from infra import processes
from infra.broker import TANSU
from infra.exceptions import ServiceStateError
from infra.launch import ServiceDefinition, ServiceRecord, launch
from infra.ports import LOOPBACK
from infra.redis_server import REDIS
from infra.state import (
    CLUSTER_NODE_PREFIX,
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
    "running",
    "services_dir",
    "shell_exports",
    "up",
]

logger = logging.getLogger(__name__)

DEFINITIONS: tuple[ServiceDefinition, ...] = (TANSU, REDIS)


@dataclass(frozen=True)
class UpResult:
    services: LocalServices
    started: bool  # False when they were already running


def shell_exports(env: Mapping[str, str]) -> str:
    """``export NAME=value`` lines, quoted for POSIX shells, for ``eval "$(...)"``."""
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in env.items())


def running(state: LocalServices) -> dict[str, bool]:
    """Which of the recorded services are alive."""
    return {name: processes.is_running(r.process) for name, r in state.services.items()}


def _stop_all(state: LocalServices, timeout_s: float) -> dict[str, processes.StopOutcome]:
    # Reverse start order: a service started later may depend on one started earlier.
    outcomes = {}
    for name, record in reversed(list(state.services.items())):
        outcomes[name] = processes.stop(record.process, timeout_s)
        logger.info(
            "stopped service=%s pid=%d outcome=%s", name, record.process.pid, outcomes[name].value
        )
    return outcomes


def up(
    data_dir: Path,
    *,
    host: str = LOOPBACK,
    timeout_s: float = 30.0,
    owner: processes.ProcessHandle | None = None,
    redis_cluster: bool = False,
) -> UpResult:
    """Start the broker and Redis unless they already run; return where they listen.

    ``redis_cluster``: a local Redis Cluster (3 masters, 3 replicas; ``infra.redis_cluster``)
    instead of one redis-server. With ``owner`` set (test sessions), :func:`reap_orphans` may
    stop them once that process is gone. Services recorded but partly dead, or of the other
    Redis kind, are stopped and started afresh.
    """
    definitions = DEFINITIONS
    if redis_cluster:
        from infra.redis_cluster import cluster_definitions

        definitions = (*(d for d in DEFINITIONS if d is not REDIS), *cluster_definitions())
    with locked(data_dir):
        state = read_state(data_dir)
        if state is not None:
            alive = running(state)
            if alive and all(alive.values()) and set(alive) == {d.name for d in definitions}:
                return UpResult(state, started=False)
            logger.warning("recorded services are not all running (%s); restarting them", alive)
            _stop_all(state, timeout_s=10.0)
            clear_state(data_dir)
        for definition in definitions:
            definition.find_binary()  # refuse before starting anything when one is missing
        workdir = services_dir(data_dir)
        state = LocalServices(owner=owner)
        try:
            for definition in definitions:

                def remember(record: ServiceRecord, before: LocalServices = state) -> None:
                    write_state(data_dir, before.with_service(record))

                record = launch(
                    definition, workdir, host=host, timeout_s=timeout_s, on_spawn=remember
                )
                state = state.with_service(record)
                write_state(data_dir, state)
            if redis_cluster:
                from infra.redis_cluster import MASTERS, form_cluster

                nodes = [r for n, r in state.services.items() if n.startswith(CLUSTER_NODE_PREFIX)]
                form_cluster(nodes, masters=MASTERS, timeout_s=timeout_s)
        except BaseException:
            _stop_all(state, timeout_s=5.0)
            clear_state(data_dir)
            raise
        return UpResult(state, started=True)


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
