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
batch: the later record is checked against the earlier one).

In a Redis Cluster a script call may only name (in ``KEYS``) keys of one hash slot, and every
user is a slot of its own, so naming the keys would cost one call per user. The asyncio write
(:func:`write_records_async`, the worker's) therefore groups a batch by the master that serves
each key's slot, from the client's slot map, and sends each master calls of up to
``RECORDS_PER_CALL`` records whose keys travel as arguments: the script is flagged
``allow-cross-slot-keys`` (Redis 7.0 or later), and the server itself still refuses any key it
does not serve ("non local key", also for a key of a slot being migrated away). Such a refusal,
a master that is down or a stale slot map falls back, for that batch, to calls that name their
keys, grouped by slot, which the cluster client routes and follows through MOVED, ASK and
failover; writes are monotonic and idempotent, so records a refused call wrote before the
refusal are simply written again. The synchronous :func:`write_records` always writes per slot.
"""

from __future__ import annotations

import json
import logging
import struct
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import orjson
import redis
import redis.asyncio
import redis.exceptions
from redis.crc import key_slot

from mindstream.redis_config import error_text, is_cluster
from mindstream.redis_script import LuaScript
from stream.exceptions import RecordError, RecordRefused, StoreUnavailable

logger = logging.getLogger(__name__)

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


def _monotonic_write_lua(*, keys_in_argv: bool) -> str:
    """The monotonic write; ``keys_in_argv``: the keys follow the values as ARGV[2..] instead of
    being named in KEYS, and the script may touch keys of several slots of its node."""
    head = "#!lua flags=allow-cross-slot-keys\n" if keys_in_argv else ""
    keys = "{unpack(ARGV, 2)}" if keys_in_argv else "KEYS"
    return f"""{head}
local values = cmsgpack.unpack(ARGV[1])
local keys = {keys}
if #values ~= #keys * {_N_FIELDS} then
  return redis.error_reply('mindstream monotonic write: ' .. #values .. ' values for '
    .. #keys .. ' keys')
end
local written = {{}}
for i, key in ipairs(keys) do
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


MONOTONIC_WRITE_LUA = _monotonic_write_lua(keys_in_argv=False)
MONOTONIC_WRITE = LuaScript(MONOTONIC_WRITE_LUA)
# The cluster write by node: the same steps, the keys as arguments (see the module docstring).
MONOTONIC_WRITE_BY_NODE = LuaScript(_monotonic_write_lua(keys_in_argv=True))
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


class ScriptCall(NamedTuple):
    """One call of the monotonic write: where it goes (the group its keys share), its record
    keys in order, and every one of their records' values as one MessagePack array."""

    group: Hashable
    keys: list[str]
    values: bytes


def _script_calls(
    prefix: str,
    records: Sequence[InterestRecord],
    *,
    group_of: Callable[[bytes], Hashable] | None = None,
) -> tuple[list[ScriptCall], list[int]]:
    """The script calls that write ``records``, and the position in ``records`` of each record in
    call order. ``group_of`` (a key's hash slot, or the node serving it): no call mixes keys of
    two groups, and a record keeps its order among the records of its group."""
    keys = [record_key(prefix, record.user_id) for record in records]
    groups: dict[Hashable, list[int]] = {}
    if group_of is None:
        groups[None] = list(range(len(records)))
    else:
        for n, key in enumerate(keys):
            groups.setdefault(group_of(key.encode()), []).append(n)
    calls: list[ScriptCall] = []
    order: list[int] = []
    for group, members in groups.items():
        for start in range(0, len(members), RECORDS_PER_CALL):
            chunk = members[start : start + RECORDS_PER_CALL]
            # MessagePack: an array 32 of str 32 values (fixed 5-byte headers, any length)
            packed = [_MSGPACK_HEADER.pack(_MSGPACK_ARRAY32, len(chunk) * _N_FIELDS)]
            for n in chunk:
                for value in encode_record(records[n]).values():
                    packed.append(_MSGPACK_HEADER.pack(_MSGPACK_STR32, len(value)))
                    packed.append(value)
            calls.append(ScriptCall(group, [keys[n] for n in chunk], b"".join(packed)))
            order += chunk
    return calls, order


def _queue_by_keys(pipe: Any, calls: Sequence[ScriptCall]) -> None:
    """Queue ``calls`` naming their keys (KEYS): the client routes each by its keys' slot."""
    for call in calls:
        MONOTONIC_WRITE.queue(pipe, len(call.keys), *call.keys, call.values)


def _written(replies: Sequence[Any], order: Sequence[int]) -> list[bool]:
    flags = [bool(flag) for reply in replies for flag in reply]
    if len(flags) != len(order):
        raise RecordError(f"the write script answered {len(flags)} flags for {len(order)} records")
    written = [False] * len(order)
    for n, flag in zip(order, flags, strict=True):
        written[n] = flag
    return written


def write_records(
    client: redis.Redis, prefix: str, records: Sequence[InterestRecord]
) -> list[bool]:
    """Write a batch in one round trip with the monotonic check; True where a record was written.
    A cluster client writes per hash slot."""
    if not records:
        return []
    calls, order = _script_calls(prefix, records, group_of=key_slot if is_cluster(client) else None)
    return _written(
        MONOTONIC_WRITE.execute(client, lambda pipe: _queue_by_keys(pipe, calls)), order
    )


# Errors of a write by node that mean the slot map was stale or a master is unreachable: the
# batch is written again per slot, through the cluster client's own redirection handling.
_REROUTE = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterError,
    redis.exceptions.RedisClusterException,
)
_NOT_SERVED_HERE = ("non local key", "cluster is down")


def _reroutes(exc: BaseException) -> bool:
    """Whether a write by node that raised ``exc`` is written again per slot."""
    return isinstance(exc, _REROUTE) or (
        isinstance(exc, redis.exceptions.ResponseError)
        and any(text in error_text(exc) for text in _NOT_SERVED_HERE)
    )


async def write_records_async(
    client: redis.asyncio.Redis,
    prefix: str,
    records: Sequence[InterestRecord],
    *,
    wait_replicas: int = 0,
    wait_timeout_ms: int = 1000,
) -> list[bool]:
    """:func:`write_records` for an asyncio client; a cluster client writes by node (the module
    docstring says how, and when it falls back to writing per slot).

    ``wait_replicas`` > 0: the pipeline ends, on every node written (one for a single Redis),
    with ``WAIT wait_replicas wait_timeout_ms`` on the same connection, so the call returns only
    once that many replicas hold the batch; fewer raise :class:`ReplicasBehind` (a retry may
    succeed once the replicas catch up). Replication is asynchronous otherwise, and a master
    that fails over loses the writes its replica had not received yet.
    """
    if not records:
        return []
    if not is_cluster(client):
        calls, order = _script_calls(prefix, records)
        waits = 1 if wait_replicas > 0 else 0

        def fill(pipe: Any) -> None:
            _queue_by_keys(pipe, calls)
            if waits:
                pipe.execute_command("WAIT", wait_replicas, wait_timeout_ms)

        replies = await MONOTONIC_WRITE.execute_async(client, fill)
        return _written(_replicas_acked(replies, waits, wait_replicas, wait_timeout_ms), order)
    cluster: Any = client
    try:
        return await _write_by_node(cluster, prefix, records, wait_replicas, wait_timeout_ms)
    except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException) as exc:
        if not _reroutes(exc):
            raise
        logger.info(
            "redis cluster write by node was refused or cut off (%s); writing the batch of %d "
            "records per slot, following the cluster's redirections",
            f"{type(exc).__name__}: {error_text(exc)[:200]}",
            len(records),
        )
    return await _write_by_slot(cluster, prefix, records, wait_replicas, wait_timeout_ms)


async def _write_by_node(
    client: Any, prefix: str, records: Sequence[InterestRecord], wait_replicas: int, timeout: int
) -> list[bool]:
    """One pipeline, each master's calls carrying its keys as arguments (``target_nodes``)."""
    await client.initialize()  # the slot map (a no-op once loaded)
    nodes: dict[str, Any] = {}

    def node_of(key: bytes) -> str:
        node = client.nodes_manager.get_node_from_slot(key_slot(key))
        nodes[node.name] = node
        return str(node.name)

    calls, order = _script_calls(prefix, records, group_of=node_of)

    def fill(pipe: Any) -> None:
        for call in calls:
            MONOTONIC_WRITE_BY_NODE.queue(
                pipe, 0, call.values, *call.keys, target_nodes=nodes[str(call.group)]
            )
        if wait_replicas > 0:
            for node in nodes.values():
                pipe.execute_command("WAIT", wait_replicas, timeout, target_nodes=node)

    replies = await MONOTONIC_WRITE_BY_NODE.execute_async(client, fill)
    waits = len(nodes) if wait_replicas > 0 else 0
    return _written(_replicas_acked(replies, waits, wait_replicas, timeout), order)


async def _write_by_slot(
    client: Any, prefix: str, records: Sequence[InterestRecord], wait_replicas: int, timeout: int
) -> list[bool]:
    """One pipeline of calls that name their keys, one slot each; then WAIT on each node."""
    calls, order = _script_calls(prefix, records, group_of=key_slot)
    waits = 0

    async def fill(pipe: Any) -> None:
        nonlocal waits
        _queue_by_keys(pipe, calls)
        waits = 0
        if wait_replicas <= 0:
            return
        await client.initialize()  # the slot map (a no-op once loaded)
        # the node of each call's slot, once (ClusterNode compares by name)
        nodes = {
            node.name: node for node in (client.get_node_from_key(call.keys[0]) for call in calls)
        }
        for node in nodes.values():
            pipe.execute_command("WAIT", wait_replicas, timeout, target_nodes=node)
        waits = len(nodes)

    replies = await MONOTONIC_WRITE.execute_async(client, fill)
    return _written(_replicas_acked(replies, waits, wait_replicas, timeout), order)


def _replicas_acked(
    replies: Sequence[Any], waits: int, wait_replicas: int, timeout: int
) -> Sequence[Any]:
    """The script replies of a pipeline that ended with ``waits`` WAIT commands, once every
    WAIT saw ``wait_replicas`` replicas; :class:`ReplicasBehind` otherwise."""
    acked = replies[len(replies) - waits :] if waits else []
    if any(int(n) < wait_replicas for n in acked):
        raise ReplicasBehind(
            f"WAIT {wait_replicas} {timeout}: only {sorted(int(n) for n in acked)} "
            "replicas acknowledged the batch (MINDSTREAM_REDIS_WAIT_REPLICAS)"
        )
    return replies[: len(replies) - waits]


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
