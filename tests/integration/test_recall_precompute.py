"""Precompute: records written by the stream's writer get their candidates stored in Redis,
equal to the brute-force merge; updates refresh them; older input never replaces newer."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pytest
import redis.asyncio

from benchmarks.catalogue import write_catalogue_bundle
from mindstream.settings import Settings
from model_export.bundle import load_bundle
from recall.precompute import (
    Precomputer,
    candidates_key,
    merged_event_flags,
    user_of_record_key,
)
from recall.registry import IndexRegistry
from stream.record import InterestRecord, now_ms, write_records

pytestmark = pytest.mark.integration
DIM = 8


def record(user_id, vectors, model, seq=1, items=()):
    vectors = np.asarray(vectors, np.float32)
    return InterestRecord(
        user_id,
        vectors,
        len(vectors),
        DIM,
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
        assert [(c["item_id"], c["interest"]) for c in json.loads(got["candidates"])] == expected(
            bundle.item_embeddings, early, 10
        )
        assert 0 < redis_client.ttl(candidates_key(prefix, "early")) <= 7 * 24 * 3600

        users = {f"u{{{i}}}": rng.standard_normal((1 + i % 3, DIM)) for i in range(5)}
        write_records(
            redis_client,
            prefix,
            [record(u, v, bundle.version, items=["i1", "i2"]) for u, v in users.items()]
            + [record("other-model", users["u{0}"], "mind-notloaded000000000")],
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
