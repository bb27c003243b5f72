"""Kafka and Redis for the test suite, and per-test isolation on them.

Which services (decided once per run; the pytest header and the terminal summary say which):

1. existing ones, when ``MINDSTREAM_TEST_KAFKA_BOOTSTRAP_SERVERS`` and ``MINDSTREAM_TEST_REDIS_URL``
   are set (``MINDSTREAM_TEST_KAFKA_PROFILE`` picks the broker profile, default ``standard``;
   any other setting can be given as ``MINDSTREAM_TEST_<VARIABLE>``, e.g.
   ``MINDSTREAM_TEST_KAFKA_SECURITY_PROTOCOL``); the tests neither start nor stop them;
2. else Docker containers via testcontainers (``apache/kafka`` in KRaft mode, ``redis``) when a
   Docker engine answers a ping within 2 s; profile ``standard``;
3. else the local Apache Kafka of ``infra/`` (one KRaft JVM + redis-server on free loopback
   ports) when java and mvn are installed; profile ``standard``;
4. else the local Tansu broker of ``infra/`` + redis-server; profile ``local``.

The local launchers keep their state and logs in ``var/test-services/session-<pid>/`` (the
Apache Kafka jars in ``var/test-services/kafka-jars/``, fetched once).
``MINDSTREAM_TEST_SERVICES=env|docker|kafka|tansu`` forces one, and never falls back to another.

With an explicit choice or ``CI=true``, services that cannot start fail every integration test
with the launcher's error. Only in a developer's ad-hoc run does a missing service binary skip
the integration tests instead; the summary then says how many were skipped and why. Services
start when the first test that needs them runs (a unit-only run starts nothing) and are
stopped, by PID or container id, at the end of the session; local services left by a killed
session are stopped by the next one. The developer's own
``KAFKA_BOOTSTRAP_SERVERS``/``REDIS_URL``/``MINDSTREAM_*`` are ignored.

Fixtures (any test under ``tests/`` can use them; a test that does is marked ``integration``
automatically, but mark it yourself too: ``@pytest.mark.integration``):

``service_endpoints`` (session)
    :class:`infra.testing.ServiceEndpoints`: ``bootstrap_servers``, ``redis_url``,
    ``kafka_profile``, ``source``.
``service_settings`` (session)
    a :class:`~mindstream.settings.Settings` pointed at the test services, with their profile.
    Shared by the whole session: do not write to its topics or Redis keys without your own names.
``integration_settings``
    ``service_settings`` for one test: unique ``app_id`` (= Faust consumer group), unique
    ``redis_prefix`` (its keys deleted afterwards), unique ``clicks_topic`` and ``dlq_topic``
    (created, 4 partitions, ``topic_partitions=4``), ``data_dir`` = the test's ``tmp_path``.
``unique_topic``
    factory ``unique_topic(stem="t", partitions=1) -> str``: creates a topic with a name unique
    to this test and deletes it afterwards.
``unique_name``
    factory ``unique_name(stem) -> str``: ``<stem>-<test name>-<random>``, legal as a topic,
    group or app id.
``group_id``
    a consumer group id unique to this test (on Tansu a group can get stuck when a consumer
    closes while its join is pending, so never share one).
``redis_prefix``
    a key prefix unique to this test, ending in ``:``.
``redis_client``
    a ``redis.Redis`` (bytes in, bytes out) on the test Redis; deletes every key under
    ``redis_prefix`` afterwards.

Kafka clients are built from the settings with ``mindstream.kafka_config`` so the profile's quirks
and the security settings apply, e.g.::

    @pytest.mark.integration
    def test_roundtrip(integration_settings, unique_topic, group_id):
        topic = unique_topic("events", partitions=4)
        producer = KafkaProducer(**kafka_python_producer_kwargs(integration_settings))
        consumer = KafkaConsumer(
            topic, **kafka_python_consumer_kwargs(integration_settings, group_id=group_id)
        )
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from infra.containers import docker_engine_reachable
from infra.exceptions import BinaryNotFoundError
from infra.kafka_jars import JarFetchError
from infra.testing import (
    KAFKA_JARS_DIR,
    Choice,
    ServiceEndpoints,
    Source,
    check_reachable,
    choose,
    env_for_tests,
    local_kafka_missing,
    provide,
)
from mindstream.errors import ConfigError
from mindstream.settings import Settings
from mindstream.topics import TopicError, delete_topics, ensure_topics
from tests.requirements import required

SERVICE_FIXTURES = frozenset(
    {
        "service_endpoints",
        "service_settings",
        "integration_settings",
        "unique_topic",
        "redis_client",
    }
)
TEST_TOPIC_PARTITIONS = 4


SKIP_PREFIX = "no test services: "


@dataclasses.dataclass
class _ServicesReport:
    choice: Choice
    strict: bool  # a start failure fails the run (CI=true or an explicit choice)
    endpoints: ServiceEndpoints | None = None
    start_s: float | None = None
    note: str = ""
    stopped: bool = False
    skip_reason: str = ""


_REPORT = pytest.StashKey[_ServicesReport]()


def _report(config: pytest.Config) -> _ServicesReport:
    if _REPORT not in config.stash:
        jars_root = _local_root(config) / KAFKA_JARS_DIR
        try:
            choice = choose(
                os.environ,
                lambda: docker_engine_reachable(timeout_s=2.0),
                lambda: local_kafka_missing(jars_root),
            )
        except ConfigError as exc:
            raise pytest.UsageError(f"test services: {exc}") from exc
        config.stash[_REPORT] = _ServicesReport(choice, strict=choice.explicit or required())
    return config.stash[_REPORT]


def _base_settings(config: pytest.Config) -> Settings:
    return Settings.from_env(env_for_tests(os.environ))


def pytest_report_header(config: pytest.Config) -> str:
    report = _report(config)
    choice = report.choice
    when = "used as given" if choice.source is Source.ENV else "started on first use"
    policy = (
        "services that cannot start fail the run"
        if report.strict
        else "ad-hoc run: integration tests skip if a service is not installed"
    )
    return (
        f"mindstream test services: {choice.source.value} - {choice.source.description} "
        f"({choice.reason}; {when}; {policy})"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    report = terminalreporter.config.stash.get(_REPORT, None)
    if report is None:
        return
    terminalreporter.write_sep("-", "mindstream test services")
    if report.note:
        terminalreporter.write_line(report.note)
    # The session fixture's skip is re-raised for every test that needs the services.
    skipped = [
        r for r in terminalreporter.stats.get("skipped", []) if SKIP_PREFIX in str(r.longrepr)
    ]
    if skipped:
        terminalreporter.write_line(
            f"{len(skipped)} integration tests SKIPPED because {report.skip_reason}",
            yellow=True,
            bold=True,
        )
        return
    endpoints = report.endpoints
    if endpoints is None:
        source = report.choice.source
        started = "could not start" if report.note else "not started (no test needed them)"
        terminalreporter.write_line(f"{source.value}: {source.description} - {started}")
        return
    source = endpoints.source
    terminalreporter.write_line(
        f"{source.value}: {source.description}; kafka {endpoints.bootstrap_servers} "
        f"(profile {endpoints.kafka_profile}), redis {endpoints.redis_url}; "
        f"ready in {report.start_s or 0.0:.1f}s"
    )
    if source is Source.ENV:
        terminalreporter.write_line(endpoints.detail)
    else:
        state = "stopped" if report.stopped else "NOT stopped"
        terminalreporter.write_line(f"{endpoints.detail} - {state}")


def _local_root(config: pytest.Config) -> Path:
    data_dir = Path(_base_settings(config).data_dir)
    if not data_dir.is_absolute():
        data_dir = config.rootpath / data_dir
    return data_dir / "test-services"


def _fallbacks(report: _ServicesReport, root: Path) -> list[Source]:
    """The sources an ad-hoc run may try after the chosen one failed to start."""
    if report.strict or report.choice.source is Source.ENV:
        return []
    order = [Source.DOCKER, Source.KAFKA, Source.TANSU]
    later = order[order.index(report.choice.source) + 1 :]
    if Source.KAFKA in later and local_kafka_missing(root / KAFKA_JARS_DIR) is not None:
        later.remove(Source.KAFKA)
    return later


@pytest.fixture(scope="session")
def service_endpoints(request: pytest.FixtureRequest) -> Iterator[ServiceEndpoints]:
    config = request.config
    report = _report(config)
    root = _local_root(config)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        endpoints = None
        failures: list[str] = []
        for source in [report.choice.source, *_fallbacks(report, root)]:
            try:
                endpoints = stack.enter_context(provide(source, os.environ, local_root=root))
                break
            except Exception as exc:
                failures.append(f"{source.value} could not start: {exc}")
                report.note = "; ".join(failures)
                if report.strict:
                    raise
                if isinstance(exc, BinaryNotFoundError):
                    report.skip_reason = str(exc)
                elif source is not Source.DOCKER and not isinstance(exc, JarFetchError):
                    raise  # installed but broken: worth a failure even in an ad-hoc run
        if endpoints is None:
            pytest.skip(f"{SKIP_PREFIX}{report.skip_reason}")
        if failures:
            report.note += f"; fell back to {endpoints.source.value}"
        if endpoints.source is Source.ENV:
            check_reachable(endpoints.apply(_base_settings(config)))
        report.endpoints = endpoints
        report.start_s = time.monotonic() - started
        yield endpoints
    report.stopped = True


@pytest.fixture(scope="session")
def service_settings(
    request: pytest.FixtureRequest,
    service_endpoints: ServiceEndpoints,
    tmp_path_factory: pytest.TempPathFactory,
) -> Settings:
    settings = service_endpoints.apply(_base_settings(request.config))
    return dataclasses.replace(settings, data_dir=str(tmp_path_factory.mktemp("mindstream")))


def _slug(request: pytest.FixtureRequest) -> str:
    return re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40]


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Factory ``unique_name(stem) -> "<stem>-<test name>-<random>"`` (Kafka-legal)."""

    def make(stem: str) -> str:
        return f"{stem}-{_slug(request)}-{uuid.uuid4().hex[:8]}"

    return make


@pytest.fixture
def unique_topic(
    service_settings: Settings, unique_name: Callable[[str], str]
) -> Iterator[Callable[..., str]]:
    created: list[str] = []

    def make(stem: str = "t", partitions: int = 1) -> str:
        name = unique_name(stem)
        ensure_topics(service_settings, {name: partitions})
        created.append(name)
        return name

    yield make
    with contextlib.suppress(TopicError):
        delete_topics(service_settings, created)


@pytest.fixture
def group_id(unique_name: Callable[[str], str]) -> str:
    return unique_name("g")


@pytest.fixture
def redis_prefix() -> str:
    return f"test:{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def redis_client(service_settings: Settings, redis_prefix: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(service_settings.redis_url)
    yield client
    pattern = re.sub(r"([*?\[\]\\])", r"\\\1", redis_prefix) + "*"
    batch: list[bytes] = []
    for key in client.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) == 1000:
            client.unlink(*batch)
            batch.clear()
    if batch:
        client.unlink(*batch)
    client.close()


@pytest.fixture
def integration_settings(
    service_settings: Settings,
    unique_topic: Callable[..., str],
    unique_name: Callable[[str], str],
    redis_prefix: str,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> Settings:
    return dataclasses.replace(
        service_settings,
        app_id=unique_name("app"),
        redis_prefix=redis_prefix,
        clicks_topic=unique_topic("clicks", TEST_TOPIC_PARTITIONS),
        dlq_topic=unique_topic("clicks-dlq", TEST_TOPIC_PARTITIONS),
        topic_partitions=TEST_TOPIC_PARTITIONS,
        data_dir=str(tmp_path),
    )
