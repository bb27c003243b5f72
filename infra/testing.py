"""Kafka and Redis for a test session: given by the environment, in containers, or local.

Sources in the order they are tried: the environment's services, Docker containers, the local
Apache Kafka (when java and mvn are installed), the local Tansu broker. The test suite's
fixtures (``tests/conftest.py``) use this module; it is here, next to the launchers, so that
benchmarks and other harnesses can get test services the same way. Nothing here reads the
environment: callers pass it in.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from infra.exceptions import InfraError
from mindstream.errors import ConfigError
from mindstream.settings import KAFKA_PROFILES, Settings, known_env

logger = logging.getLogger(__name__)

TEST_PREFIX = "MINDSTREAM_TEST_"
# MINDSTREAM_TEST_SERVICES=env|docker|kafka|tansu skips the automatic choice.
CHOICE_VARIABLE = "MINDSTREAM_TEST_SERVICES"
# Where the local Apache Kafka's jars are kept under the test services' root (shared by the
# sessions, so they are fetched once per checkout).
KAFKA_JARS_DIR = "kafka-jars"
BOOTSTRAP_VARIABLE = "MINDSTREAM_TEST_KAFKA_BOOTSTRAP_SERVERS"
REDIS_VARIABLE = "MINDSTREAM_TEST_REDIS_URL"


class Source(enum.Enum):
    ENV = "env"
    DOCKER = "docker"
    KAFKA = "kafka"
    TANSU = "tansu"

    @property
    def description(self) -> str:
        return {
            Source.ENV: f"existing services from ${BOOTSTRAP_VARIABLE} / ${REDIS_VARIABLE}",
            Source.DOCKER: "Docker containers via testcontainers (Apache Kafka KRaft + Redis)",
            Source.KAFKA: "local launcher, no Docker (Apache Kafka KRaft JVM + redis-server)",
            Source.TANSU: "local launcher, no Docker (Tansu broker + redis-server)",
        }[self]

    @property
    def local_broker(self) -> str | None:
        """The ``infra.services`` broker this source launches (None: it launches none)."""
        return {Source.KAFKA: "kafka", Source.TANSU: "tansu"}.get(self)


@dataclass(frozen=True)
class Choice:
    source: Source
    reason: str
    # True when the choice was made explicitly (MINDSTREAM_TEST_SERVICES): it must then never
    # fall back to another source.
    explicit: bool = False


@dataclass(frozen=True)
class ServiceEndpoints:
    """Where the test session's Kafka and Redis are, and how they were provided."""

    source: Source
    bootstrap_servers: str
    redis_url: str
    kafka_profile: str
    detail: str  # what was started (pids, container ids) or where it came from
    # The local services' data folder (``infra.services``), for tests that stop and restart
    # the local broker; None for services this session did not launch itself.
    data_dir: Path | None = None

    def apply(self, settings: Settings) -> Settings:
        """``settings`` pointed at these services, with the broker's profile."""
        return dataclasses.replace(
            settings,
            kafka_bootstrap_servers=self.bootstrap_servers,
            redis_url=self.redis_url,
            kafka_profile=self.kafka_profile,
        )


def env_for_tests(environ: Mapping[str, str]) -> dict[str, str]:
    """Settings variables given to the tests as ``MINDSTREAM_TEST_<name>``.

    ``<name>`` is a settings variable either as it is (``MINDSTREAM_TEST_REDIS_URL`` ->
    ``REDIS_URL``) or without its ``MINDSTREAM_`` (``MINDSTREAM_TEST_KAFKA_PROFILE`` ->
    ``MINDSTREAM_KAFKA_PROFILE``). The developer's own settings variables are not used, so a
    shell pointed at other services by ``mindstream services up`` cannot leak into tests.
    """
    known = known_env()
    mapped = {}
    for name, value in environ.items():
        if not name.startswith(TEST_PREFIX):
            continue
        rest = name[len(TEST_PREFIX) :]
        for candidate in (rest, f"MINDSTREAM_{rest}"):
            if candidate in known:
                mapped[candidate] = value
                break
    return mapped


def choose(
    environ: Mapping[str, str],
    docker_reachable: Callable[[], bool],
    kafka_tools: Callable[[], str | None] = lambda: None,
) -> Choice:
    """Which services the tests use: the environment's, else Docker's, else the local Apache
    Kafka, else the local Tansu broker.

    ``kafka_tools()`` returns None when the local Apache Kafka can be launched (java, and mvn
    or jars already fetched), else what is missing (the launcher's install advice).
    """
    has_bootstrap = bool(environ.get(BOOTSTRAP_VARIABLE))
    has_redis = bool(environ.get(REDIS_VARIABLE))
    forced = environ.get(CHOICE_VARIABLE, "").strip().lower()
    if forced == "local":
        raise ConfigError(
            f"{CHOICE_VARIABLE}=local: name the local broker, kafka (Apache Kafka) or tansu"
        )
    if forced and forced not in {s.value for s in Source}:
        raise ConfigError(
            f"{CHOICE_VARIABLE}={forced!r}: expected one of {[s.value for s in Source]}"
        )
    if has_bootstrap != has_redis or (forced == Source.ENV.value and not has_bootstrap):
        raise ConfigError(
            f"set both {BOOTSTRAP_VARIABLE} and {REDIS_VARIABLE} to test against existing "
            f"services, or neither"
        )
    if forced:
        return Choice(Source(forced), f"{CHOICE_VARIABLE}={forced}", explicit=True)
    if has_bootstrap:
        return Choice(Source.ENV, f"{BOOTSTRAP_VARIABLE} and {REDIS_VARIABLE} are set")
    if docker_reachable():
        return Choice(Source.DOCKER, "a Docker engine answered")
    missing = kafka_tools()
    if missing is None:
        return Choice(Source.KAFKA, "no Docker engine; java and mvn are installed")
    return Choice(Source.TANSU, f"no Docker engine; falling back to Tansu because {missing}")


def local_kafka_missing(jars_root: Path) -> str | None:
    """None when the local Apache Kafka can be launched, else what is missing and how to get
    it (java always; mvn only while the jars have not been fetched)."""
    from infra.exceptions import BinaryNotFoundError
    from infra.kafka_jars import find_java, find_maven, jars_present, kafka_version

    try:
        find_java()
        if not jars_present(jars_root / kafka_version()):
            find_maven()
    except BinaryNotFoundError as exc:
        return str(exc)
    return None


def _from_environment(environ: Mapping[str, str]) -> ServiceEndpoints:
    profile = env_for_tests(environ).get("MINDSTREAM_KAFKA_PROFILE", "standard")
    if profile not in KAFKA_PROFILES:
        raise ConfigError(
            f"MINDSTREAM_TEST_KAFKA_PROFILE={profile!r}: expected one of {sorted(KAFKA_PROFILES)}"
        )
    return ServiceEndpoints(
        source=Source.ENV,
        bootstrap_servers=environ[BOOTSTRAP_VARIABLE],
        redis_url=environ[REDIS_VARIABLE],
        kafka_profile=profile,
        detail="given by the environment; not started or stopped by the tests",
    )


@contextlib.contextmanager
def _from_docker() -> Iterator[ServiceEndpoints]:
    from infra.containers import KAFKA_IMAGE, REDIS_IMAGE, kafka_and_redis

    with kafka_and_redis() as started:
        yield ServiceEndpoints(
            source=Source.DOCKER,
            bootstrap_servers=started.bootstrap_servers,
            redis_url=started.redis_url,
            kafka_profile="standard",
            detail=f"containers {started.kafka_container_id} ({KAFKA_IMAGE}) and "
            f"{started.redis_container_id} ({REDIS_IMAGE})",
        )


@contextlib.contextmanager
def _from_local_launcher(root: Path, broker: str) -> Iterator[ServiceEndpoints]:
    from infra import processes, services

    for reaped in services.reap_orphans(root):
        logger.warning("stopped services left behind by a dead test session in %s", reaped)
    data_dir = root / f"session-{os.getpid()}"
    result = services.up(
        data_dir,
        owner=processes.current_process(),
        broker=broker,
        timeout_s=120.0 if broker == "kafka" else 30.0,
        jars_root=root / KAFKA_JARS_DIR,
    )
    state = result.services
    pids = ", ".join(f"{n} pid {r.process.pid}" for n, r in state.services.items())
    try:
        yield ServiceEndpoints(
            source=Source.KAFKA if broker == "kafka" else Source.TANSU,
            bootstrap_servers=state.bootstrap_servers,
            redis_url=state.redis_url,
            kafka_profile=state.kafka_profile,
            detail=f"{pids}; logs in {services.services_dir(data_dir) / 'logs'}",
            data_dir=data_dir,
        )
    finally:
        outcomes = services.down(data_dir, timeout_s=30.0)
        logger.info("stopped local test services: %s", outcomes)
        leftover = [n for n, r in state.services.items() if processes.is_running(r.process)]
        if leftover:
            raise InfraError(f"local test services still running after stop: {leftover}")
        shutil.rmtree(data_dir, ignore_errors=True)


def provide(
    source: Source, environ: Mapping[str, str], *, local_root: Path
) -> contextlib.AbstractContextManager[ServiceEndpoints]:
    """A context that yields the services of ``source`` and stops what it started on exit."""
    if source is Source.ENV:
        return contextlib.nullcontext(_from_environment(environ))
    if source is Source.DOCKER:
        return _from_docker()
    broker = source.local_broker
    if broker is None:
        raise ConfigError(f"no launcher for test services of source {source.value!r}")
    return _from_local_launcher(local_root, broker)


def check_reachable(settings: Settings, timeout_s: float = 5.0) -> None:
    """Raise InfraError unless the settings' Kafka and Redis both answer within the timeout."""
    import redis
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    from mindstream.kafka_config import kafka_python_kwargs

    timeout_ms = int(timeout_s * 1000)
    try:
        admin = KafkaAdminClient(
            **kafka_python_kwargs(settings, client_id="mindstream-tests"),
            request_timeout_ms=timeout_ms,
            bootstrap_timeout_ms=timeout_ms,
        )
        admin.close()
    except KafkaError as exc:
        raise InfraError(
            f"Kafka at {settings.kafka_bootstrap_servers} did not answer: {exc}"
        ) from exc
    client = redis.Redis.from_url(
        settings.redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
    )
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        raise InfraError(f"Redis at {settings.redis_url} did not answer PING: {exc}") from exc
    finally:
        client.close()
