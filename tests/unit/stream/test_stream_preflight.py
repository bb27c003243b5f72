"""A worker started while no Kafka broker answers waits a bounded time, then exits clearly."""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra.ports import free_port
from mindstream.errors import ConfigError
from mindstream.settings import Settings, known_env
from stream import preflight
from tests.integration.streamcheck import export_small_bundle


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_waits_for_a_broker_that_comes_up(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    answers = iter(["refused", "refused", None])

    def probe(settings: Settings, timeout_s: float) -> str | None:
        clock.now += 0.5
        return next(answers)

    with caplog.at_level(logging.INFO, logger="stream.preflight"):
        preflight.wait_for_broker(Settings(), probe=probe, clock=clock, sleep=clock.sleep)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "attempt=1" in warnings[0] and "refused" in warnings[0]
    assert "answers after attempt=3" in caplog.text


def test_gives_up_after_the_limit_naming_the_setting() -> None:
    clock = Clock()
    probes: list[float] = []

    def probe(settings: Settings, timeout_s: float) -> str:
        probes.append(timeout_s)
        clock.now += timeout_s
        return "KafkaTimeoutError('Unable to bootstrap')"

    settings = dataclasses.replace(Settings(), stream_broker_wait_s=12.0)
    with pytest.raises(preflight.BrokerUnavailable) as caught:
        preflight.wait_for_broker(settings, probe=probe, clock=clock, sleep=clock.sleep)
    message = str(caught.value)
    assert "KAFKA_BOOTSTRAP_SERVERS" in message and "MINDSTREAM_STREAM_BROKER_WAIT_S" in message
    assert "within 12 s" in message and "Unable to bootstrap" in message
    assert clock.now <= 12.0 + 0.5  # the tries never ran far past the limit
    assert max(probes) <= preflight.BROKER_PROBE_TIMEOUT_S


def test_worker_without_a_broker_exits_with_one_line_per_try(tmp_path: Path) -> None:
    export_small_bundle(tmp_path / "bundles")
    env = {k: v for k, v in os.environ.items() if k not in known_env()}
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}",  # nothing listens there
        MINDSTREAM_STREAM_BROKER_WAIT_S="6",
        MINDSTREAM_BUNDLE=str(tmp_path / "bundles" / "current"),
        MINDSTREAM_DATA_DIR=str(tmp_path),
    )
    done = subprocess.run(
        [sys.executable, "-m", "mindstream", "stream", "worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert any("no kafka broker answers" in line and "attempt=1" in line for line in lines)
    assert lines[-1].startswith("mindstream stream: error: no Kafka broker answered at")
    assert "Traceback" not in done.stderr


CLICKS, REKEY, CHANGELOG = "clicks", "app-clicks-rekey", "app-windows-changelog"


@pytest.mark.parametrize(
    "found",
    [
        {},  # nothing exists yet: the worker creates them
        {CLICKS: 8},
        {CLICKS: 8, REKEY: 8, CHANGELOG: 8},
        {REKEY: 8},
    ],
)
def test_matching_or_missing_topics_pass(found: dict[str, int]) -> None:
    preflight.check_partitions(8, CLICKS, found, [REKEY, CHANGELOG])


def test_a_clicks_topic_with_another_count_is_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError) as caught:
        preflight.check_partitions(8, CLICKS, {CLICKS: 3, REKEY: 8}, [REKEY, CHANGELOG])
    message = str(caught.value)
    assert "topic clicks (MINDSTREAM_CLICKS_TOPIC) has 3 partitions" in message
    assert "MINDSTREAM_TOPIC_PARTITIONS=8" in message
    assert message.endswith("set MINDSTREAM_TOPIC_PARTITIONS=3")


@pytest.mark.parametrize("topic", [REKEY, CHANGELOG])
def test_a_derived_topic_with_another_count_is_refused(topic: str) -> None:
    with pytest.raises(ConfigError) as caught:
        preflight.check_partitions(8, CLICKS, {CLICKS: 8, topic: 4}, [REKEY, CHANGELOG])
    message = str(caught.value)
    assert f"{topic} has 4 partitions" in message
    assert "MINDSTREAM_TOPIC_PARTITIONS" in message and "MINDSTREAM_APP_ID" in message
    other = CHANGELOG if topic == REKEY else REKEY
    assert other not in message
