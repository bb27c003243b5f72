"""The micro-batch logic with in-memory stand-ins for Kafka, the table and Redis."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoPermissionError, ResponseError

from stream.deadletter import DeadLetter
from stream.events import encode_event
from stream.exceptions import StoreUnavailable
from stream.metrics import StreamMetrics
from stream.processor import BatchProcessor, FatalBatchError, ProcessorConfig, StoreRefusedError
from stream.record import InterestRecord
from stream.rekey import H_ORIGIN, origin_headers, parse_origin, user_partition
from stream.tower import UserTower
from stream.window import decode_window

T0 = 1_700_000_000_000
N = 4
CONFIG = ProcessorConfig(
    clicks_topic="clicks",
    rekey_topic="app-clicks-rekey",
    n_partitions=N,
    max_len=5,
    horizon_ms=10**9,
    max_skew_ms=10**12,
    retry_max_s=0.4,
    shutdown_grace_s=0.0,
)


@dataclass
class Msg:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float = T0 / 1000
    headers: Any = None


@dataclass
class Store:
    data: dict[bytes, bytes] = field(default_factory=dict)
    partitions: dict[bytes, int] = field(default_factory=dict)

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    fail: int = 0  # flushes that fail before one succeeds
    flushed: list[list[bytes]] = field(default_factory=list)
    pending: list[bytes] = field(default_factory=list)

    def set(self, key: bytes, value: bytes, message: Any) -> None:
        self.data[key] = value
        self.partitions[key] = message.partition
        self.pending.append(key)

    async def flush(self) -> None:
        if self.fail:
            self.fail -= 1
            raise StoreUnavailable("broker is down")
        self.flushed.append(self.pending)
        self.pending = []


@dataclass
class Outbox:
    letters: list[DeadLetter] = field(default_factory=list)
    forwarded: list[tuple[bytes, bytes, int, list]] = field(default_factory=list)
    flushes: int = 0

    async def dead_letter(self, letter: DeadLetter) -> None:
        self.letters.append(letter)

    async def forward(self, key: bytes, value: bytes, partition: int, headers: list) -> None:
        self.forwarded.append((key, value, partition, headers))

    async def flush(self) -> None:
        self.flushes += 1


@dataclass
class FakeRedis:
    """Monotonic semantics of stream.record, in memory; fails the first ``fail`` calls."""

    fail: int = 0
    calls: int = 0
    records: dict[str, InterestRecord] = field(default_factory=dict)
    # the error of each failing call (cycled); a connection error by default
    errors: list[Exception] = field(default_factory=list)

    async def __call__(self, records: list[InterestRecord]) -> list[bool]:
        self.calls += 1
        if self.calls <= self.fail:
            if self.errors:
                raise self.errors[(self.calls - 1) % len(self.errors)]
            raise RedisConnectionError("redis is down")
        out = []
        for r in records:
            old = self.records.get(r.user_id)
            ok = old is None or old.seq <= r.seq
            if ok:
                self.records[r.user_id] = r
            out.append(ok)
        return out


def home(user: str) -> int:
    return user_partition(user.encode(), N)


def click(user: str, item: str, ts: int, offset: int, *, key: Any = "user", part=None) -> Msg:
    k = user.encode() if key == "user" else key
    return Msg(
        "clicks", home(user) if part is None else part, offset, k, encode_event(user, item, ts)
    )


def make(tiny_bundle: Path, **kwargs: Any) -> tuple[BatchProcessor, Store, Outbox, FakeRedis]:
    store, outbox, redis = Store(), Outbox(), FakeRedis(**kwargs.pop("redis", {}))
    holder = SimpleNamespace(tower=UserTower.load(tiny_bundle, provider="cpu", threads=1))
    sleeps: list[float] = []

    async def sleep(s: float) -> None:
        sleeps.append(s)

    config = replace(CONFIG, **kwargs.pop("config", {}))
    # time passes only in the processor's sleeps
    kwargs.setdefault("metrics", StreamMetrics())
    processor = BatchProcessor(
        config, holder, store, outbox, redis, sleep=sleep, clock=lambda: sum(sleeps), **kwargs
    )
    processor.sleeps = sleeps  # type: ignore[attr-defined]
    return processor, store, outbox, redis


def run(coro):
    return asyncio.run(coro)


def test_mixed_batch_is_routed_applied_and_written(tiny_bundle: Path) -> None:
    p, store, outbox, redis = make(tiny_bundle)
    wrong = (home("bob") + 1) % N
    batch = [
        click("ann", "i1", T0 + 30, 10),
        click("ann", "i2", T0 + 10, 11),  # late: goes before i1
        Msg("clicks", home("ann"), 12, b"ann", b"not json"),
        click("bob", "i3", T0, 5, key=None, part=wrong),
        click("bob", "i4", T0, 6, part=wrong),
        click("ann", "unknown-item", T0 + 40, 13),
    ]
    outcome = run(p.process(batch))
    assert (outcome.records, outcome.applied, outcome.bad, outcome.rekeyed) == (6, 3, 1, 2)
    assert outcome.users == 1 and outcome.written == 1
    [letter] = outbox.letters
    assert letter.reason == "not_json" and letter.value == b"not json"
    assert letter.source == f"clicks/{home('ann')}/12"
    assert [(k, part) for k, _, part, _ in outbox.forwarded] == [(b"bob", home("bob"))] * 2
    assert parse_origin(outbox.forwarded[0][3])[:3] == ("clicks", wrong, 5)
    window = decode_window(store.data[b"ann"])
    assert window.items == ("i2", "i1", "unknown-item") and window.seq == 3
    assert store.partitions[b"ann"] == home("ann")
    record = redis.records["ann"]
    assert record.seq == 3 and record.items == window.items
    assert record.src == f"clicks/{home('ann')}/13" and record.event_ts == T0 + 40
    [want] = p.holder.tower.compute([window.items])
    assert record.k == want.k == 1 and np.array_equal(record.vectors, want.vectors)
    assert record.model == p.holder.tower.version


def test_forwarded_events_apply_once_by_origin(tiny_bundle: Path) -> None:
    p, store, outbox, redis = make(tiny_bundle)
    wrong = (home("bob") + 1) % N
    run(p.process([click("bob", "i3", T0, 5, key=None, part=wrong)]))
    key, value, part, headers = outbox.forwarded[0]
    forwarded = Msg("app-clicks-rekey", part, 0, key, value, headers=headers)
    again = Msg("app-clicks-rekey", part, 1, key, value, headers=headers)  # forwarded twice
    first = run(p.process([forwarded]))
    second = run(p.process([again]))
    assert (first.applied, second.applied, second.replayed) == (1, 0, 1)
    window = decode_window(store.data[b"bob"])
    assert window.items == ("i3",) and window.offsets == {f"clicks/{wrong}+rekey": 5}
    assert redis.records["bob"].src == f"clicks/{wrong}/5"
    assert second.written == 1  # a replay still rewrites (equal seq)


def test_replayed_batch_changes_nothing_but_rewrites(tiny_bundle: Path) -> None:
    p, store, _, redis = make(tiny_bundle)
    batch = [click("ann", f"i{n}", T0 + n, 100 + n) for n in range(8)]
    run(p.process(batch))
    before = dict(store.data)
    redis.records.clear()  # the write "never happened" before the crash
    outcome = run(p.process(batch[3:]))
    assert (outcome.applied, outcome.replayed, outcome.written) == (0, 5, 1)
    assert store.data == before
    assert redis.records["ann"].seq == 8 and len(redis.records["ann"].items) == 5


def test_redis_outage_is_retried_with_backoff(tiny_bundle: Path) -> None:
    p, _, _, redis = make(tiny_bundle, redis={"fail": 4})
    outcome = run(p.process([click("ann", "i1", T0, 1)]))
    assert outcome.written == 1 and redis.calls == 5
    assert p.sleeps == [0.05, 0.1, 0.2, 0.4]  # doubling, capped at retry_max_s
    assert p.redis_failing_since is None


def test_stopping_while_redis_fails_is_fatal(tiny_bundle: Path) -> None:
    p, _, _, redis = make(tiny_bundle, redis={"fail": 100}, stopping=lambda: True)
    with pytest.raises(FatalBatchError, match="must not be committed"):
        run(p.process([click("ann", "i1", T0, 1)]))
    assert redis.records == {}


def test_a_refused_write_ends_the_batch_after_refused_exit_s(tiny_bundle: Path) -> None:
    denied = NoPermissionError(
        "this user has no permissions to run the 'evalsha' command", status_code="NOPERM"
    )
    p, _, _, redis = make(
        tiny_bundle, redis={"fail": 100, "errors": [denied]}, config={"refused_exit_s": 2.0}
    )
    with pytest.raises(StoreRefusedError, match="NOPERM") as info:
        run(p.process([click("ann", "i1", T0, 1)]))
    assert info.value.exit_code == 78
    assert "MINDSTREAM_REDIS" in str(info.value)
    # the first refusal at time 0, the last one the first at or past 2.0 s
    assert sum(p.sleeps) >= 2.0 > sum(p.sleeps[:-1])
    assert p.refused == {"redis": "NOPERM"} and redis.records == {}


def test_a_transient_error_restarts_the_refused_clock_and_success_clears_it(
    tiny_bundle: Path,
) -> None:
    crossslot = ResponseError("CROSSSLOT Keys in request don't hash to the same slot")
    p, _, _, redis = make(
        tiny_bundle,
        redis={"fail": 12, "errors": [crossslot, crossslot, RedisConnectionError("gone")]},
        config={"refused_exit_s": 0.5},
    )
    outcome = run(p.process([click("ann", "i1", T0, 1)]))
    # refusals 0.4 s apart at most before a transient error: never 0.5 s of them in a row
    assert outcome.written == 1 and redis.calls == 13
    assert p.refused == {} and p.failing_since == {}


def test_unexpected_errors_are_fatal(tiny_bundle: Path) -> None:
    p, store, _, _ = make(tiny_bundle)

    def broken(*args: Any) -> None:
        raise RuntimeError("disk full")

    store.set = broken  # type: ignore[method-assign]
    with pytest.raises(FatalBatchError, match="disk full"):
        run(p.process([click("ann", "i1", T0, 1)]))


def test_rekey_topic_without_origin_and_corrupt_windows(tiny_bundle: Path) -> None:
    p, store, outbox, redis = make(tiny_bundle)
    stray = Msg("app-clicks-rekey", home("ann"), 3, b"ann", encode_event("ann", "i1", T0))
    store.data[b"ann"] = b"{corrupt"
    outcome = run(
        p.process(
            [
                stray,
                Msg(
                    "app-clicks-rekey",
                    home("ann"),
                    4,
                    b"ann",
                    encode_event("ann", "i2", T0),
                    headers=[(H_ORIGIN, b"nonsense")],
                ),
                click("ann", "i5", T0, 9),
            ]
        )
    )
    assert [letter.reason for letter in outbox.letters] == ["bad_origin", "bad_origin"]
    assert outcome.applied == 1 and redis.records["ann"].items == ("i5",)


def test_origin_headers_round_trip() -> None:
    assert parse_origin(origin_headers("clicks.v1", 3, 42, T0)) == ("clicks.v1", 3, 42, T0)


def test_rekeyed_events_arriving_after_direct_ones_are_not_replays(tiny_bundle: Path) -> None:
    """An unkeyed click can land on its user's own partition, then arrive (re-keyed) after
    direct clicks with higher offsets there: it is new, not a replay."""
    p, store, outbox, redis = make(tiny_bundle)
    part = home("ann")
    run(p.process([click("ann", "i1", T0, 10, key=None, part=part)]))
    key, value, _, headers = outbox.forwarded[0]
    run(p.process([click("ann", "i2", T0 + 1, 11)]))
    outcome = run(p.process([Msg("app-clicks-rekey", part, 0, key, value, headers=headers)]))
    assert (outcome.applied, outcome.replayed) == (1, 0)
    assert decode_window(store.data[b"ann"]).items == ("i1", "i2")
    assert redis.records["ann"].seq == 2 and redis.records["ann"].src == f"clicks/{part}/10"


def test_the_table_wins_over_the_decoded_window_cache(tiny_bundle: Path) -> None:
    """After a rebalance or recovery the table can hold another window than the one cached."""
    p, store, _, redis = make(tiny_bundle)
    run(p.process([click("ann", "i1", T0, 1)]))
    cached = store.data[b"ann"]
    other = make(tiny_bundle)[0]
    run(other.process([click("ann", "i7", T0, 1), click("ann", "i8", T0 + 1, 2)]))
    store.data[b"ann"] = other.store.data[b"ann"]
    assert store.data[b"ann"] != cached
    p.offset_guard.reset({("clicks", home("ann")): 3})  # the new assignment starts at 3
    run(p.process([click("ann", "i9", T0 + 2, 3)]))
    assert decode_window(store.data[b"ann"]).items == ("i7", "i8", "i9")
    assert redis.records["ann"].seq == 3


def test_changelog_outage_is_retried_and_fatal_only_when_stopping(tiny_bundle: Path) -> None:
    p, store, _, _ = make(tiny_bundle)
    store.fail = 2
    outcome = run(p.process([click("ann", "i1", T0, 1), click("bob", "i2", T0, 2)]))
    assert outcome.written == 2 and store.flushed == [[b"ann", b"bob"]]
    assert p.sleeps == [0.05, 0.1] and not p.failing_since
    stopping, store2, _, _ = make(tiny_bundle, stopping=lambda: True)
    store2.fail = 100
    with pytest.raises(FatalBatchError, match="changelog"):
        run(stopping.process([click("ann", "i1", T0, 1)]))


def test_a_batch_after_skipped_records_is_refused_before_anything_is_applied(
    tiny_bundle: Path,
) -> None:
    p, store, outbox, redis = make(tiny_bundle)
    part = home("ann")
    p.offset_guard.reset({("clicks", part): 40})
    run(p.process([click("ann", "i1", T0, 40), click("ann", "i2", T0 + 1, 41)]))
    before = dict(store.data)
    with pytest.raises(FatalBatchError, match=rf"clicks\[{part}\] offsets 42\.\.43"):
        run(p.process([click("ann", "i3", T0 + 2, 44)]))
    assert store.data == before and redis.records["ann"].seq == 2 and not outbox.letters
    # replays after a seek back are fine, and so is a topic that really has gaps, if allowed
    run(p.process([click("ann", "i1", T0, 40)]))
    gaps = BatchProcessor(
        replace(CONFIG, allow_offset_gaps=True), p.holder, store, outbox, redis, metrics=p.metrics
    )
    gaps.offset_guard.reset({("clicks", part): 42})
    assert run(gaps.process([click("ann", "i3", T0 + 2, 44)])).applied == 1
