"""The local services as a unit: ``up``, ``down`` and ``status`` around one state file.

The state file (``<data_dir>/services/services.json``) names every started service with its
port, process and log; it is written as soon as a process exists, so ``down`` can always stop
what ``up`` started, even when ``up`` was interrupted. A lock file serialises concurrent calls.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra import processes
from infra.broker import TANSU
from infra.exceptions import ServiceStateError
from infra.launch import ServiceDefinition, ServiceRecord, launch
from infra.ports import LOOPBACK
from infra.redis_server import REDIS

logger = logging.getLogger(__name__)

SERVICES_DIR = "services"
STATE_FILE = "services.json"
LOCK_FILE = "services.lock"
STATE_VERSION = 1
DEFINITIONS: tuple[ServiceDefinition, ...] = (TANSU, REDIS)
# The local broker needs the local profile of the Kafka client settings (DESIGN.md).
KAFKA_PROFILE = "local"


@dataclass(frozen=True)
class LocalServices:
    """The started services, and the process that owns them when they must not outlive it."""

    services: dict[str, ServiceRecord] = field(default_factory=dict)
    owner: processes.ProcessHandle | None = None

    @property
    def bootstrap_servers(self) -> str:
        broker = self.services["broker"]
        return f"{broker.host}:{broker.port}"

    @property
    def redis_url(self) -> str:
        redis = self.services["redis"]
        return f"redis://{redis.host}:{redis.port}/0"

    def connection_env(self) -> dict[str, str]:
        """The settings' environment variables that point a mindstream process at these."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "REDIS_URL": self.redis_url,
            "MINDSTREAM_KAFKA_PROFILE": KAFKA_PROFILE,
        }

    def with_service(self, record: ServiceRecord) -> LocalServices:
        return LocalServices({**self.services, record.name: record}, self.owner)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "owner": None if self.owner is None else self.owner.to_dict(),
            "services": {name: record.to_dict() for name, record in self.services.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LocalServices:
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"state version {data.get('version')!r}, expected {STATE_VERSION}")
        owner = data.get("owner")
        return cls(
            services={n: ServiceRecord.from_dict(r) for n, r in data["services"].items()},
            owner=None if owner is None else processes.ProcessHandle.from_dict(owner),
        )


@dataclass(frozen=True)
class UpResult:
    services: LocalServices
    started: bool  # False when they were already running


def shell_exports(env: Mapping[str, str]) -> str:
    """``export NAME=value`` lines, quoted for POSIX shells, for ``eval "$(...)"``."""
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in env.items())


def services_dir(data_dir: Path) -> Path:
    """Absolute: the services run in their own folders, so relative paths would mislead them."""
    return Path(data_dir).resolve() / SERVICES_DIR


def read_state(data_dir: Path) -> LocalServices | None:
    """The recorded services, or None when nothing is recorded."""
    path = services_dir(data_dir) / STATE_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return LocalServices.from_dict(json.loads(text))
    except (ValueError, KeyError, TypeError) as exc:
        raise ServiceStateError(
            f"cannot read the local services' state file {path}: {exc}; stop the processes it "
            f"names by hand if they still run, then delete it"
        ) from exc


def _write_state(data_dir: Path, state: LocalServices) -> None:
    path = services_dir(data_dir) / STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state.to_dict(), indent=2) + "\n")
    os.replace(tmp, path)


def _clear_state(data_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (services_dir(data_dir) / STATE_FILE).unlink()


@contextlib.contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    directory = services_dir(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def running(state: LocalServices) -> dict[str, bool]:
    """Which of the recorded services are alive."""
    return {name: processes.is_running(r.process) for name, r in state.services.items()}


def _stop_all(state: LocalServices, timeout_s: float) -> dict[str, processes.StopOutcome]:
    # Reverse start order: clients of the broker (none here yet) would go before it.
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
) -> UpResult:
    """Start the broker and Redis unless they already run; return where they listen.

    With ``owner`` set (test sessions), :func:`reap_orphans` may stop them once that process
    is gone. Services recorded but partly dead are stopped and started afresh.
    """
    with _locked(data_dir):
        state = read_state(data_dir)
        if state is not None:
            alive = running(state)
            if alive and all(alive.values()) and set(alive) == {d.name for d in DEFINITIONS}:
                return UpResult(state, started=False)
            logger.warning("recorded services are not all running (%s); restarting them", alive)
            _stop_all(state, timeout_s=10.0)
            _clear_state(data_dir)
        for definition in DEFINITIONS:
            definition.find_binary()  # refuse before starting anything when one is missing
        workdir = services_dir(data_dir)
        state = LocalServices(owner=owner)
        try:
            for definition in DEFINITIONS:

                def remember(record: ServiceRecord, before: LocalServices = state) -> None:
                    _write_state(data_dir, before.with_service(record))

                record = launch(
                    definition, workdir, host=host, timeout_s=timeout_s, on_spawn=remember
                )
                state = state.with_service(record)
                _write_state(data_dir, state)
        except BaseException:
            _stop_all(state, timeout_s=5.0)
            _clear_state(data_dir)
            raise
        return UpResult(state, started=True)


def down(data_dir: Path, *, timeout_s: float = 10.0) -> dict[str, processes.StopOutcome]:
    """Stop every recorded service and forget them; {} when none was recorded."""
    with _locked(data_dir):
        state = read_state(data_dir)
        if state is None:
            return {}
        outcomes = _stop_all(state, timeout_s)
        _clear_state(data_dir)
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
