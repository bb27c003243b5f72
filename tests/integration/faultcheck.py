"""The sustained, partly malformed click stream that the fault tests offer, and the checks
after a fault: every record equals the batch recompute, lost = 0, duplicated = 0, applied +
dead-lettered = published, each dead letter at its catalogued source with its reason (see
test_faults.py for the whole method). Shared by the worker, Kafka cluster and Redis Cluster
fault tests.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from benchmarks.harness import Record, WorkerProcess, read_dead_letters
from benchmarks.malformed import malformed_records
from mindstream.settings import Settings
from stream.deadletter import DeadLetter
from stream.record import read_many
from tests.integration.streamcheck import (
    UNKEYED_EVERY,
    Report,
    assert_equal_to_batch_recompute,
    click_records,
    expected_windows,
    wait_for_records,
)

FAULT_RATE = 200  # events/s offered while faults are injected
BAD_EVERY = 53  # one malformed record every 53 records
N_USERS = 150
N_ITEMS = 300  # the bundle knows i1..i260


# --- the sustained stream --------------------------------------------------------------------


@dataclasses.dataclass
class ClickLog:
    """What is published, in order, and what the worker must make of it."""

    good: list[dict[str, Any]]  # valid events, in publish order
    records: list[Record]  # every record, good and bad, in publish order
    bad: dict[int, str]  # record index -> catalogued reason of a malformed record
    unkeyed: int = 0  # valid clicks sent without a key (re-keyed by the worker)

    @property
    def published(self) -> int:
        return len(self.records)


def click_log(n_good: int, seed: int, unkeyed_every: int = UNKEYED_EVERY) -> ClickLog:
    """``n_good`` valid clicks over ``N_USERS`` users with unique, partly out-of-order event
    times spanning more than the window horizon, and a malformed record every BAD_EVERY.

    Every ``unkeyed_every``-th click is sent without a key, so it travels through the re-key
    topic (0: all keyed)."""
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    base = now - 500 * n_good - 60_000
    weights = [1.0 / (u + 1) ** 0.5 for u in range(N_USERS)]
    users = rng.choices([f"u{u}" for u in range(N_USERS)], weights=weights, k=n_good)
    good = []
    for n, user in enumerate(users):
        late = rng.randrange(400) if rng.random() < 0.2 else 0
        # 500 ms apart, unique: n - late repeats only within 400 of n, n % 487 then differs
        ts = base + 500 * (n - late) + n % 487
        good.append(
            {
                "user_id": user,
                "item_id": f"i{rng.randrange(1, N_ITEMS + 1)}",
                "ts": ts,
                "event": rng.choice(["click", "view", "cart"]),
                "category": None,
            }
        )
    catalogue = malformed_records("u1", "i1", now - 1000)
    records: list[Record] = []
    bad: dict[int, str] = {}
    for record in click_records(good, unkeyed_every):
        if len(records) % BAD_EVERY == BAD_EVERY - 1:
            _, key, value, reason = catalogue[len(bad) % len(catalogue)]
            bad[len(records)] = reason
            records.append((key, value))
        records.append(record)
    unkeyed = len(range(0, len(good), unkeyed_every)) if unkeyed_every else 0
    return ClickLog(good, records, bad, unkeyed)


# --- checks and figures ----------------------------------------------------------------------


def dead_letters(
    settings: Settings, n_bad: int, unique_name: Callable[[str], str]
) -> list[DeadLetter]:
    """Every dead letter; re-read when at-least-once duplicates hid a distinct one."""
    want = n_bad
    letters: list[DeadLetter] = []
    for _ in range(4):
        letters = read_dead_letters(settings, want, group_id=unique_name("dlq"), timeout_s=30)
        distinct = len({letter.source for letter in letters})
        if distinct >= n_bad or len(letters) < want:
            break
        want = len(letters) + n_bad - distinct
    return letters


def verify(
    name: str,
    settings: Settings,
    client: redis.Redis,
    log: ClickLog,
    positions: list[tuple[int, int]],
    bundle: Path,
    unique_name: Callable[[str], str],
    worker: WorkerProcess,
    faults: dict[str, Any],
    report: Report,
) -> dict[str, Any]:
    """Wait for the catch-up, compute the figures, report them, then assert on them."""
    expected = expected_windows(log.good)
    started = time.monotonic()
    records = wait_for_records(settings, client, expected, worker=worker)
    catch_up_s = time.monotonic() - started
    users = sorted(expected)
    stored = read_many(client, settings.redis_prefix, users)
    seqs = {u: (r.seq if r else 0) for u, r in zip(users, stored, strict=True)}
    lost = sum(max(0, expected[u][1] - seqs[u]) for u in users)
    duplicated = sum(max(0, seqs[u] - expected[u][1]) for u in users)
    wrong_windows = sum(
        1 for u, r in zip(users, stored, strict=True) if r is None or r.items != expected[u][0]
    )
    letters = dead_letters(settings, len(log.bad), unique_name)
    sources = {letter.source for letter in letters}
    want_sources = {
        f"{settings.clicks_topic}/{positions[i][0]}/{positions[i][1]}": reason
        for i, reason in log.bad.items()
    }
    metrics = worker.metrics()
    figures: dict[str, Any] = {
        "test": name,
        "faults": faults,
        "published": log.published,
        "valid": len(log.good),
        "malformed": len(log.bad),
        "unkeyed_rekeyed": log.unkeyed,
        "users": len(users),
        "applied": sum(r.seq for r in records.values()),
        "dead_lettered": len(sources),
        "dead_letter_records": len(letters),
        "dead_letter_duplicates": len(letters) - len(sources),
        "lost": lost,
        "duplicated": duplicated,
        "users_with_wrong_window": wrong_windows,
        "replayed_after_restarts_last_worker": metrics.get(
            "mindstream_stream_events_replayed_total", 0.0
        ),
        "catch_up_after_stream_s": round(catch_up_s, 1),
        "rate_offered_per_s": FAULT_RATE,
    }
    report(name, figures)
    assert lost == 0 and duplicated == 0 and wrong_windows == 0, figures
    assert figures["applied"] + figures["dead_lettered"] == log.published, figures
    assert sources == set(want_sources), figures
    for letter in letters:
        assert letter.reason == want_sources[letter.source], letter
    assert_equal_to_batch_recompute(bundle, records, expected)
    return figures
