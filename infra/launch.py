"""Launch one local service: pick a free port, spawn the binary, wait until it answers.

What differs between services (binary, flags, readiness probe) is a
:class:`ServiceDefinition`; ``infra.broker`` and ``infra.redis_server`` each define one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra import processes
from infra.exceptions import ServiceExitedError
from infra.ports import free_port

logger = logging.getLogger(__name__)

# A port found free can be taken by someone else before the service binds it; the service then
# exits at once and is started again on another port.
PORT_ATTEMPTS = 3


@dataclass(frozen=True)
class ServiceDefinition:
    """How to find, start and probe one kind of service."""

    name: str
    find_binary: Callable[[], Path]
    # (binary, host, port, working directory) -> argv
    argv: Callable[[Path, str, int, Path], list[str]]
    # caller's environment -> the service's environment
    env: Callable[[Mapping[str, str]], dict[str, str]]
    # (host, port) -> does it answer a real protocol request?
    probe: Callable[[str, int], bool]


@dataclass(frozen=True)
class ServiceRecord:
    """A started service: where it listens, its process and its log."""

    name: str
    host: str
    port: int
    process: processes.ProcessHandle
    log_path: Path

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "host": self.host,
            "port": self.port,
            "process": self.process.to_dict(),
            "log_path": str(self.log_path),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServiceRecord:
        return cls(
            name=str(data["name"]),
            host=str(data["host"]),
            port=int(data["port"]),
            process=processes.ProcessHandle.from_dict(data["process"]),
            log_path=Path(data["log_path"]),
        )


def spawn_service(
    definition: ServiceDefinition, binary: Path, workdir: Path, host: str
) -> ServiceRecord:
    """Start the service on a free port without waiting for it."""
    port = free_port(host)
    log_path = workdir / "logs" / f"{definition.name}.log"
    service_dir = workdir / definition.name
    service_dir.mkdir(parents=True, exist_ok=True)
    handle = processes.spawn(
        definition.argv(binary, host, port, service_dir),
        log_path,
        env=definition.env(os.environ),
        cwd=service_dir,
    )
    logger.info("started service=%s pid=%d address=%s:%d", definition.name, handle.pid, host, port)
    return ServiceRecord(definition.name, host, port, handle, log_path)


def await_service(definition: ServiceDefinition, record: ServiceRecord, timeout_s: float) -> None:
    """Block until the service answers its probe; raise ServiceStartError otherwise."""
    processes.wait_until_ready(
        record.process,
        lambda: definition.probe(record.host, record.port),
        what=f"{definition.name} on {record.host}:{record.port}",
        log_path=record.log_path,
        timeout_s=timeout_s,
    )


def launch(
    definition: ServiceDefinition,
    workdir: Path,
    *,
    host: str,
    timeout_s: float,
    on_spawn: Callable[[ServiceRecord], None] = lambda record: None,
) -> ServiceRecord:
    """Spawn the service and wait until it answers, retrying when it exits at once.

    ``on_spawn`` is called with every spawned record before waiting, so the caller can write it
    down and stop it even if this process is interrupted while waiting.
    """
    binary = definition.find_binary()
    attempt = 1
    while True:
        record = spawn_service(definition, binary, workdir, host)
        on_spawn(record)
        try:
            await_service(definition, record, timeout_s)
            return record
        except ServiceExitedError:
            if attempt >= PORT_ATTEMPTS:
                raise
            attempt += 1
            logger.warning(
                "service=%s exited while starting on port=%d; trying another port (attempt %d)",
                definition.name,
                record.port,
                attempt,
            )
        except BaseException:
            processes.stop(record.process, timeout_s=5.0)
            raise
