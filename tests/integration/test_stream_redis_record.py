"""The monotonic record write against a real Redis: newer input is never replaced by older."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import numpy as np
import pytest
import redis
import redis.asyncio

from mindstream.redis_script import LuaScript
from mindstream.settings import Settings
from stream.exceptions import RecordError, RecordRefused, StoreUnavailable
from stream.record import (
    FIELDS,
    RECORDS_PER_CALL,
    InterestRecord,
    ReplicasBehind,
    encode_record,
    read_each_async,
    read_interests,
    read_interests_async,
    read_many,
    read_many_async,
    record_json,
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


def test_waiting_for_replicas_a_server_lacks_fails_the_write(
    service_settings: Settings, redis_prefix: str, redis_client
) -> None:
    """WAIT 0 replicas passes on a server without replicas; WAIT 1 cannot, and says so (the
    records are written meanwhile: the retry rewrites them, the monotonic check allows it)."""

    async def run() -> None:
        client = redis.asyncio.Redis.from_url(service_settings.redis_url)
        try:
            write = functools.partial(write_records_async, client, redis_prefix)
            assert await write([_record("w", 1)], wait_replicas=0) == [True]
            with pytest.raises(ReplicasBehind, match=r"only \[0\] replicas"):
                await write([_record("w", 2)], wait_replicas=1, wait_timeout_ms=50)
            assert isinstance(ReplicasBehind("x"), StoreUnavailable)  # retried like an outage
        finally:
            await client.aclose()

    asyncio.run(run())
    stored = read_interests(redis_client, redis_prefix, "w")
    assert stored is not None and stored.seq == 2


def _stored(client: redis.Redis, prefix: str, users: list[str]) -> list[dict[bytes, bytes]]:
    return [client.hgetall(record_key(prefix, user)) for user in users]


def test_one_call_mixes_newer_older_and_equal(redis_client: redis.Redis, redis_prefix: str) -> None:
    # more records than one script call takes, so the batch spans calls
    n = 2 * RECORDS_PER_CALL + 7
    users = [f"m{i}" for i in range(n)]
    assert write_records(redis_client, redis_prefix, [_record(u, 5) for u in users]) == [True] * n
    seqs = [(4, 5, 6)[i % 3] for i in range(n)]  # older, equal, newer, interleaved
    batch = [_record(u, s, model="m2") for u, s in zip(users, seqs, strict=True)]
    assert write_records(redis_client, redis_prefix, batch) == [s >= 5 for s in seqs]
    stored = _stored(redis_client, redis_prefix, users)
    for user, seq, fields in zip(users, seqs, stored, strict=True):
        want = _record(user, max(seq, 5), model="m1" if seq < 5 else "m2")
        assert fields == {k.encode(): v for k, v in encode_record(want).items()}


def test_a_user_twice_in_one_batch_applies_in_order(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    batch = [_record("t", 3), _record("t", 2), _record("t", 4, model="m2"), _record("t", 4)]
    assert write_records(redis_client, redis_prefix, batch) == [True, False, True, True]
    t = read_interests(redis_client, redis_prefix, "t")
    assert t is not None and t.seq == 4 and t.model == "m1"


def test_sync_and_async_writes_store_the_same_bytes(
    service_settings: Settings, redis_client: redis.Redis, redis_prefix: str
) -> None:
    users = [f"s{i}" for i in range(RECORDS_PER_CALL + 3)]
    records = [_record(u, 1 + i % 4, k=i % 3) for i, u in enumerate(users)]
    write_records(redis_client, redis_prefix + "sync:", records)

    async def run() -> list[bool]:
        client = redis.asyncio.Redis.from_url(service_settings.redis_url)
        try:
            await client.script_flush()  # and the async path reloads the script
            return await write_records_async(client, redis_prefix + "async:", records)
        finally:
            await client.aclose()

    assert asyncio.run(run()) == [True] * len(records)
    sync = _stored(redis_client, redis_prefix + "sync:", users)
    assert sync == _stored(redis_client, redis_prefix + "async:", users)
    assert all(len(fields) == len(FIELDS) for fields in sync)


def test_read_each_fails_only_the_bad_users(
    service_settings: Settings, redis_client: redis.Redis, redis_prefix: str
) -> None:
    """One pipeline: a record, a missing user, a hash that is not a record, a key of another
    type; each user gets its own outcome, and the JSON view names the README's fields."""
    write_records(redis_client, redis_prefix, [_record("good", 3)])
    redis_client.hset(record_key(redis_prefix, "junk"), mapping={"k": "2", "dim": "4"})
    redis_client.set(record_key(redis_prefix, "string"), "not a hash")

    async def run() -> list[InterestRecord | RecordError | None]:
        client = redis.asyncio.Redis.from_url(service_settings.redis_url)
        try:
            users = ["good", "nobody", "junk", "string"]
            return await read_each_async(client, redis_prefix, users)
        finally:
            await client.aclose()

    good, nobody, junk, string = asyncio.run(run())
    assert isinstance(good, InterestRecord) and good.seq == 3 and nobody is None
    assert isinstance(junk, RecordError) and not isinstance(junk, RecordRefused)
    assert isinstance(string, RecordRefused) and "WRONGTYPE" in str(string)
    view = record_json(good, vectors="interests")
    names = "user_id model k dim event_ts updated_ms n_behaviours seq src items interests"
    assert list(view) == names.split()
    assert view["interests"] == [[3.0] * 4] * 2 and view["items"] == ["i0", "i1", "i2"]
    assert "vectors" not in record_json(good)


def test_lua_script_is_loaded_when_the_server_lacks_it(service_settings: Settings) -> None:
    script = LuaScript("return tonumber(ARGV[1]) * 2")

    def fill(pipe: Any) -> None:
        for n in (1, 2, 3):
            script.queue(pipe, 0, n)

    async def run() -> list[int]:
        client = redis.asyncio.Redis.from_url(service_settings.redis_url)
        try:
            await client.script_flush()
            return await script.execute_async(client, fill)
        finally:
            await client.aclose()

    assert asyncio.run(run()) == [2, 4, 6]
    client = redis.Redis.from_url(service_settings.redis_url)
    try:
        client.script_flush()
        assert script.execute(client, fill) == [2, 4, 6]
        assert client.script_exists(script.sha) == [True]
    finally:
        client.close()
