"""The stream worker end to end, against the real broker and Redis, as a child process.

Every test publishes a click log, lets ``python -m stream worker`` run (killed, stopped and
restarted where the test says so), and compares every user's Redis record with a batch
recompute: the window by definition (sort all of the user's events, horizon, last max_len) and
the vectors from the bundle's ONNX graph fed by the test's own encoding (max abs diff <= 1e-5).
"""

from __future__ import annotations

import dataclasses
import random
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from faust.types.settings import Settings as FaustSettings
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.harness import WorkerProcess, publish, read_dead_letters
from benchmarks.malformed import malformed_records
from mindstream.settings import Settings
from model_export.data.synthetic import SyntheticConfig, click_events, generate
from stream.lag import LAG_METRIC
from stream.metrics import StreamMetrics
from stream.positions import committed_offsets
from stream.rekey import rekey_topic_name
from tests.integration.streamcheck import (
    UNKEYED_EVERY,
    assert_equal_to_batch_recompute,
    click_records,
    expected_windows,
    kill_mid_stream,
    wait_for_records,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def clicks() -> list[dict]:
    data, _ = generate(
        SyntheticConfig(n_users=100, n_items=300, n_clusters=10, min_len=8, max_len=40, seed=11)
    )
    return list(click_events(data))


def test_end_to_end_equals_batch_recompute(
    stream_settings: Settings,
    redis_client: redis.Redis,
    clicks: list[dict],
    bundle_dir: Path,
    tmp_path: Path,
    group_id: str,
) -> None:
    bad = [(k, v) for _, k, v, _ in malformed_records("u1", "i1", clicks[0]["ts"])[:6]]
    log = click_records(clicks)
    published = log[:1000] + bad + log[1000:]
    with WorkerProcess(stream_settings, tmp_path / "worker.log") as worker:
        worker.start()
        worker.wait_ready()
        publish(stream_settings, published)
        expected = expected_windows(clicks)
        records = wait_for_records(stream_settings, redis_client, expected, worker=worker)
        metrics = worker.metrics()
        exposed = _families(worker)
        assert worker.terminate() == 0, worker.log_tail()
    # uvloop is a dependency, so the worker runs on it (stream.cli sets it before Faust starts)
    assert "stream runtime ready" in worker.log_path.read_text()
    assert " loop=uvloop" in worker.log_path.read_text(), worker.log_tail()
    assert_equal_to_batch_recompute(bundle_dir, records, expected)
    letters = read_dead_letters(stream_settings, len(bad), group_id=group_id)
    applied = sum(r.seq for r in records.values())
    assert applied + len(letters) == len(published)
    assert metrics["mindstream_stream_events_applied_total"] == applied
    rekeyed = sum(v for k, v in metrics.items() if k.startswith("mindstream_stream_rekeyed_total"))
    assert rekeyed == len(range(0, len(log), UNKEYED_EVERY))
    assert metrics["mindstream_stream_unknown_items_total"] > 0
    assert metrics["mindstream_stream_freshness_seconds_count"] == applied
    # the worker serves its StreamMetrics' registry: every family of it, the lag, the process
    assert _families_of(StreamMetrics().exposition().decode()) | {LAG_METRIC} <= exposed
    assert metrics["process_cpu_seconds_total"] > 0


def _families_of(text: str) -> set[str]:
    return {family.name for family in text_string_to_metric_families(text)}


def _families(worker: WorkerProcess) -> set[str]:
    """The metric families the worker's ``/metrics`` declares (with samples or not yet)."""
    with urllib.request.urlopen(f"{worker.url}/metrics", timeout=5) as response:  # noqa: S310
        return _families_of(response.read().decode())


@pytest.mark.parametrize("unkeyed_every", [0, UNKEYED_EVERY], ids=["keyed", "with-rekeyed"])
def test_sigkill_restarts_keep_exact_state(
    stream_settings: Settings,
    redis_client: redis.Redis,
    clicks: list[dict],
    bundle_dir: Path,
    tmp_path: Path,
    unkeyed_every: int,
) -> None:
    settings = dataclasses.replace(stream_settings, batch_size=20)
    expected = expected_windows(clicks)
    log = click_records(clicks, unkeyed_every)
    chunks = [log[i : i + 500] for i in range(0, len(log), 500)]
    rng = random.Random(7)
    replayed = 0.0
    kills = 0
    with WorkerProcess(settings, tmp_path / "worker.log") as worker:
        worker.start()
        worker.wait_ready()
        for n, chunk in enumerate(chunks):
            publish(settings, chunk)
            if n % 2 == 1 or n == len(chunks) - 1:
                # let this run get somewhere (it has consumed records), then pull the plug
                replayed += kill_mid_stream(worker, rng)
                kills += 1
                worker.start()
                worker.wait_ready()
        records = wait_for_records(settings, redis_client, expected, worker=worker)
        replayed += worker.metrics()["mindstream_stream_events_replayed_total"]
    assert kills >= 3
    assert_equal_to_batch_recompute(bundle_dir, records, expected)
    assert replayed > 0  # the restarts did replay uncommitted events, and skipped them


def test_malformed_events_are_dead_lettered(
    stream_settings: Settings,
    redis_client: redis.Redis,
    clicks: list[dict],
    bundle_dir: Path,
    tmp_path: Path,
    group_id: str,
) -> None:
    good_events = [e for e in clicks if e["user_id"] in {"u1", "u2", "u3"}]
    bad = malformed_records("u2", "i5", good_events[0]["ts"])
    assert len(bad) >= 15
    good = click_records(good_events)
    published: list[tuple[bytes | None, bytes | None]] = []
    for n, record in enumerate(good):
        published.append(record)
        if n < len(bad):
            published.append((bad[n][1], bad[n][2]))
    with WorkerProcess(stream_settings, tmp_path / "worker.log") as worker:
        worker.start()
        worker.wait_ready()
        positions = publish(stream_settings, published)
        # a record on the re-key topic that no worker forwarded (no origin header)
        rekey = rekey_topic_name(stream_settings.app_id, stream_settings.clicks_topic)
        publish(stream_settings, [good[0]], topic=rekey)
        expected = expected_windows(good_events)
        records = wait_for_records(stream_settings, redis_client, expected, worker=worker)
        letters = read_dead_letters(stream_settings, len(bad) + 1, group_id=group_id)
        assert worker.running and worker.health() is not None
    assert_equal_to_batch_recompute(bundle_dir, records, expected)
    assert len(letters) == len(bad) + 1
    by_source = {letter.source: letter for letter in letters}
    bad_positions = [
        positions[i] for i, r in enumerate(published) if r in {(b[1], b[2]) for b in bad}
    ]
    for (name, key, value, reason), (partition, offset) in zip(bad, bad_positions, strict=True):
        letter = by_source[f"{stream_settings.clicks_topic}/{partition}/{offset}"]
        assert (letter.reason, letter.key, letter.value) == (reason, key, value), name
    assert Counter(letter.reason for letter in letters)["bad_origin"] == 1


def test_redis_outage_never_commits_past_an_unwritten_batch(
    stream_settings: Settings,
    clicks: list[dict],
    bundle_dir: Path,
    tmp_path: Path,
    own_redis: Callable[..., object],
) -> None:
    client = own_redis("start")
    assert isinstance(client, redis.Redis)
    settings = dataclasses.replace(stream_settings, redis_url=str(own_redis("url")))
    log = click_records(clicks)
    half = len(log) // 2
    expected_first = expected_windows(clicks[:half])
    with WorkerProcess(settings, tmp_path / "worker.log") as worker:
        worker.start()
        worker.wait_ready()
        publish(settings, log[:half])
        wait_for_records(settings, client, expected_first, worker=worker)
        own_redis("kill")  # Redis dies; the next batches cannot be written
        unwritten = publish(settings, log[half:])
        deadline = time.monotonic() + 30
        while (answer := worker.health()) is None or answer[0] != 503:
            assert time.monotonic() < deadline, worker.log_tail()
            time.sleep(0.2)
        assert answer[1]["status"] == "degraded"
        # For two of Faust's commit intervals, with unwritten batches taken: the group's
        # committed offset of each partition never passes its first unwritten record.
        first_unwritten: dict[tuple[str, int], int] = {}
        for partition, offset in unwritten:
            tp = (settings.clicks_topic, partition)
            first_unwritten[tp] = min(offset, first_unwritten.get(tp, offset))
        end = time.monotonic() + 2 * FaustSettings("probe").broker_commit_interval
        while time.monotonic() < end:
            committed = committed_offsets(settings, sorted(first_unwritten))
            passed = {
                tp: (offset, first_unwritten[tp])
                for tp, offset in committed.items()
                if offset is not None and offset > first_unwritten[tp]
            }
            assert not passed, f"committed past an unwritten record: {passed}"
            assert worker.running, worker.log_tail()  # retrying, not crashing
            time.sleep(0.2)
        # A stop while the batch cannot be written exits without committing (EX_TEMPFAIL).
        assert worker.terminate(timeout_s=30) == 75, worker.log_tail()
        client = own_redis("start")  # a new, empty Redis
        assert isinstance(client, redis.Redis)
        worker.start()
        worker.wait_ready()
        # Users with no event in the second half lost their record with the old Redis; every
        # other user's record must come back exact, so the unwritten batches were replayed.
        second_half_users = {e["user_id"] for e in clicks[half:]}
        expected = {u: w for u, w in expected_windows(clicks).items() if u in second_half_users}
        records = wait_for_records(settings, client, expected, worker=worker)
    assert_equal_to_batch_recompute(bundle_dir, records, expected)
