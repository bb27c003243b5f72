"""The Redis interest record: key naming, encode/decode, and the monotonic batch write.

One Redis hash per user, key ``<prefix>u:{<user_id>}`` (``MINDSTREAM_REDIS_PREFIX``, default
``mind:``; the braces are a Redis Cluster hash tag, so a user's key lives in one slot). Fields,
all written together, every value a byte string:

==============  =====================================================================
field           value
==============  =====================================================================
``v``           the active interest vectors: ``k * dim`` little-endian IEEE-754 float32,
                row-major (interest 0 first), ``4 * k * dim`` bytes; empty when ``k`` = 0
``k``           number of active interests, ASCII decimal (0 when no behaviour of the
                window is known to the model)
``dim``         vector dimension, ASCII decimal
``model``       the bundle version that computed ``v`` (compare vectors only with an item
                index of the same version)
``event_ts``    newest event time in the window, epoch milliseconds, ASCII decimal
``updated_ms``  wall-clock time of the write, epoch milliseconds, ASCII decimal
``n_behaviours`` behaviours in the window, ASCII decimal
``seq``         events ever applied to the user's window, ASCII decimal: the record's
                monotonic version
``src``         ``<topic>/<partition>/<offset>`` of the newest event applied
``items``       UTF-8 JSON array of the window's producer item ids, oldest first
==============  =====================================================================

Example (Python, any client)::

    h = r.hgetall(b"mind:u:{u42}")
    k, dim = int(h[b"k"]), int(h[b"dim"])
    vectors = numpy.frombuffer(h[b"v"], dtype="<f4").reshape(k, dim)

Writes are monotonic, checked and set in one server-side step (a Lua script, called through
``mindstream.redis_script.LuaScript``: by its SHA1, loaded when the server lacks it): a record
is replaced only when the stored ``seq`` is absent or not greater than the new one, so a record
made from newer input is never replaced by one from older input. Equal ``seq`` is allowed: the
same input recomputed (after a crash, or with a new bundle) rewrites the record. The script
deletes the hash before setting it, so no field of an older layout survives.
A batch goes in one round trip, each script call checking and setting up to
``RECORDS_PER_CALL`` records in order, exactly as one call per record would (a user twice in a
batch: the later record is checked against the earlier one). A script may only name keys of
one slot in a Redis Cluster, so with a cluster client the records are grouped by hash slot
(the user's hash tag) first, each group written by its own calls; the cluster client pipelines
the calls per node and follows MOVED/ASK.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from redis.crc import key_slot

from mindstream.redis_script import LuaScript
from stream.exceptions import RecordError, RecordRefused, StoreUnavailable

FIELDS = (
    "v",
    "k",
    "dim",
    "model",
    "event_ts",
    "updated_ms",
    "n_behaviours",
    "seq",
    "src",
    "items",
)

# One script call writes a whole chunk of records: KEYS = the record keys; ARGV[1] = every
# record's field values in FIELDS order, record after record, as one MessagePack array of
# strings (the names are in the script; Redis's Lua unpacks it with cmsgpack, in C). Each key
# is checked and set on its own, in order, exactly as one call per record would; the reply holds
# 1 (written) or 0 (kept) per key. One call per chunk instead of one per record, and one value
# per call instead of ten per record: redis-py packs every command argument in Python, which was
# most of the write's client CPU (BENCHMARKS.md), and passes a long one on without copying it.
_N_FIELDS = len(FIELDS)
_HSET_ARGS = ", ".join(f"'{name}', values[base + {n + 1}]" for n, name in enumerate(FIELDS))
MONOTONIC_WRITE_LUA = f"""
local values = cmsgpack.unpack(ARGV[1])
if #values ~= #KEYS * {_N_FIELDS} then
  return redis.error_reply('mindstream monotonic write: ' .. #values .. ' values for '
    .. #KEYS .. ' keys')
end
local written = {{}}
for i, key in ipairs(KEYS) do
  local base = (i - 1) * {_N_FIELDS}
  local current = redis.call('HGET', key, 'seq')
  if current and tonumber(current) > tonumber(values[base + {FIELDS.index("seq") + 1}]) then
    written[i] = 0
  else
    redis.call('DEL', key)
    redis.call('HSET', key, {_HSET_ARGS})
    written[i] = 1
  end
end
return written
"""
MONOTONIC_WRITE = LuaScript(MONOTONIC_WRITE_LUA)
_MSGPACK_HEADER = struct.Struct(">BI")
_MSGPACK_ARRAY32 = 0xDD
_MSGPACK_STR32 = 0xDB
# Records per script call: one call runs atomically and blocks the server meanwhile, so a big
# batch goes as several calls (pipelined in one round trip) of bounded length.
RECORDS_PER_CALL = 256


class ReplicasBehind(StoreUnavailable):
    """Fewer replicas than asked acknowledged a write in time (retried like an outage)."""


@dataclass(frozen=True, eq=False)
class InterestRecord:
    """A user's active interests and where they came from (see the module docstring)."""

    user_id: str
    vectors: np.ndarray  # float32 [k, dim]
    k: int
    dim: int
    model: str
    event_ts: int
    updated_ms: int
    n_behaviours: int
    seq: int
    src: str
    items: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.vectors.shape != (self.k, self.dim):
            raise RecordError(
                f"user {self.user_id!r}: vectors have shape {self.vectors.shape}, "
                f"expected (k, dim) = ({self.k}, {self.dim})"
            )


def record_key(prefix: str, user_id: str) -> str:
    """The Redis key of a user's record: ``<prefix>u:{<user_id>}``."""
    return f"{prefix}u:{{{user_id}}}"


def now_ms() -> int:
    return int(time.time() * 1000)


def encode_record(record: InterestRecord) -> dict[str, bytes]:
    """The hash fields of a record, in ``FIELDS`` order."""
    vectors = np.ascontiguousarray(record.vectors, dtype="<f4")
    return {
        "v": vectors.tobytes(),
        "k": str(record.k).encode(),
        "dim": str(record.dim).encode(),
        "model": record.model.encode(),
        "event_ts": str(record.event_ts).encode(),
        "updated_ms": str(record.updated_ms).encode(),
        "n_behaviours": str(record.n_behaviours).encode(),
        "seq": str(record.seq).encode(),
        "src": record.src.encode(),
        # compact UTF-8 JSON, as json.dumps(items, ensure_ascii=False, separators=(",", ":"))
        "items": orjson.dumps(list(record.items)),
    }


def decode_record(user_id: str, fields: Mapping[Any, Any]) -> InterestRecord:
    """Decode the hash fields (bytes or str keys, bytes values); raise RecordError if malformed."""
    raw = {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in fields.items()}
    missing = [name for name in FIELDS if name not in raw]
    if missing:
        raise RecordError(f"record of {user_id!r} lacks fields {missing}")
    v = raw["v"]
    if not isinstance(v, bytes):
        raise RecordError(
            f"record of {user_id!r}: field v is {type(v).__name__}, expected bytes "
            "(use a Redis client with decode_responses=False)"
        )
    try:
        k = int(raw["k"])
        dim = int(raw["dim"])
        items = json.loads(raw["items"])
        scalars = {
            name: int(raw[name]) for name in ("event_ts", "updated_ms", "n_behaviours", "seq")
        }
        model, src = _text(raw["model"]), _text(raw["src"])
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise RecordError(f"record of {user_id!r} is malformed: {exc}") from None
    if k < 0 or dim < 1 or len(v) != 4 * k * dim:
        raise RecordError(
            f"record of {user_id!r}: v has {len(v)} bytes, expected 4 * k * dim with k={k} "
            f"dim={dim}"
        )
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise RecordError(f"record of {user_id!r}: items is not a JSON array of strings")
    return InterestRecord(
        user_id=user_id,
        vectors=np.frombuffer(v, dtype="<f4").reshape(k, dim),
        k=k,
        dim=dim,
        model=model,
        src=src,
        items=tuple(items),
        **scalars,
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _script_calls(
    prefix: str, records: Sequence[InterestRecord], *, by_slot: bool
) -> tuple[list[tuple[int, list[bytes | str]]], list[int]]:
    """(numkeys, the keys then every record's values) of each script call for ``records``, and
    the position in ``records`` of each record in call order. ``by_slot``: no call names keys
    of two hash slots (a record keeps its order among the records of its slot)."""
    keys = [record_key(prefix, record.user_id) for record in records]
    if by_slot:
        groups: dict[int, list[int]] = {}
        for n, key in enumerate(keys):
            groups.setdefault(key_slot(key.encode()), []).append(n)
        chunks = [
            group[start : start + RECORDS_PER_CALL]
            for group in groups.values()
            for start in range(0, len(group), RECORDS_PER_CALL)
        ]
    else:
        positions = range(len(records))
        chunks = [
            list(positions[start : start + RECORDS_PER_CALL])
            for start in range(0, len(records), RECORDS_PER_CALL)
        ]
    calls: list[tuple[int, list[bytes | str]]] = []
    order: list[int] = []
    for chunk in chunks:
        # MessagePack: an array 32 of str 32 values (fixed 5-byte headers, any length)
        packed = [_MSGPACK_HEADER.pack(_MSGPACK_ARRAY32, len(chunk) * _N_FIELDS)]
        for n in chunk:
            for value in encode_record(records[n]).values():
                packed.append(_MSGPACK_HEADER.pack(_MSGPACK_STR32, len(value)))
                packed.append(value)
        args: list[bytes | str] = [keys[n] for n in chunk]
        args.append(b"".join(packed))
        calls.append((len(chunk), args))
        order += chunk
    return calls, order


def _written(replies: Sequence[Any], order: Sequence[int]) -> list[bool]:
    flags = [bool(flag) for reply in replies for flag in reply]
    if len(flags) != len(order):
        raise RecordError(f"the write script answered {len(flags)} flags for {len(order)} records")
    written = [False] * len(order)
    for n, flag in zip(order, flags, strict=True):
        written[n] = flag
    return written


def _is_cluster(client: object) -> bool:
    return isinstance(client, redis.cluster.RedisCluster | redis.asyncio.cluster.RedisCluster)


def write_records(
    client: redis.Redis, prefix: str, records: Sequence[InterestRecord]
) -> list[bool]:
    """Write a batch in one round trip with the monotonic check; True where a record was written."""
    if not records:
        return []
    calls, order = _script_calls(prefix, records, by_slot=_is_cluster(client))

    def fill(pipe: Any) -> None:
        for numkeys, args in calls:
            MONOTONIC_WRITE.queue(pipe, numkeys, *args)

    return _written(MONOTONIC_WRITE.execute(client, fill), order)


async def write_records_async(
    client: redis.asyncio.Redis,
    prefix: str,
    records: Sequence[InterestRecord],
    *,
    wait_replicas: int = 0,
    wait_timeout_ms: int = 1000,
) -> list[bool]:
    """:func:`write_records` for an asyncio client.

    ``wait_replicas`` > 0: the pipeline ends, on every node written (one for a single Redis),
    with ``WAIT wait_replicas wait_timeout_ms`` on the same connection, so the call returns only
    once that many replicas hold the batch; fewer raise :class:`ReplicasBehind` (a retry may
    succeed once the replicas catch up). Replication is asynchronous otherwise, and a master
    that fails over loses the writes its replica had not received yet.
    """
    if not records:
        return []
    cluster = _is_cluster(client)
    calls, order = _script_calls(prefix, records, by_slot=cluster)
    waits = 0  # WAIT commands at the end of the pipeline last sent

    async def fill(pipe: Any) -> None:
        nonlocal waits
        for numkeys, args in calls:
            MONOTONIC_WRITE.queue(pipe, numkeys, *args)
        waits = 0
        if wait_replicas <= 0:
            return
        if cluster:
            await client.initialize()  # the slot map (a no-op once loaded)
            # the node of each call's slot, once (ClusterNode compares by name)
            nodes = {
                node.name: node
                for node in (client.get_node_from_key(args[0]) for _, args in calls)  # type: ignore[attr-defined]
            }
            for node in nodes.values():
                pipe.execute_command("WAIT", wait_replicas, wait_timeout_ms, target_nodes=node)
            waits = len(nodes)
        else:
            pipe.execute_command("WAIT", wait_replicas, wait_timeout_ms)
            waits = 1

    replies = await MONOTONIC_WRITE.execute_async(client, fill)
    acked = replies[len(replies) - waits :]
    if any(int(n) < wait_replicas for n in acked):
        raise ReplicasBehind(
            f"WAIT {wait_replicas} {wait_timeout_ms}: only {sorted(int(n) for n in acked)} "
            "replicas acknowledged the batch (MINDSTREAM_REDIS_WAIT_REPLICAS)"
        )
    return _written(replies[: len(replies) - waits], order)


def read_interests(client: redis.Redis, prefix: str, user_id: str) -> InterestRecord | None:
    """A user's record, or None when the user has none."""
    fields = client.hgetall(record_key(prefix, user_id))
    return decode_record(user_id, fields) if fields else None


def _queue_reads(pipe: Any, prefix: str, user_ids: Sequence[str]) -> None:
    for user_id in user_ids:
        pipe.hgetall(record_key(prefix, user_id))


def _decoded(user_ids: Sequence[str], replies: Sequence[Any]) -> list[InterestRecord | None]:
    return [
        decode_record(user_id, fields) if fields else None
        for user_id, fields in zip(user_ids, replies, strict=True)
    ]


def _outcomes(
    user_ids: Sequence[str], replies: Sequence[Any]
) -> list[InterestRecord | RecordError | None]:
    out: list[InterestRecord | RecordError | None] = []
    for user_id, fields in zip(user_ids, replies, strict=True):
        if isinstance(fields, Exception):
            out.append(RecordRefused(f"Redis refused to read {user_id!r}: {fields}"))
        elif not fields:
            out.append(None)
        else:
            try:
                out.append(decode_record(user_id, fields))
            except RecordError as exc:
                out.append(exc)
    return out


def read_many(
    client: redis.Redis, prefix: str, user_ids: Sequence[str]
) -> list[InterestRecord | None]:
    """Records of many users in one pipeline, aligned with ``user_ids`` (None where absent)."""
    pipe = client.pipeline(transaction=False)
    _queue_reads(pipe, prefix, user_ids)
    return _decoded(user_ids, pipe.execute())


async def read_interests_async(
    client: redis.asyncio.Redis, prefix: str, user_id: str
) -> InterestRecord | None:
    """:func:`read_interests` for an asyncio client."""
    fields = await client.hgetall(record_key(prefix, user_id))
    return decode_record(user_id, fields) if fields else None


async def read_many_async(
    client: redis.asyncio.Redis, prefix: str, user_ids: Sequence[str]
) -> list[InterestRecord | None]:
    """:func:`read_many` for an asyncio client."""
    pipe = client.pipeline(transaction=False)
    _queue_reads(pipe, prefix, user_ids)
    return _decoded(user_ids, await pipe.execute())


async def read_each_async(
    client: redis.asyncio.Redis, prefix: str, user_ids: Sequence[str]
) -> list[InterestRecord | RecordError | None]:
    """Records of many users in one pipeline, where one bad record fails only its user: aligned
    with ``user_ids``, None where absent, :class:`RecordRefused` where Redis answered the read
    with an error, :class:`RecordError` where the record cannot be decoded. Connection errors
    raise as they are."""
    pipe = client.pipeline(transaction=False)
    _queue_reads(pipe, prefix, user_ids)
    return _outcomes(user_ids, await pipe.execute(raise_on_error=False))


def record_json(record: InterestRecord, *, vectors: str | None = None) -> dict[str, Any]:
    """The record's fields as JSON values, named as in the module docstring; with ``vectors``,
    the vectors too (a list of ``k`` lists of ``dim`` floats) under that name."""
    out: dict[str, Any] = {
        "user_id": record.user_id,
        "model": record.model,
        "k": record.k,
        "dim": record.dim,
        "event_ts": record.event_ts,
        "updated_ms": record.updated_ms,
        "n_behaviours": record.n_behaviours,
        "seq": record.seq,
        "src": record.src,
        "items": list(record.items),
    }
    if vectors is not None:
        out[vectors] = record.vectors.tolist()
    return out
