"""What the worker's at-least-once processing guarantees for each of its outputs, checked after
SIGKILLs mid-stream (RELIABILITY.md, "Processing guarantee"), reading the topics as a
``read_committed`` consumer would:

- Redis: every record equals the batch recompute (each event applied once);
- window changelog: along each user's records ``seq`` only goes up (no window state written
  twice, none lost in a restart), and the last record is the user's expected window;
- dead-letter topic: every bad record is there with its source position and reason; copies
  (a bad record read again after a kill) carry the same source and are counted.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import redis

from benchmarks.harness import WorkerProcess, publish
from benchmarks.malformed import malformed_records
from mindstream.kafka_config import kafka_python_consumer_kwargs
from mindstream.settings import Settings
from model_export.data.synthetic import SyntheticConfig, click_events, generate
from stream.deadletter import parse_dead_letter
from stream.rekey import changelog_topic_name
from stream.window import decode_window
from tests.integration.streamcheck import (
    assert_equal_to_batch_recompute,
    click_records,
    expected_windows,
    kill_mid_stream,
    wait_for_records,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BAD_EVERY = 20
CHUNK = 600
READ_TIMEOUT_S = 60.0


def read_committed(settings: Settings, topic: str, group_id: str) -> list:
    """Every record of ``topic`` up to its last stable offset, as a read_committed consumer."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        **kafka_python_consumer_kwargs(settings, group_id=group_id),
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)
        records: list = []
        deadline = time.monotonic() + READ_TIMEOUT_S
        while any(consumer.position(tp) < end[tp] for tp in partitions):
            assert time.monotonic() < deadline, f"{topic} not read to its end in time"
            for batch in consumer.poll(timeout_ms=500).values():
                records += batch
        return records
    finally:
        consumer.close()


def test_each_output_after_sigkills(
    stream_settings: Settings,
    redis_client: redis.Redis,
    bundle_dir: Path,
    tmp_path: Path,
    group_id: str,
) -> None:
    data, _ = generate(
        SyntheticConfig(n_users=100, n_items=300, n_clusters=10, min_len=8, max_len=40, seed=11)
    )
    clicks = list(click_events(data))
    settings = dataclasses.replace(stream_settings, batch_size=20)
    catalogue = malformed_records("u2", "i5", clicks[0]["ts"])
    published: list[tuple[bytes | None, bytes | None]] = []
    bad_at: dict[int, str] = {}  # index in published -> reason
    for n, record in enumerate(click_records(clicks)):
        published.append(record)
        if n % BAD_EVERY == 0:
            _, key, value, reason = catalogue[(n // BAD_EVERY) % len(catalogue)]
            bad_at[len(published)] = reason
            published.append((key, value))
    chunks = [published[i : i + CHUNK] for i in range(0, len(published), CHUNK)]
    positions: list[tuple[int, int]] = []
    rng = random.Random(5)
    kills = 0
    expected = expected_windows(clicks)
    with WorkerProcess(settings, tmp_path / "worker.log") as worker:
        worker.start()
        worker.wait_ready()
        for n, chunk in enumerate(chunks):
            positions += publish(settings, chunk)
            if n % 2 == 1:
                kill_mid_stream(worker, rng)
                kills += 1
                worker.start()
                worker.wait_ready()
        records = wait_for_records(settings, redis_client, expected, worker=worker)
        assert worker.terminate() == 0, worker.log_tail()
    assert kills >= 2

    # Redis
    assert_equal_to_batch_recompute(bundle_dir, records, expected)

    # window changelog
    by_user: dict[str, list[tuple[tuple[str, ...], int]]] = defaultdict(list)
    changelog = read_committed(settings, changelog_topic_name(settings.app_id), group_id + "-c")
    for record in changelog:
        window = decode_window(record.value)
        by_user[record.key.decode()].append((window.items, window.seq))
    assert set(by_user) == set(expected)
    for user, states in by_user.items():
        seqs = [seq for _, seq in states]
        # a replayed event is skipped by the window, which is written only when one applied
        assert seqs == sorted(set(seqs)), f"{user}: changelog seq not increasing: {seqs}"
        assert states[-1] == expected[user], user

    # dead-letter topic
    letters = [
        parse_dead_letter(r.key, r.value, r.headers)
        for r in read_committed(settings, settings.dlq_topic, group_id + "-d")
    ]
    want = {
        f"{settings.clicks_topic}/{positions[i][0]}/{positions[i][1]}": reason
        for i, reason in bad_at.items()
    }
    copies = Counter(letter.source for letter in letters)
    assert set(copies) == set(want)
    for letter in letters:
        assert letter.reason == want[letter.source], letter.source
    print(
        f"\nRELIABILITY guarantees: kills={kills} users={len(records)} redis=batch-recompute "
        f"changelog_records={len(changelog)} "
        f"bad={len(want)} dead_letters={len(letters)} dead_letter_copies={len(letters) - len(want)}"
    )
