"""Precompute: records written by the stream's writer get their candidates stored in Redis,
equal to the brute-force merge; updates refresh them; older input never replaces newer."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import redis
import redis.asyncio
from redis.crc import key_slot

from benchmarks.catalogue import write_catalogue_bundle
from infra.launch import ServiceRecord
from infra.redis_cluster import slot_ranges, wait_cluster_ok
from mindstream.redis_config import RedisConfigError, async_redis_client
from mindstream.redis_config import redis_client as sync_redis_client
from mindstream.settings import Settings
from model_export.bundle import load_bundle
from recall.exceptions import RecallError
from recall.precompute import (
    TOPOLOGY_CHECK_S,
    Precomputer,
    candidates_key,
    merged_event_flags,
    precompute_forever,
    user_of_record_key,
)
from recall.registry import IndexRegistry
from stream.record import InterestRecord, now_ms, record_key, write_records

pytestmark = pytest.mark.integration
DIM = 8
MASTERS = 3


def record(user_id, vectors, model, seq=1, items=()):
    vectors = np.asarray(vectors, np.float32)
    return InterestRecord(
        user_id,
        vectors,
        len(vectors),
        vectors.shape[1],
        model,
        seq,
        now_ms(),
        len(items),
        seq,
        "c/0/1",
        tuple(items),
    )


def expected(embeddings, vectors, n, exclude=()):
    scores = np.asarray(vectors, np.float32) @ embeddings.T
    best = scores.max(0)
    rows = [r for r in np.argsort(-best, kind="stable") if f"i{r}" not in exclude][:n]
    return [(f"i{r}", int(scores[:, r].argmax())) for r in rows]


@pytest.fixture
def setup(service_settings: Settings, redis_prefix, redis_client, tmp_path: Path):
    settings = dataclasses.replace(
        service_settings, redis_prefix=redis_prefix, data_dir=str(tmp_path), recall_default_n=10
    )
    embeddings = np.random.default_rng(0).standard_normal((500, DIM)).astype(np.float32)
    bundle = load_bundle(write_catalogue_bundle(tmp_path / "bundles", embeddings))
    registry = IndexRegistry(settings)
    registry.load(bundle.path)
    before = redis_client.config_get("notify-keyspace-events")["notify-keyspace-events"]
    yield settings, registry, bundle
    redis_client.config_set("notify-keyspace-events", before)


async def wait_for(fn, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


def stored(redis_client, prefix, user_id):
    fields = redis_client.hgetall(candidates_key(prefix, user_id))
    if not fields:
        return None
    return {k.decode(): v.decode() for k, v in fields.items()}


async def test_updates_are_precomputed_and_caught_up(setup, redis_client):
    settings, registry, bundle = setup
    prefix = settings.redis_prefix
    rng = np.random.default_rng(1)
    early = rng.standard_normal((2, DIM))
    # Written while precompute is down: only the --full catch-up can see it.
    write_records(redis_client, prefix, [record("early", early, bundle.version)])
    client = redis.asyncio.Redis.from_url(settings.redis_url)
    precomputer = Precomputer(settings, registry, client)
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(precomputer.run(stop, full=True, ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        got = stored(redis_client, prefix, "early")
        assert got is not None and got["model"] == bundle.version and got["seq"] == "1"
        assert got["diversity"] == "0.0" and got["exclude_seen"] == "1"
        assert [(c["item_id"], c["interest"]) for c in json.loads(got["candidates"])] == expected(
            bundle.item_embeddings, early, 10
        )
        assert 0 < redis_client.ttl(candidates_key(prefix, "early")) <= 7 * 24 * 3600

        users = {f"u{{{i}}}": rng.standard_normal((1 + i % 3, DIM)) for i in range(5)}
        write_records(
            redis_client,
            prefix,
            [record(u, v, bundle.version, items=["i1", "i2"]) for u, v in users.items()]
            + [record("other-model", users["u{0}"], "mind-notloaded000000000")]
            # Vectors of another dimension than the model's: fails alone, counted, not stored.
            + [record("wrongdim", rng.standard_normal((2, DIM + 3)), bundle.version)],
        )
        for user_id, vectors in users.items():
            got = await wait_for(lambda u=user_id: stored(redis_client, prefix, u))
            candidates = json.loads(got["candidates"])
            assert [(c["item_id"], c["interest"]) for c in candidates] == expected(
                bundle.item_embeddings, vectors, 10, {"i1", "i2"}
            )
            scores = [c["score"] for c in candidates]
            assert scores == sorted(scores, reverse=True)

        newer = rng.standard_normal((3, DIM))
        write_records(redis_client, prefix, [record("u{0}", newer, bundle.version, seq=5)])
        got = await wait_for(
            lambda: (s := stored(redis_client, prefix, "u{0}")) and s["seq"] == "5" and s
        )
        assert [(c["item_id"], c["interest"]) for c in json.loads(got["candidates"])] == expected(
            bundle.item_embeddings, newer, 10
        )
        await wait_for(lambda: precomputer.total.model_unavailable >= 1)
        assert stored(redis_client, prefix, "other-model") is None
        await wait_for(lambda: precomputer.total.bad_records >= 1)
        assert stored(redis_client, prefix, "wrongdim") is None
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await client.aclose()


async def test_older_input_never_replaces_newer_candidates(setup, redis_client):
    settings, registry, bundle = setup
    prefix = settings.redis_prefix
    write_records(redis_client, prefix, [record("u", np.ones((1, DIM)), bundle.version, seq=3)])
    redis_client.hset(candidates_key(prefix, "u"), mapping={"seq": "9", "candidates": "[]"})
    client = redis.asyncio.Redis.from_url(settings.redis_url)
    try:
        stats = await Precomputer(settings, registry, client).refresh(["u", "missing"])
        assert (stats.written, stats.stale, stats.not_found) == (0, 1, 1)
        assert stored(redis_client, prefix, "u")["seq"] == "9"
        redis_client.hset(candidates_key(prefix, "u"), "seq", "3")
        stats = await Precomputer(settings, registry, client, n=3).refresh(["u"])
        assert stats.written == 1
        got = stored(redis_client, prefix, "u")
        assert len(json.loads(got["candidates"])) == 3 and got["n"] == "3"
    finally:
        await client.aclose()


def test_key_parsing_and_event_flags():
    assert user_of_record_key("mind:", "mind:u:{a{b}}") == "a{b}"
    assert user_of_record_key("mind:", "mind:c:{a}") is None
    assert user_of_record_key("mind:", "mind:u:{}") is None
    assert merged_event_flags("") == "Kh"
    assert merged_event_flags("Ex") == "ExKh"
    assert merged_event_flags("KA") == "KA"


def _master_of(key: str) -> int:
    """The master (0..2) whose slots hold ``key`` in a cluster as ``start_cluster`` forms it."""
    slot = key_slot(key.encode())
    return next(i for i, (low, high) in enumerate(slot_ranges(MASTERS)) if low <= slot <= high)


@pytest.mark.slow
async def test_cluster_precompute_listens_on_every_primary_and_follows_a_failover(
    service_settings: Settings,
    redis_cluster: list[ServiceRecord],
    redis_prefix: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """On a 3-master cluster whose nodes start without keyspace notifications: precompute sets
    them on every primary, catches up, and stores the candidates of users on every master as
    their records are written. A graceful failover (the old master's connection stays open) is
    seen by the periodic re-read of the primaries; a SIGKILLed master by its lost subscription.
    Either way precompute sets the flags on the promoted replica, resubscribes on the new
    primaries, catches up, and then follows the promoted node's notifications. A user without
    CONFIG rights gets an error naming the node and the flags to set; cluster mode against a
    setting that says otherwise is refused at start."""
    caplog.set_level(logging.INFO, logger="recall.precompute")
    first = redis_cluster[0]
    settings = dataclasses.replace(
        service_settings,
        redis_url=f"redis://{first.host}:{first.port}/0",
        redis_cluster=True,
        redis_prefix=redis_prefix,
        data_dir=str(tmp_path),
        recall_default_n=10,
    )
    settings.validate()
    embeddings = np.random.default_rng(0).standard_normal((500, DIM)).astype(np.float32)
    bundle = load_bundle(write_catalogue_bundle(tmp_path / "bundles", embeddings))
    registry = IndexRegistry(settings)
    registry.load(bundle.path)
    nodes = [redis.Redis(host=r.host, port=r.port, socket_timeout=5) for r in redis_cluster]
    for node in nodes:
        node.config_set("notify-keyspace-events", "")
    sync = sync_redis_client(settings)
    rng = np.random.default_rng(2)

    def stored_in_cluster(user_id: str) -> dict[str, str] | None:
        return stored(sync, settings.redis_prefix, user_id)

    def logged(text: str) -> int:
        return sum(text in r.getMessage() for r in caplog.records)

    async def write_and_expect(vectors: dict[str, np.ndarray], seq: int, timeout: float) -> None:
        """Write these users' records at ``seq``; each one's candidates follow."""
        write_records(
            sync, redis_prefix, [record(u, v, bundle.version, seq=seq) for u, v in vectors.items()]
        )
        for user_id, user_vectors in vectors.items():
            got = await wait_for(
                lambda u=user_id: (s := stored_in_cluster(u)) and s["seq"] == str(seq) and s,
                timeout=timeout,
            )
            assert [(c["item_id"], c["interest"]) for c in json.loads(got["candidates"])] == (
                expected(bundle.item_embeddings, user_vectors, 10)
            )

    # Users on every master: 30 hash tags spread over the three slot ranges.
    users = {f"cu{i}": rng.standard_normal((1 + i % 3, DIM)) for i in range(30)}
    on_master = {u: _master_of(record_key(redis_prefix, u)) for u in users}
    assert set(on_master.values()) == {0, 1, 2}
    early = rng.standard_normal((2, DIM))
    write_records(sync, redis_prefix, [record("early", early, bundle.version)])

    client = async_redis_client(settings)
    precomputer = Precomputer(settings, registry, client)
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(precomputer.run(stop, full=True, ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 30)
        for node in nodes[:MASTERS]:
            assert set(node.config_get("notify-keyspace-events")["notify-keyspace-events"]) == {
                "K",
                "h",
            }
        got = stored_in_cluster("early")
        assert got is not None and [
            (c["item_id"], c["interest"]) for c in json.loads(got["candidates"])
        ] == expected(bundle.item_embeddings, early, 10)

        write_records(sync, redis_prefix, [record(u, v, bundle.version) for u, v in users.items()])
        for user_id, vectors in users.items():
            got = await wait_for(lambda u=user_id: stored_in_cluster(u), timeout=20)
            assert [(c["item_id"], c["interest"]) for c in json.loads(got["candidates"])] == (
                expected(bundle.item_embeddings, vectors, 10)
            )

        # A graceful failover keeps the old master's connection open but moves its slots: the
        # periodic re-read of the primaries sees it, and precompute resubscribes.
        promoted0 = nodes[MASTERS]
        promoted0.execute_command("CLUSTER FAILOVER")
        while promoted0.info("replication")["role"] != "master":
            await asyncio.sleep(0.05)
        await asyncio.to_thread(wait_cluster_ok, redis_cluster, timeout_s=60)
        await wait_for(lambda: logged("primaries changed"), timeout=3 * TOPOLOGY_CHECK_S)
        # Written once the new subscriptions and their catch-up are done: only a notification
        # from the promoted node can refresh these users now.
        await wait_for(lambda: logged("precompute full refresh") == 2)
        moved = {u: rng.standard_normal((1, DIM)) for u in users if on_master[u] == 0}
        await write_and_expect(moved, seq=3, timeout=20)

        victim, replica = redis_cluster[1], nodes[1 + MASTERS]
        os.kill(victim.process.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        while replica.info("replication")["role"] != "master":
            assert time.monotonic() - killed_at < 60, "the replica was not promoted"
            await asyncio.sleep(0.05)
        await asyncio.to_thread(
            wait_cluster_ok, [r for r in redis_cluster if r is not victim], timeout_s=60
        )
        await wait_for(lambda: logged("precompute full refresh") == 3, timeout=30)
        sync.close()
        sync = sync_redis_client(settings)
        newer = {u: rng.standard_normal((2, DIM)) for u in users}
        await write_and_expect(newer, seq=5, timeout=30)
        messages = [r.getMessage() for r in caplog.records]
        assert any(f"node={victim.host}:{victim.port}" in m for m in messages), messages
        listening = [m for m in messages if m.startswith("precompute listening")]
        promoted = f"{redis_cluster[1 + MASTERS].host}:{redis_cluster[1 + MASTERS].port}"
        assert promoted in listening[-1] and f":{victim.port}" not in listening[-1], listening
        assert set(replica.config_get("notify-keyspace-events")["notify-keyspace-events"]) == {
            "K",
            "h",
        }
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
        await client.aclose()
        sync.close()

    # A user the nodes refuse CONFIG to: a clear error, naming the node and the flags.
    for node in nodes[:1] + nodes[2:]:
        node.acl_setuser(
            "precompute", enabled=True, passwords=["+pw"], keys=["*"], channels=["*"],
            commands=["+@all", "-config"],
        )  # fmt: skip
    limited = dataclasses.replace(
        settings, redis_url=f"redis://precompute:pw@{first.host}:{first.port}/0"
    )
    client = async_redis_client(limited)
    try:
        with pytest.raises(RecallError, match=r"notify-keyspace-events Kh.*every node"):
            await Precomputer(limited, registry, client).run(asyncio.Event())
    finally:
        await client.aclose()
        for node in nodes:
            node.close()
    # A cluster node without cluster mode set: refused at start, naming the setting.
    with pytest.raises(RedisConfigError, match="MINDSTREAM_REDIS_CLUSTER=true"):
        await precompute_forever(
            dataclasses.replace(settings, redis_cluster=False),
            registry,
            full=False,
            n=None,
            exclude_seen=True,
        )


async def test_cluster_mode_against_a_single_redis_is_refused(setup) -> None:
    settings, registry, _ = setup
    with pytest.raises(RedisConfigError, match="MINDSTREAM_REDIS_CLUSTER"):
        await precompute_forever(
            dataclasses.replace(settings, redis_cluster=True),
            registry,
            full=False,
            n=None,
            exclude_seen=True,
        )
