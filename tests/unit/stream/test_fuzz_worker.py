"""Hostile input through the worker's whole batch logic, with crashes, at >= 10,000 events.

Hypothesis generates click logs mixing valid events (keyed, unkeyed, on the wrong partition,
late, unknown items, a flood of one-click users) with hostile records (random bytes, every
entry of the malformed-record catalogue, oversized payloads, JSON nested past the parser's
recursion limit, giant integers, forged re-key records), delivers them to
:class:`stream.processor.BatchProcessor` the way the consumer does (partitions interleaved,
random batch sizes, forwarded records fed back through the re-key topic), and crashes it at
random: between batches (uncommitted batches are delivered again) and inside a batch whose
Redis write fails while the worker is stopping (the FatalBatchError path: windows already in
the changelog, Redis not written, nothing committed).

After the log is drained, whatever happened: the processor never raised anything but the
injected FatalBatchError; every user's window and Redis record equal the definition over the
user's distinct valid events (nothing lost, nothing applied twice); every hostile record has
exactly one dead-letter source (its position) with the expected reason; duplicates of a dead
letter (allowed: dead letters are at-least-once) are byte-identical.

The in-memory Kafka-side stand-ins (table store, outbox, monotonic Redis) are the processor
tests' own (``test_stream_processor``), imported rather than copied.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.malformed import malformed_records
from stream.deadletter import DeadLetter
from stream.events import MAX_EVENT_BYTES, REASONS, encode_event
from stream.metrics import StreamMetrics
from stream.processor import BatchProcessor, FatalBatchError, ProcessorConfig
from stream.rekey import user_partition
from stream.tower import UserTower
from stream.window import decode_window
from tests.unit.stream.test_stream_processor import FakeRedis, Msg, Outbox, Store

N_PARTITIONS = 4
CLICKS = "clicks"
REKEY = "app-clicks-rekey"
MAX_LEN = 6
HORIZON_MS = 400_000
T0 = 1_700_000_000_000
CONFIG = ProcessorConfig(
    clicks_topic=CLICKS,
    rekey_topic=REKEY,
    n_partitions=N_PARTITIONS,
    max_len=MAX_LEN,
    horizon_ms=HORIZON_MS,
    max_skew_ms=300_000,
    retry_max_s=0.01,
    shutdown_grace_s=0.0,
)
USERS = [f"u{n}" for n in range(10)] + ["ü-ñ", "用户-7", "u" * 128, "a b"]
ITEMS = [f"i{n}" for n in range(48)]  # the tiny bundle knows i0..i39: the rest are unknown
CATALOGUE = malformed_records("u1", "i1", T0)
EXAMPLES = 60
MIN_RECORDS = 170  # EXAMPLES * MIN_RECORDS >= 10,000 generated events
MIN_EVENTS = 10_000

# record kinds (first element of a record spec)
VALID_KEYED, VALID_UNKEYED, VALID_WRONG_PARTITION, FLOOD = range(4)
RANDOM_BYTES, CATALOGUED, OVERSIZED, DEEP_NESTING, GIANT_INT, FORGED_REKEY = range(4, 10)
KINDS = st.sampled_from(
    [VALID_KEYED] * 6
    + [VALID_UNKEYED, VALID_WRONG_PARTITION, FLOOD, FLOOD]
    + [RANDOM_BYTES, CATALOGUED, CATALOGUED, OVERSIZED, DEEP_NESTING, GIANT_INT, FORGED_REKEY]
)
# (kind, user, item, ts step, detail) - the detail picks a catalogue entry, a partition, bytes
SPEC = st.tuples(
    KINDS,
    st.integers(0, len(USERS) - 1),
    st.integers(0, len(ITEMS) - 1),
    st.integers(-300, 300),
    st.integers(0, 2**16),
)


@dataclass
class Scenario:
    records: list[tuple[str, int, bytes | None, bytes | None, list]] = field(default_factory=list)
    # per user: (ts, item) of every valid event (ts unique within the scenario)
    valid: dict[str, list[tuple[int, str]]] = field(default_factory=lambda: defaultdict(list))
    # record index -> expected reason (None: any reason) for every hostile record
    hostile: dict[int, str | None] = field(default_factory=dict)


def build(specs: list[tuple[int, int, int, int, int]]) -> Scenario:
    """Records (topic, partition, key, value, headers) in publish order, and the expectations."""
    scenario = Scenario()
    clock = T0
    for n, (kind, u, i, step, detail) in enumerate(specs):
        clock += 1000
        # unique per record, sometimes far in the past (late) or beyond the horizon
        ts = clock + step * 1000 + n % 1000 - (detail % 7 == 0) * 2 * HORIZON_MS
        user, item = USERS[u], ITEMS[i]
        rng = random.Random(detail)
        topic, partition, key, value = CLICKS, 0, None, None
        headers: list[tuple[str, bytes]] = []
        if kind == FLOOD:
            user = f"flood-{len(scenario.records)}-{detail}"
            kind = VALID_KEYED
        if kind in (VALID_KEYED, VALID_UNKEYED, VALID_WRONG_PARTITION):
            value = encode_event(user, item, ts, event="click" if detail % 2 else None)
            home = user_partition(user.encode(), N_PARTITIONS)
            key = None if kind == VALID_UNKEYED else user.encode()
            if kind == VALID_KEYED:
                partition = home
            elif kind == VALID_WRONG_PARTITION:
                partition = (home + 1 + detail % (N_PARTITIONS - 1)) % N_PARTITIONS
            else:
                partition = detail % N_PARTITIONS
            scenario.valid[user].append((ts, item))
        else:
            partition = detail % N_PARTITIONS
            expected: str | None = None
            if kind == RANDOM_BYTES:
                key = rng.choice([None, b"", rng.randbytes(rng.randrange(1, 12))])
                value = rng.randbytes(rng.randrange(0, 600))
            elif kind == CATALOGUED:
                _, key, value, expected = CATALOGUE[detail % len(CATALOGUE)]
            elif kind == OVERSIZED:
                key = user.encode()
                pad = "c" * (MAX_EVENT_BYTES + rng.randrange(1, 50_000))
                value = json.dumps(
                    {"user_id": user, "item_id": item, "ts": ts, "category": pad}
                ).encode()
                expected = "too_large"
            elif kind == DEEP_NESTING:
                key = user.encode()
                depth = 1500 + detail % 500  # past json's recursion limit, under 4096 bytes
                value = b"[" * depth + b"]" * depth
                # not_json past the recursion limit; hypothesis raises that limit while it runs
                expected = "not_json|not_object"
            elif kind == GIANT_INT:
                key = user.encode()
                digits = "9" * (3000 + detail % 800)  # the whole value stays under 4096 bytes
                value = f'{{"user_id":"{user}","item_id":"{item}","ts":{digits}}}'.encode()
                expected = "ts_out_of_range"
            else:  # FORGED_REKEY: a valid-looking click on the re-key topic with no origin
                topic, key = REKEY, user.encode()
                partition = user_partition(key, N_PARTITIONS)
                value = encode_event(user, item, ts)
                expected = "bad_origin"
            scenario.hostile[len(scenario.records)] = expected
        scenario.records.append((topic, partition, key, value, headers))
    return scenario


@dataclass
class Broker:
    """Partition logs with a consumer position and a committed offset each."""

    logs: dict[tuple[str, int], list[Msg]] = field(default_factory=lambda: defaultdict(list))
    position: dict[tuple[str, int], int] = field(default_factory=lambda: defaultdict(int))
    committed: dict[tuple[str, int], int] = field(default_factory=lambda: defaultdict(int))

    def append(
        self, topic: str, partition: int, key: bytes | None, value: bytes | None, headers: list
    ) -> Msg:
        log = self.logs[(topic, partition)]
        msg = Msg(topic, partition, len(log), key, value, T0 / 1000, list(headers))
        log.append(msg)
        return msg

    def pending(self) -> list[tuple[str, int]]:
        return [tp for tp, log in self.logs.items() if self.position[tp] < len(log)]

    def take(self, rng: random.Random, size: int) -> list[Msg]:
        """Up to ``size`` records, partitions interleaved at random, each in offset order."""
        batch: list[Msg] = []
        while len(batch) < size and (tps := self.pending()):
            tp = rng.choice(tps)
            batch.append(self.logs[tp][self.position[tp]])
            self.position[tp] += 1
        return batch

    def commit(self) -> None:
        self.committed = defaultdict(int, self.position)

    def rewind(self) -> None:
        self.position = defaultdict(int, self.committed)


@dataclass
class Totals:
    examples: int = 0
    events: int = 0
    batches: int = 0
    crashes: int = 0
    fatal: int = 0
    dead_letters: int = 0


def drain(
    tower: UserTower, scenario: Scenario, rng: random.Random, totals: Totals
) -> tuple[Broker, Store, Outbox, FakeRedis, dict[int, Msg]]:
    broker = Broker()
    positions = {
        n: broker.append(*record) for n, record in enumerate(scenario.records)
    }  # publish order
    store, outbox, redis = Store(), Outbox(), FakeRedis()
    holder = SimpleNamespace(tower=tower)

    async def no_sleep(_: float) -> None:
        return None

    def new_processor(stopping: bool) -> BatchProcessor:
        return BatchProcessor(
            CONFIG,
            holder,
            store,
            outbox,
            redis,  # type: ignore[arg-type]
            metrics=StreamMetrics(),
            stopping=lambda: stopping,
            sleep=no_sleep,
        )

    async def run() -> None:
        processor = new_processor(False)
        forwarded = 0
        while broker.pending():
            batch = broker.take(rng, rng.choice([1, 3, 17, 64, 200]))
            crash_inside = rng.random() < 0.08
            if crash_inside:
                # Redis fails on this batch's write while the worker is stopping.
                processor = new_processor(True)
                redis.fail = redis.calls + 1
            try:
                outcome = await processor.process(batch)
            except FatalBatchError:
                assert crash_inside, "FatalBatchError without an injected failure"
                totals.fatal += 1
                redis.fail = 0
                broker.rewind()
                processor = new_processor(False)
                # what was forwarded before the crash stays on the re-key topic (at least once)
            else:
                # only a batch without valid events skips the failing Redis write
                assert not crash_inside or outcome.users == 0
                if crash_inside:
                    redis.fail = 0
                    processor = new_processor(False)
                assert (
                    outcome.applied + outcome.replayed + outcome.bad + outcome.rekeyed
                    == outcome.records
                    == len(batch)
                )
                if rng.random() < 0.6:
                    broker.commit()
                if rng.random() < 0.1:  # crash between batches: uncommitted ones come again
                    totals.crashes += 1
                    broker.rewind()
                    processor = new_processor(False)
            totals.batches += 1
            for key, value, partition, headers in outbox.forwarded[forwarded:]:
                broker.append(REKEY, partition, key, value, headers)
            forwarded = len(outbox.forwarded)

    asyncio.run(run())
    return broker, store, outbox, redis, positions


def check(
    scenario: Scenario, store: Store, outbox: Outbox, redis: FakeRedis, positions: dict[int, Msg]
) -> None:
    # every user: window and record equal the definition over their distinct valid events
    for user, events in scenario.valid.items():
        ordered = sorted(events)
        newest = ordered[-1][0]
        want = [item for ts, item in ordered if ts >= newest - HORIZON_MS][-MAX_LEN:]
        raw = store.data.get(user.encode())
        assert raw is not None, user
        window = decode_window(raw)
        assert list(window.items) == want, user
        assert window.seq == len(events), (user, window.seq, len(events))
        record = redis.records[user]
        assert list(record.items) == want and record.seq == len(events), user
        assert record.n_behaviours == len(want)
        assert record.vectors.shape == (record.k, record.dim)
        assert np.isfinite(record.vectors).all()
    assert set(redis.records) == set(scenario.valid)
    # dead letters: exactly the hostile records, by position, with their reasons
    by_source: dict[str, list[DeadLetter]] = defaultdict(list)
    for letter in outbox.letters:
        by_source[letter.source].append(letter)
    expected_sources = {}
    for n, reason in scenario.hostile.items():
        m = positions[n]
        expected_sources[f"{m.topic}/{m.partition}/{m.offset}"] = (m, reason)
    assert set(by_source) == set(expected_sources)
    for source, letters in by_source.items():
        m, reason = expected_sources[source]
        first = letters[0]
        assert (first.key, first.value) == (m.key, m.value), source
        assert first.reason in REASONS
        assert reason is None or first.reason in reason.split("|"), (source, first.reason, reason)
        # a replayed bad record is dead-lettered again, identical but for the detail text
        assert all(
            (x.key, x.value, x.reason, x.source) == (first.key, first.value, first.reason, source)
            for x in letters[1:]
        ), source


@pytest.fixture(scope="module")
def tower(tiny_bundle: Path) -> UserTower:
    return UserTower.load(tiny_bundle, provider="cpu", threads=1)


def test_fuzz_hostile_logs_with_crashes(tower: UserTower) -> None:
    totals = Totals()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        specs=st.lists(SPEC, min_size=MIN_RECORDS, max_size=MIN_RECORDS + 80),
        seed=st.integers(0, 2**32 - 1),
    )
    def scenario(specs: list[tuple[int, int, int, int, int]], seed: int) -> None:
        built = build(specs)
        _, store, outbox, redis, positions = drain(tower, built, random.Random(seed), totals)
        check(built, store, outbox, redis, positions)
        totals.examples += 1
        totals.events += len(built.records)
        totals.dead_letters += len(outbox.letters)

    scenario()
    # every run puts at least 10,000 generated events through the worker logic
    assert totals.examples >= EXAMPLES
    assert totals.events >= MIN_EVENTS, dataclasses.asdict(totals)
    assert totals.crashes > 0 and totals.fatal > 0, dataclasses.asdict(totals)
