"""A worker refuses to start, with one clear error line and exit status 2 (like every
configuration error), when its topics have partition counts it cannot run with or when it is
asked for exactly-once processing; against the real broker, as ``python -m stream worker``."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from benchmarks.harness import WorkerProcess
from mindstream.settings import Settings
from mindstream.topics import ensure_topic, existing_partitions
from stream.rekey import changelog_topic_name, rekey_topic_name

pytestmark = [pytest.mark.integration]

EXIT_CONFIG_ERROR = 2


def refusal(settings: Settings, log_path: Path, timeout_s: float = 120.0) -> str:
    """Run the worker, expect it to exit with the configuration-error status by itself (no
    restart loop: a single start), and return its output."""
    with WorkerProcess(settings, log_path) as worker:
        worker.start()
        assert worker.process is not None
        started = time.monotonic()
        status = worker.process.wait(timeout=timeout_s)
        took = time.monotonic() - started
        output = log_path.read_text(errors="replace")
    assert status == EXIT_CONFIG_ERROR, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert worker.starts == 1
    assert took < timeout_s
    return output


def derived_topics(settings: Settings) -> list[str]:
    return [
        rekey_topic_name(settings.app_id, settings.clicks_topic),
        changelog_topic_name(settings.app_id),
    ]


def test_a_clicks_topic_with_another_partition_count_is_refused(
    stream_settings: Settings, tmp_path: Path
) -> None:
    have = existing_partitions(stream_settings, [stream_settings.clicks_topic])
    assert have == {stream_settings.clicks_topic: stream_settings.topic_partitions}
    settings = dataclasses.replace(
        stream_settings, topic_partitions=stream_settings.topic_partitions + 2
    )
    output = refusal(settings, tmp_path / "worker.log")
    n = stream_settings.topic_partitions
    assert (
        f"topic {settings.clicks_topic} (MINDSTREAM_CLICKS_TOPIC) has {n} partitions but "
        f"MINDSTREAM_TOPIC_PARTITIONS={n + 2}"
    ) in output
    assert f"set MINDSTREAM_TOPIC_PARTITIONS={n}" in output
    # refused before anything was created for the wrong count
    assert existing_partitions(settings, derived_topics(settings)) == {}


@pytest.mark.parametrize("which", ["rekey", "changelog"])
def test_a_rekey_or_changelog_topic_with_another_count_is_refused(
    stream_settings: Settings, tmp_path: Path, which: str
) -> None:
    rekey, changelog = derived_topics(stream_settings)
    topic = rekey if which == "rekey" else changelog
    n = stream_settings.topic_partitions
    ensure_topic(stream_settings, topic, n + 1)
    output = refusal(stream_settings, tmp_path / "worker.log")
    assert f"{topic} has {n + 1} partitions but the clicks topic" in output
    assert "MINDSTREAM_TOPIC_PARTITIONS" in output and "MINDSTREAM_APP_ID" in output


def test_exactly_once_is_refused_at_start(stream_settings: Settings, tmp_path: Path) -> None:
    settings = dataclasses.replace(stream_settings, processing_guarantee="exactly_once")
    output = refusal(settings, tmp_path / "worker.log", timeout_s=60.0)
    assert "MINDSTREAM_PROCESSING_GUARANTEE=exactly_once is not supported" in output
    assert "RELIABILITY.md" in output
    assert existing_partitions(settings, derived_topics(settings)) == {}
