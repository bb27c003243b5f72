"""A throw-away local Redis: ``redis-server`` from the system packages, nothing saved to disk."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from pathlib import Path

from infra.exceptions import BinaryNotFoundError
from infra.launch import ServiceDefinition
from infra.ports import answers_request

logger = logging.getLogger(__name__)

INSTALL_HINT = "apt-get install redis-server  (Debian/Ubuntu; `brew install redis` on macOS)"
PROBE_TIMEOUT_S = 1.0


def find_redis_server() -> Path:
    """The ``redis-server`` executable on PATH."""
    found = shutil.which("redis-server")
    if found is None:
        raise BinaryNotFoundError(
            f"redis-server is not installed (not on PATH); install it with: {INSTALL_HINT}"
        )
    return Path(found)


def redis_argv(binary: Path, host: str, port: int, workdir: Path) -> list[str]:
    """Command line of a Redis bound to ``host:port`` that never writes snapshots or an AOF."""
    return [
        str(binary),
        "--bind",
        host,
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
        "--daemonize",
        "no",
        "--loglevel",
        "notice",
    ]


def redis_env(environ: Mapping[str, str]) -> dict[str, str]:
    return dict(environ)


def redis_answers(host: str, port: int) -> bool:
    """Whether Redis on ``host:port`` answers PING."""
    import redis

    return answers_request(
        "redis",
        host,
        port,
        connect=lambda: redis.Redis(
            host=host,
            port=port,
            socket_timeout=PROBE_TIMEOUT_S,
            socket_connect_timeout=PROBE_TIMEOUT_S,
        ),
        request=lambda client: bool(client.ping()),
        errors=(redis.RedisError, OSError),
    )


REDIS = ServiceDefinition(
    name="redis",
    find_binary=find_redis_server,
    argv=redis_argv,
    env=redis_env,
    probe=redis_answers,
)
