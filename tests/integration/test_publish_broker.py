"""``mindstream publish`` against a real broker: what arrives is what the source said, keyed by
user id, encoded by the click-event contract, in each user's event order."""

from __future__ import annotations

import collections
import threading
import time
from pathlib import Path

import pytest

from mindstream.app.cli import main
from mindstream.kafka_config import kafka_python_consumer_kwargs
from model_export.data.synthetic import SyntheticConfig
from stream.events import ClickEvent, decode_event
from stream.publish import publish, synthetic_source

TAOBAO_SAMPLE = Path(__file__).resolve().parents[2].parent / "shared/data/taobao-userbehavior-10k"


def consume(settings, topic, expected, group_id, timeout_s=60.0):
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        **kafka_python_consumer_kwargs(settings, group_id=group_id),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    records = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records += batch
        # Nothing beyond what was sent.
        for batch in consumer.poll(timeout_ms=1000).values():
            records += batch
    finally:
        consumer.close()
    return records


def as_events(source_events):
    return [
        ClickEvent(e["user_id"], e["item_id"], e["ts"], e.get("event", "click"), e.get("category"))
        for e in source_events
    ]


def check_arrived(records, expected):
    decoded = [decode_event(r.key, r.value) for r in records]
    assert all(r.key == d.user_id.encode() for r, d in zip(records, decoded, strict=True))
    assert collections.Counter(decoded) == collections.Counter(expected)
    # A user's events share a partition and keep their order there.
    partitions = collections.defaultdict(set)
    for r, d in zip(records, decoded, strict=True):
        partitions[d.user_id].add(r.partition)
    assert all(len(p) == 1 for p in partitions.values())
    by_offset = sorted(zip(records, decoded, strict=True), key=lambda x: x[0].offset)
    for user in partitions:
        got = [d for _, d in by_offset if d.user_id == user]
        assert got == [e for e in expected if e.user_id == user]
    return decoded


@pytest.mark.integration
def test_synthetic_log_arrives_keyed_and_contract_encoded(integration_settings, group_id):
    config = SyntheticConfig(n_users=40, n_items=60, n_clusters=5, min_len=5, max_len=12, seed=4)
    expected = as_events(synthetic_source(config).events)
    stats = publish(integration_settings, synthetic_source(config), rate=0, progress=False)
    assert stats.sent == stats.acknowledged == len(expected)
    assert stats.failed == stats.bad_events == stats.bad_lines == 0
    topic = integration_settings.clicks_topic
    records = consume(integration_settings, topic, len(expected), group_id)
    assert len(records) == len(expected)
    decoded = check_arrived(records, expected)
    assert {r.partition for r in records} == set(range(integration_settings.topic_partitions))
    assert {d.category for d in decoded} <= {f"c{c}" for c in range(5)}


@pytest.mark.integration
@pytest.mark.data
def test_taobao_slice_with_bad_lines_through_the_cli(
    integration_settings, group_id, tmp_path, monkeypatch, capsys
):
    sample = TAOBAO_SAMPLE / "UserBehavior.csv"
    if not sample.is_file():
        pytest.skip(f"no Taobao sample at {sample}")
    lines = sample.read_text().splitlines()[:400]
    lines[10:10] = ["garbage,line", "1,2,3,teleport,1511848894"]
    path = tmp_path / "UserBehavior.csv"
    path.write_text("\n".join(lines) + "\n")
    topic = f"{integration_settings.clicks_topic}-cli"  # created by publish itself
    for name, value in integration_settings.as_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MINDSTREAM_CLICKS_TOPIC", topic)

    assert main(["publish", str(path), "--rate", "2000", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert "sent 400, acknowledged 400, failed 0, bad lines 2, bad events 0" in out
    assert "garbage,line" in err and "teleport" in err

    expected = []
    for line in sorted(lines[:10] + lines[12:], key=lambda row: int(row.split(",")[4])):
        user, item, category, behaviour, ts = line.split(",")
        event = {"pv": "click"}.get(behaviour, behaviour)
        expected.append(ClickEvent(user, item, int(ts) * 1000, event, category))
    records = consume(integration_settings, topic, 400, group_id)
    assert len(records) == 400
    decoded = check_arrived(records, expected)
    assert {d.event for d in decoded} >= {"click", "cart"}
    from mindstream.topics import delete_topics

    delete_topics(integration_settings, [topic])


@pytest.mark.integration
def test_batched_load_generator_is_read_exactly_once_with_exact_end_offsets(
    integration_settings, unique_topic, group_id
):
    """``publish_batches`` (multi-record batches, single-record tail per partition) on the
    profile's broker: a consumer reading while it publishes sees every record exactly once, in
    order per partition, and the end offsets equal the records sent after every call."""
    from kafka import KafkaConsumer, TopicPartition

    from benchmarks.harness import publish_batches
    from stream.rekey import user_partition

    partitions = 4
    topic = unique_topic("batches", partitions=partitions)
    rounds = [
        [(f"u{i % 97}".encode(), f"r0-{i}".encode()) for i in range(3000)],  # paced
        [(f"u{i % 89}".encode(), f"r1-{i}".encode()) for i in range(7000)],  # unpaced
    ]
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer = KafkaConsumer(
        **kafka_python_consumer_kwargs(integration_settings, group_id=group_id),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    read = []
    stop = threading.Event()

    def drain():
        while not stop.is_set():
            for batch in consumer.poll(timeout_ms=100).values():
                read.extend((r.partition, r.offset, r.key, r.value) for r in batch)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    expected: dict[int, list[tuple[bytes, bytes]]] = collections.defaultdict(list)
    try:
        for n, (records, rate) in enumerate(zip(rounds, (2000.0, 0.0), strict=True)):
            published = publish_batches(
                integration_settings, records, topic=topic, rate=rate, chunk=1000
            )
            assert published.events == len(records)
            assert published.record_batches < len(records) / 2  # multi-record batches
            for key, value in records:
                expected[user_partition(key, partitions)].append((key, value))
            ends = consumer.end_offsets(tps)
            assert {tp.partition: o for tp, o in ends.items()} == {
                p: len(expected[p]) for p in range(partitions)
            }, f"end offsets after round {n}"
        deadline = time.monotonic() + 60
        while len(read) < sum(len(r) for r in rounds) and time.monotonic() < deadline:
            time.sleep(0.2)
        stop.set()
        reader.join(timeout=10)
        assert not reader.is_alive()
        # Nothing more can arrive: the consumer stands at each partition's end offset.
        assert {tp.partition: consumer.position(tp) for tp in tps} == {
            p: len(expected[p]) for p in range(partitions)
        }
    finally:
        stop.set()
        reader.join(timeout=10)
        consumer.close()
    assert len({(p, o) for p, o, _, _ in read}) == len(read), "a record was read twice"
    for p in range(partitions):
        mine = sorted((o, k, v) for q, o, k, v in read if q == p)
        assert [o for o, _, _ in mine] == list(range(len(expected[p])))
        assert [(k, v) for _, k, v in mine] == expected[p]
