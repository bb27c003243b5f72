"""The monotonic record write against a real Redis: newer input is never replaced by older."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import redis
import redis.asyncio

from mindstream.settings import Settings
from stream.record import (
    InterestRecord,
    read_interests,
    read_interests_async,
    read_many,
    read_many_async,
    record_key,
    write_records,
    write_records_async,
)

pytestmark = pytest.mark.integration


def _record(user: str, seq: int, model: str = "m1", k: int = 2) -> InterestRecord:
    return InterestRecord(
        user_id=user,
        vectors=np.full((k, 4), seq, dtype=np.float32),
        k=k,
        dim=4,
        model=model,
        event_ts=1_700_000_000_000 + seq,
        updated_ms=1,
        n_behaviours=seq,
        seq=seq,
        src=f"clicks/0/{seq}",
        items=tuple(f"i{n}" for n in range(seq)),
    )


def test_monotonic_write_and_read(redis_client: redis.Redis, redis_prefix: str) -> None:
    assert write_records(redis_client, redis_prefix, [_record("a", 5), _record("b", 2)]) == [
        True,
        True,
    ]
    # older input loses, equal input (e.g. a new bundle) wins, newer input wins
    assert write_records(redis_client, redis_prefix, [_record("a", 4), _record("b", 3)]) == [
        False,
        True,
    ]
    assert write_records(redis_client, redis_prefix, [_record("a", 5, model="m2", k=1)]) == [True]
    a = read_interests(redis_client, redis_prefix, "a")
    assert a is not None and a.seq == 5 and a.model == "m2" and a.k == 1
    assert np.array_equal(a.vectors, np.full((1, 4), 5, np.float32))
    assert read_interests(redis_client, redis_prefix, "nobody") is None
    many = read_many(redis_client, redis_prefix, ["b", "nobody", "a"])
    assert [r.seq if r else None for r in many] == [3, None, 5]
    assert redis_client.type(record_key(redis_prefix, "a")) == b"hash"


def test_stale_fields_do_not_survive(redis_client: redis.Redis, redis_prefix: str) -> None:
    key = record_key(redis_prefix, "u")
    redis_client.hset(key, mapping={"seq": "1", "legacy": "x"})
    assert write_records(redis_client, redis_prefix, [_record("u", 1)]) == [True]
    assert b"legacy" not in redis_client.hgetall(key)


def test_script_cache_flush_is_survived(redis_client: redis.Redis, redis_prefix: str) -> None:
    redis_client.script_flush()
    assert write_records(redis_client, redis_prefix, [_record("u", 1)]) == [True]


def test_async_client(service_settings: Settings, redis_prefix: str, redis_client) -> None:
    async def run() -> None:
        client = redis.asyncio.Redis.from_url(service_settings.redis_url)
        try:
            await client.script_flush()
            written = await write_records_async(
                client, redis_prefix, [_record("x", 3), _record("y", 1)]
            )
            assert written == [True, True]
            assert await write_records_async(client, redis_prefix, [_record("x", 2)]) == [False]
            x = await read_interests_async(client, redis_prefix, "x")
            assert x is not None and x.seq == 3 and x.items == ("i0", "i1", "i2")
            many = await read_many_async(client, redis_prefix, ["y", "z"])
            assert many[0] is not None and many[0].seq == 1 and many[1] is None
        finally:
            await client.aclose()

    asyncio.run(run())
