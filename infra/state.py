"""The state file of the local services: what was started, where it listens, who owns it.

``<data_dir>/services/services.json`` is written atomically as soon as a process exists, so
``down`` can always stop what ``up`` started; a lock file serialises concurrent commands.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra import processes
from infra.exceptions import ServiceStateError
from infra.launch import ServiceRecord

SERVICES_DIR = "services"
STATE_FILE = "services.json"
LOCK_FILE = "services.lock"
STATE_VERSION = 1
# Which Kafka client profile each local broker needs: Tansu's quirks are handled by the
# ``local`` profile; Apache Kafka is what the ``standard`` profile is for.
BROKER_PROFILES = {"tansu": "local", "kafka": "standard"}
DEFAULT_BROKER = "tansu"
KAFKA_PROFILE = BROKER_PROFILES[DEFAULT_BROKER]
# Service names of the nodes of a local Redis Cluster (infra.redis_cluster): <prefix><index>.
CLUSTER_NODE_PREFIX = "redis-cluster-"


@dataclass(frozen=True)
class LocalServices:
    """The started services, and the process that owns them when they must not outlive it."""

    services: dict[str, ServiceRecord] = field(default_factory=dict)
    owner: processes.ProcessHandle | None = None
    broker: str = DEFAULT_BROKER  # a key of BROKER_PROFILES

    @property
    def broker_nodes(self) -> list[ServiceRecord]:
        """The broker's records: ``broker`` (Tansu) or ``kafka-1``.. (Apache Kafka nodes)."""
        return [r for n, r in self.services.items() if n == "broker" or n.startswith("kafka-")]

    @property
    def kafka_profile(self) -> str:
        return BROKER_PROFILES[self.broker]

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"{r.host}:{r.port}" for r in self.broker_nodes)

    @property
    def redis_cluster(self) -> bool:
        """Whether Redis is a local cluster (``services up --redis-cluster``)."""
        return "redis" not in self.services and f"{CLUSTER_NODE_PREFIX}0" in self.services

    @property
    def redis_url(self) -> str:
        # a cluster client finds every node from any one of them
        redis = self.services[f"{CLUSTER_NODE_PREFIX}0" if self.redis_cluster else "redis"]
        return f"redis://{redis.host}:{redis.port}/0"

    def connection_env(self) -> dict[str, str]:
        """The settings' environment variables that point a mindstream process at these."""
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "REDIS_URL": self.redis_url,
            "MINDSTREAM_KAFKA_PROFILE": self.kafka_profile,
        }
        if self.redis_cluster:
            env["MINDSTREAM_REDIS_CLUSTER"] = "true"
        return env

    def with_service(self, record: ServiceRecord) -> LocalServices:
        return LocalServices({**self.services, record.name: record}, self.owner, self.broker)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "owner": None if self.owner is None else self.owner.to_dict(),
            "broker": self.broker,
            "services": {name: record.to_dict() for name, record in self.services.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LocalServices:
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"state version {data.get('version')!r}, expected {STATE_VERSION}")
        owner = data.get("owner")
        broker = str(data.get("broker", DEFAULT_BROKER))
        if broker not in BROKER_PROFILES:
            raise ValueError(f"broker {broker!r}, expected one of {sorted(BROKER_PROFILES)}")
        return cls(
            services={n: ServiceRecord.from_dict(r) for n, r in data["services"].items()},
            owner=None if owner is None else processes.ProcessHandle.from_dict(owner),
            broker=broker,
        )


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


def write_state(data_dir: Path, state: LocalServices) -> None:
    path = services_dir(data_dir) / STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state.to_dict(), indent=2) + "\n")
    os.replace(tmp, path)


def clear_state(data_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (services_dir(data_dir) / STATE_FILE).unlink()


@contextlib.contextmanager
def locked(data_dir: Path) -> Iterator[None]:
    directory = services_dir(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
