"""The plumbing everything else stands on: partitioned keyed topics, consumer groups that resume
exactly where they committed, and Redis hashes that keep float32 vectors bit for bit.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from collections.abc import Callable

import numpy as np
import pytest
import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from mindstream.kafka_config import kafka_python_consumer_kwargs, kafka_python_producer_kwargs
from mindstream.settings import Settings

pytestmark = pytest.mark.integration

PARTITIONS = 4
N_EVENTS = 10_000
N_USERS = 500
FIRST_RUN = 5_000  # the first consumer stops after this many records
DEADLINE_S = 60.0

# (partition, offset, key, per-user sequence number)
Position = tuple[int, int, bytes, int]


def _event(i: int) -> tuple[bytes, bytes]:
    user = f"u{i % N_USERS}"
    seq = i // N_USERS
    value = {
        "user_id": user,
        "item_id": f"i{i * 7919 % 10_007}",
        "ts": 1_700_000_000_000 + i,
        "seq": seq,
    }
    return user.encode(), json.dumps(value, separators=(",", ":")).encode()


def _produce(settings: Settings, topic: str) -> list[Position]:
    producer = KafkaProducer(
        **kafka_python_producer_kwargs(settings, client_id="plumbing-producer")
    )
    try:
        futures = []
        for i in range(N_EVENTS):
            key, value = _event(i)
            futures.append((key, i // N_USERS, producer.send(topic, key=key, value=value)))
        producer.flush(timeout=DEADLINE_S)
        sent = [(key, seq, future.get(10)) for key, seq, future in futures]
        return [(meta.partition, meta.offset, key, seq) for key, seq, meta in sent]
    finally:
        producer.close(timeout=10)


def _consumer(settings: Settings, topic: str, group_id: str) -> KafkaConsumer:
    consumer = KafkaConsumer(
        **kafka_python_consumer_kwargs(settings, group_id=group_id, client_id="plumbing-consumer"),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=1_000,
    )
    consumer.subscribe([topic])
    return consumer


def _read(
    consumer: KafkaConsumer,
    done: Callable[[list[Position], dict[TopicPartition, int]], bool],
    start: dict[TopicPartition, int],
) -> tuple[list[Position], dict[TopicPartition, int]]:
    """Process records one by one until ``done``; return them and the offsets to commit.

    ``done`` sees the processed records and, per partition, the offset after the last one
    processed (``start`` before any), never the consumer's position: poll() moves that past
    records this loop may not process.
    """
    taken: list[Position] = []
    next_offsets = dict(start)
    deadline = time.monotonic() + DEADLINE_S
    while not done(taken, next_offsets):
        assert time.monotonic() < deadline, f"stuck after {len(taken)} records"
        for tp, records in consumer.poll(timeout_ms=200).items():
            for record in records:
                if done(taken, next_offsets):
                    break  # the rest of this batch is not processed, so not committed
                seq = json.loads(record.value)["seq"]
                taken.append((record.partition, record.offset, record.key, seq))
                next_offsets[tp] = record.offset + 1
    return taken, next_offsets


def _commit(consumer: KafkaConsumer, next_offsets: dict[TopicPartition, int]) -> None:
    consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in next_offsets.items()})


def test_consumer_group_resumes_without_loss_or_repeat(
    integration_settings: Settings, unique_topic: Callable[..., str], group_id: str
) -> None:
    settings = integration_settings
    topic = unique_topic("plumbing", PARTITIONS)
    produced = _produce(settings, topic)
    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]

    by_partition: dict[int, list[int]] = defaultdict(list)
    for partition, offset, _, _ in produced:
        by_partition[partition].append(offset)
    assert sorted(by_partition) == list(range(PARTITIONS)), "every partition gets keys"
    key_partitions = defaultdict(set)
    for partition, _, key, _ in produced:
        key_partitions[key].add(partition)
    assert all(len(p) == 1 for p in key_partitions.values()), "one key, one partition"

    first = _consumer(settings, topic, group_id)
    try:
        # The broker's end offsets must count every record: on Tansu this holds only with one
        # record per producer batch, which the local profile's producer options give.
        expected_end = {tp: len(by_partition[tp.partition]) for tp in partitions}
        assert first.end_offsets(partitions) == expected_end
        run1, commit1 = _read(first, lambda taken, _: len(taken) >= FIRST_RUN, start={})
        _commit(first, commit1)
    finally:
        first.close(autocommit=False)
    assert len(run1) == FIRST_RUN

    second = _consumer(settings, topic, group_id)
    try:
        run2, commit2 = _read(
            second,
            lambda _, processed: all(processed.get(tp, 0) >= expected_end[tp] for tp in partitions),
            start=commit1,
        )
        _commit(second, commit2)
        committed = {tp: second.committed(tp) for tp in partitions}
    finally:
        second.close(autocommit=False)
    assert committed == expected_end

    # Nothing lost, nothing repeated.
    consumed = run1 + run2
    assert len(consumed) == N_EVENTS
    assert Counter((p, o) for p, o, _, _ in consumed) == Counter((p, o) for p, o, _, _ in produced)
    assert set(consumed) == set(produced)
    # Per partition, the two runs together read every offset once, in order.
    for partition, offsets in by_partition.items():
        assert [o for p, o, _, _ in consumed if p == partition] == sorted(offsets)
    # Per user, events arrive in the order they were produced.
    seqs: dict[bytes, list[int]] = defaultdict(list)
    for _, _, key, seq in consumed:
        seqs[key].append(seq)
    assert all(s == list(range(N_EVENTS // N_USERS)) for s in seqs.values())


def _special_floats() -> np.ndarray:
    """Values a careless codec would change: NaN payloads, -0.0, infinities, subnormals."""
    bits = np.array(
        [0x7FC00001, 0xFFC12345, 0x7F800001, 0x80000000, 0x7F800000, 0xFF800000, 0x00000001,
         0x807FFFFF, 0x7F7FFFFF, 0x3F800000],
        dtype="<u4",
    )  # fmt: skip
    return bits.view("<f4")


def test_redis_hashes_keep_float32_vectors_bit_exact(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    rng = np.random.default_rng(7)
    users, k, dim = 2_000, 4, 64
    vectors = rng.standard_normal((users, k * dim)).astype("<f4")
    vectors[0, : len(_special_floats())] = _special_floats()
    keys = [f"{redis_prefix}u{i}" for i in range(users)]

    pipe = redis_client.pipeline(transaction=False)
    for key, vector in zip(keys, vectors, strict=True):
        pipe.hset(key, mapping={"v": vector.tobytes(), "k": k, "dim": dim})
    pipe.execute()

    pipe = redis_client.pipeline(transaction=False)
    for key in keys:
        pipe.hgetall(key)
    records = pipe.execute()

    for vector, record in zip(vectors, records, strict=True):
        assert record[b"k"] == str(k).encode() and record[b"dim"] == str(dim).encode()
        assert record[b"v"] == vector.tobytes()
        decoded = np.frombuffer(record[b"v"], dtype="<f4").reshape(k, dim)
        np.testing.assert_array_equal(decoded.view("<u4").ravel(), vector.view("<u4"))
    assert np.frombuffer(records[0][b"v"], "<f4")[:3].view("<u4").tolist() == [
        0x7FC00001,
        0xFFC12345,
        0x7F800001,
    ]
