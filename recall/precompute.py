"""Precomputed candidates: keep each user's candidates in Redis fresh as their interests change.

The stream worker writes interest records; Redis keyspace notifications (``notify-keyspace-events``
with ``K`` and ``h``) tell this process which records changed. Changed users are collected for
a short deadline, their records read in one pipeline, searched in one Faiss call per bundle
version, and their candidates written in one pipeline, so a ranking stage can read them
without calling the recall service. Notifications are fire-and-forget: ``refresh_all`` (run at
start with ``--full``, and after every lost subscription) catches up with whatever changed
while nothing listened.

A server emits notifications only for its own keys, so in a Redis Cluster
(``MINDSTREAM_REDIS_CLUSTER``) this process sets the flags on every primary and subscribes on
each, one connection per primary, and reads and writes through the cluster client. It re-reads
the cluster's primaries every ``TOPOLOGY_CHECK_S`` and whenever a node's subscription is lost;
a changed set of primaries (a failover, a node added) means setting the flags and subscribing
again on every primary, then a full refresh, since notifications may have been missed meanwhile.

Candidates hash, key ``<prefix>c:{<user_id>}`` (same hash tag, so same Cluster slot, as the
record), every value a byte string:

==============  =====================================================================
field           value
==============  =====================================================================
``model``       bundle version of the record's vectors and of the index searched
``seq``         the record's ``seq`` the candidates were computed from (monotonic guard)
``n``           candidates asked for, ASCII decimal
``exclude_seen`` ``1`` when the window's items were left out, else ``0``
``diversity``   λ of the merge (``MINDSTREAM_RECALL_DIVERSITY``), e.g. ``0.0``
``updated_ms``  when the candidates were written, epoch milliseconds
``candidates``  UTF-8 JSON array of ``{"item_id", "score", "interest"}``, in merge order
                (best score first at diversity 0)
==============  =====================================================================

Writes are monotonic like the record's: candidates from an older ``seq`` never replace newer ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from mindstream.redis_config import (
    REDIS_ERRORS,
    async_redis_client,
    check_redis,
    is_cluster,
    unrecoverable_reason,
)
from mindstream.redis_script import LuaScript
from mindstream.settings import Settings
from recall.candidates import Query, recall_many
from recall.exceptions import RecallError
from recall.registry import IndexRegistry
from stream.exceptions import RecordError, RecordRefused
from stream.record import InterestRecord, now_ms, read_each_async

logger = logging.getLogger(__name__)

REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)
BATCH_MAX_USERS = 1000
BATCH_DEADLINE_S = 0.05
STATS_EVERY_S = 30.0
SCAN_COUNT = 1000
# How often a cluster's primaries are re-read (a lost node connection also triggers it).
TOPOLOGY_CHECK_S = 5.0
# K = keyspace events, h = hash commands; the worker's write script runs DEL then HSET.
NEEDED_EVENT_FLAGS = "Kh"

# KEYS[1] = candidates key; ARGV[1] = seq; ARGV[2] = ttl seconds (0 = none); ARGV[3..] = fields.
MONOTONIC_CANDIDATES_LUA = """
local current = redis.call('HGET', KEYS[1], 'seq')
if current and tonumber(current) > tonumber(ARGV[1]) then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
if tonumber(ARGV[2]) > 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return 1
"""
MONOTONIC_CANDIDATES = LuaScript(MONOTONIC_CANDIDATES_LUA)


def candidates_key(prefix: str, user_id: str) -> str:
    """The Redis key of a user's precomputed candidates: ``<prefix>c:{<user_id>}``."""
    return f"{prefix}c:{{{user_id}}}"


def user_of_record_key(prefix: str, key: str) -> str | None:
    """The user id in a record key (see ``stream.record.record_key``), or None."""
    head = f"{prefix}u:{{"
    if key.startswith(head) and key.endswith("}") and len(key) > len(head) + 1:
        return key[len(head) : -1]
    return None


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def merged_event_flags(current: str) -> str:
    """``notify-keyspace-events`` with the flags precompute needs added to ``current``."""
    flags = current
    for flag in NEEDED_EVENT_FLAGS:
        # "A" stands for every event class, including "h".
        if flag not in flags and not (flag == "h" and "A" in flags):
            flags += flag
    return flags


def primaries_change(subscribed: Sequence[str], current: Sequence[str]) -> str | None:
    """A log line naming how the cluster's primaries changed since they were subscribed
    (``host:port`` names), or None when they are the same."""
    before, after = set(subscribed), set(current)
    if before == after:
        return None
    return (
        f"redis cluster primaries changed: gone={sorted(before - after)} "
        f"new={sorted(after - before)}"
    )


def notified_user(message: Any, channel_head: str, prefix: str) -> str | None:
    """The user whose record a keyspace notification message reports written (an ``hset``
    event on ``<channel_head><prefix>u:{<user_id>}``), or None for any other message."""
    if message is None or message.get("type") != "pmessage":
        return None
    data = message["data"]
    if (data.decode() if isinstance(data, bytes) else data) != "hset":
        return None
    channel = message["channel"]
    channel = channel.decode() if isinstance(channel, bytes) else str(channel)
    if not channel.startswith(channel_head):
        return None
    return user_of_record_key(prefix, channel[len(channel_head) :])


@dataclass(frozen=True)
class NodeClient:
    """A plain client of one Redis server: the server itself, or one node of a cluster."""

    name: str  # host:port
    client: redis.asyncio.Redis


class TopologyChanged(Exception):
    """The cluster's primaries are not the ones subscribed to (handled by resubscribing)."""


@dataclass
class PrecomputeStats:
    users: int = 0
    written: int = 0
    not_found: int = 0
    model_unavailable: int = 0
    bad_records: int = 0
    stale: int = 0
    batches: int = 0
    seconds: float = 0.0
    by_model: dict[str, int] = field(default_factory=dict)

    def add(self, other: PrecomputeStats) -> None:
        for name in ("users", "written", "not_found", "model_unavailable", "bad_records"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.stale += other.stale
        self.batches += other.batches
        self.seconds += other.seconds
        for model, count in other.by_model.items():
            self.by_model[model] = self.by_model.get(model, 0) + count


class Precomputer:
    """Computes and stores candidates for users whose interest records changed."""

    def __init__(
        self,
        settings: Settings,
        registry: IndexRegistry,
        client: redis.asyncio.Redis,
        *,
        n: int | None = None,
        exclude_seen: bool = True,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.client = client
        self.n = n or settings.recall_default_n
        self.exclude_seen = exclude_seen
        self.total = PrecomputeStats()
        self._listening = False

    async def refresh(self, user_ids: Sequence[str]) -> PrecomputeStats:
        """Recompute and store the candidates of ``user_ids``."""
        started = time.perf_counter()
        stats = PrecomputeStats(users=len(user_ids), batches=1)
        prefix = self.settings.redis_prefix
        by_version: dict[str, list[InterestRecord]] = {}
        for user_id, record in zip(
            user_ids, await read_each_async(self.client, prefix, user_ids), strict=True
        ):
            if record is None or isinstance(record, RecordRefused):
                stats.not_found += 1
            elif isinstance(record, RecordError):
                stats.bad_records += 1
                logger.warning("bad interest record user=%s error=%s", user_id, record)
            else:
                by_version.setdefault(record.model, []).append(record)
        writes: list[tuple[InterestRecord, list[dict[str, Any]]]] = []
        for version, records in by_version.items():
            item_index = self.registry.get(version)
            if item_index is None:
                stats.model_unavailable += len(records)
                continue
            # A record of another dimension than its model's index fails alone.
            fitting = []
            for record in records:
                reason = item_index.misfit(record.vectors)
                if reason is None:
                    fitting.append(record)
                else:
                    stats.bad_records += 1
                    logger.warning("bad interest record user=%s error=%s", record.user_id, reason)
            records = fitting
            if not records:
                continue
            queries = [
                Query(
                    r.vectors,
                    self.n,
                    r.items if self.exclude_seen else (),
                    self.settings.recall_diversity,
                )
                for r in records
            ]
            if sum(len(q.vectors) for q in queries) > 64:
                loop = asyncio.get_running_loop()
                found = await loop.run_in_executor(None, recall_many, item_index, queries)
            else:
                found = recall_many(item_index, queries)
            stats.by_model[version] = stats.by_model.get(version, 0) + len(records)
            for record, candidates in zip(records, found, strict=True):
                payload = [
                    {
                        "item_id": item_index.item_ids[c.row],
                        "score": c.score,
                        "interest": c.interest,
                    }
                    for c in candidates
                ]
                writes.append((record, payload))
        if writes:
            written = await self._write(writes)
            stats.written = sum(written)
            stats.stale = len(written) - stats.written
        stats.seconds = time.perf_counter() - started
        self.total.add(stats)
        return stats

    async def _write(self, writes: list[tuple[InterestRecord, list[dict[str, Any]]]]) -> list[bool]:
        prefix = self.settings.redis_prefix
        ttl = str(self.settings.recall_precompute_ttl_s)
        updated = str(now_ms())

        def fill(pipe: Any) -> None:
            for record, payload in writes:
                MONOTONIC_CANDIDATES.queue(
                    pipe,
                    1,
                    candidates_key(prefix, record.user_id),
                    str(record.seq),
                    ttl,
                    "model",
                    record.model,
                    "seq",
                    str(record.seq),
                    "n",
                    str(self.n),
                    "exclude_seen",
                    "1" if self.exclude_seen else "0",
                    "diversity",
                    repr(self.settings.recall_diversity),
                    "updated_ms",
                    updated,
                    "candidates",
                    json.dumps(payload, separators=(",", ":"), ensure_ascii=False),
                )

        return [bool(r) for r in await MONOTONIC_CANDIDATES.execute_async(self.client, fill)]

    async def refresh_all(self) -> PrecomputeStats:
        """Recompute every user that has a record (catch-up after downtime)."""
        prefix = self.settings.redis_prefix
        total = PrecomputeStats()
        batch: list[str] = []
        pattern = glob_escape(f"{prefix}u:{{") + "*}"
        async for raw in self.client.scan_iter(match=pattern, count=SCAN_COUNT):
            key = raw.decode() if isinstance(raw, bytes) else str(raw)
            user_id = user_of_record_key(prefix, key)
            if user_id is not None:
                batch.append(user_id)
            if len(batch) >= BATCH_MAX_USERS:
                total.add(await self.refresh(batch))
                batch = []
        if batch:
            total.add(await self.refresh(batch))
        logger.info(
            "precompute full refresh users=%d written=%d seconds=%.1f",
            total.users,
            total.written,
            total.seconds,
        )
        return total

    @property
    def cluster(self) -> bool:
        return is_cluster(self.client)

    async def node_clients(self) -> list[NodeClient]:
        """A client for each server to configure and listen to: the one server, or the
        cluster's primaries as the cluster client sees them after re-reading the topology.
        Each has the credentials and TLS of ``self.client`` and no retries: a lost subscription
        must be noticed (and caught up on), not silently reconnected."""
        no_retry = {"retry": Retry(NoBackoff(), 0)}
        if not self.cluster:
            pool: Any = self.client.connection_pool
            kwargs = {**pool.connection_kwargs, **no_retry}
            name = f"{kwargs.get('host', kwargs.get('path', 'redis'))}:{kwargs.get('port', '')}"
            return [NodeClient(name, _node_client(pool.connection_class, kwargs))]
        cluster: Any = self.client
        await cluster.initialize()
        # Re-read the slot map now: the client only refreshes it when a command is redirected.
        await cluster.nodes_manager.initialize()
        return [
            NodeClient(
                node.name,
                _node_client(node.connection_class, {**node.connection_kwargs, **no_retry}),
            )
            for node in sorted(cluster.get_primaries(), key=lambda n: n.name)
        ]

    async def enable_notifications(self, nodes: Sequence[NodeClient]) -> None:
        """Turn on the keyspace notifications precompute listens to on ``nodes``, keeping
        existing flags. (A cluster replica gets them when it is promoted: precompute then
        resubscribes, which sets them first and refreshes every user after.)"""
        for node in nodes:
            await self._enable_on(node.name, node.client)

    async def _enable_on(self, name: str, node: redis.asyncio.Redis) -> None:
        try:
            current = (await node.config_get("notify-keyspace-events")).get(
                "notify-keyspace-events", ""
            )
            current = current.decode() if isinstance(current, bytes) else str(current)
            wanted = merged_event_flags(current)
            if wanted != current:
                await node.config_set("notify-keyspace-events", wanted)
                logger.info("redis notify-keyspace-events node=%s %r -> %r", name, current, wanted)
        except ResponseError as exc:
            where = "every node of the cluster" if self.cluster else "the Redis configuration"
            raise RecallError(
                f"precompute needs Redis keyspace notifications and cannot turn them on at "
                f"{name} ({exc}); set `notify-keyspace-events Kh` (or add K and h to the "
                f"existing flags) in {where}"
            ) from exc

    async def run(
        self, stop: asyncio.Event, *, full: bool = False, ready: asyncio.Event | None = None
    ) -> None:
        """Listen for record updates and refresh their users until ``stop`` is set. When Redis
        (or a cluster node) goes away, wait and resubscribe, then refresh everyone
        (notifications were lost); when a cluster's primaries change, resubscribe at once.
        Errors that retrying cannot fix raise :class:`RecallError`."""
        catch_up = full
        backoff = 0.5
        while not stop.is_set():
            if self._listening:
                backoff = 0.5  # the last attempt got as far as listening: start over
            self._listening = False
            try:
                await self._listen(stop, catch_up=catch_up, ready=ready)
                return
            except TopologyChanged as exc:
                logger.warning("%s; resubscribing on every primary, then refreshing all", exc)
                catch_up = True
                continue
            except (*REDIS_DOWN, *REDIS_ERRORS) as exc:
                reason = unrecoverable_reason(exc, cluster=self.cluster)
                if reason is not None:
                    raise RecallError(
                        f"precompute cannot use Redis ({reason}): {exc}; check REDIS_URL and "
                        "MINDSTREAM_REDIS_CLUSTER"
                    ) from exc
                logger.warning("precompute lost Redis (%s); retrying in %.1fs", exc, backoff)
                catch_up = True
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=backoff)
                backoff = min(backoff * 2, 10.0)

    async def _listen(
        self, stop: asyncio.Event, *, catch_up: bool, ready: asyncio.Event | None
    ) -> None:
        nodes = await self.node_clients()
        # A cluster has database 0 only.
        db = 0 if self.cluster else self.client.connection_pool.connection_kwargs.get("db", 0)
        channel_head = f"__keyspace@{db}__:"
        pattern = glob_escape(f"{channel_head}{self.settings.redis_prefix}u:{{") + "*}"
        names = [node.name for node in nodes]
        found: asyncio.Queue[str | BaseException] = asyncio.Queue()
        pubsubs: list[Any] = []
        readers: list[asyncio.Task[None]] = []
        try:
            await self.enable_notifications(nodes)
            # Subscribe first, then catch up: an update in between is seen at least once.
            for node in nodes:
                pubsub = node.client.pubsub(ignore_subscribe_messages=True)
                pubsubs.append(pubsub)
                await pubsub.psubscribe(pattern)
                readers.append(
                    asyncio.create_task(
                        self._read(node.name, pubsub, channel_head, found),
                        name=f"precompute-notifications-{node.name}",
                    )
                )
            logger.info(
                "precompute listening pattern=%s nodes=%s n=%d", pattern, ",".join(names), self.n
            )
            self._listening = True
            if catch_up:
                await self.refresh_all()
            if ready is not None:
                ready.set()
            last_stats = last_topology = time.monotonic()
            while not stop.is_set():
                dirty = await self._collect(found, stop)
                if dirty:
                    await self.refresh(sorted(dirty))
                if time.monotonic() - last_stats >= STATS_EVERY_S:
                    last_stats = time.monotonic()
                    self.log_totals()
                if self.cluster and time.monotonic() - last_topology >= TOPOLOGY_CHECK_S:
                    last_topology = time.monotonic()
                    await self._check_primaries(names)
        finally:
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            for pubsub in pubsubs:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            for node in nodes:
                with contextlib.suppress(Exception):
                    await node.client.aclose()  # type: ignore[attr-defined]  # stubs predate redis 5

    async def _check_primaries(self, subscribed: list[str]) -> None:
        """Raise TopologyChanged when the cluster's primaries are not ``subscribed``."""
        cluster: Any = self.client
        await cluster.nodes_manager.initialize()
        change = primaries_change(subscribed, [n.name for n in cluster.get_primaries()])
        if change is not None:
            raise TopologyChanged(change)

    async def _read(
        self,
        name: str,
        pubsub: Any,
        channel_head: str,
        found: asyncio.Queue[str | BaseException],
    ) -> None:
        """Put the users one node reports written on ``found``; on an error, put the error
        there (the collector raises it) and stop."""
        prefix = self.settings.redis_prefix
        try:
            while True:
                message = await pubsub.get_message(timeout=1.0)
                user_id = notified_user(message, channel_head, prefix)
                if user_id is not None:
                    found.put_nowait(user_id)
        except Exception as exc:
            logger.warning(
                "precompute lost the subscription node=%s error=%s: %s",
                name,
                type(exc).__name__,
                exc,
            )
            found.put_nowait(exc)

    def log_totals(self) -> None:
        t = self.total
        logger.info(
            "precompute users=%d written=%d stale=%d not_found=%d model_unavailable=%d "
            "bad=%d batches=%d",
            t.users,
            t.written,
            t.stale,
            t.not_found,
            t.model_unavailable,
            t.bad_records,
            t.batches,
        )

    async def _collect(
        self, found: asyncio.Queue[str | BaseException], stop: asyncio.Event
    ) -> set[str]:
        """Users whose record was written, gathered until the batch is full or the deadline
        after the first one passes; a node's lost subscription is raised here."""
        dirty: set[str] = set()
        deadline: float | None = None
        while len(dirty) < BATCH_MAX_USERS and not stop.is_set():
            timeout = 0.5 if deadline is None else max(0.0, deadline - time.monotonic())
            if deadline is not None and timeout == 0.0:
                break
            try:
                item = await asyncio.wait_for(found.get(), timeout=timeout)
            except TimeoutError:
                if deadline is None:
                    # Idle: give the caller its periodic work (stats, topology check).
                    break
                continue
            if isinstance(item, BaseException):
                raise item
            dirty.add(item)
            if deadline is None:
                deadline = time.monotonic() + BATCH_DEADLINE_S
        return dirty


def _node_client(connection_class: Any, kwargs: dict[str, Any]) -> redis.asyncio.Redis:
    pool = redis.asyncio.ConnectionPool(connection_class=connection_class, **kwargs)
    return redis.asyncio.Redis(connection_pool=pool)


async def precompute_forever(
    settings: Settings, registry: IndexRegistry, *, full: bool, n: int | None, exclude_seen: bool
) -> None:
    """The ``recall precompute`` process: follow the bundle link, listen, stop on SIGTERM/SIGINT."""
    import signal

    from recall.registry import BundleWatcher

    try:
        # Credentials, TLS and cluster mode against MINDSTREAM_REDIS_CLUSTER (and, for a
        # cluster, full slot coverage): refused with a message naming the setting.
        await asyncio.to_thread(check_redis, settings)
    except REDIS_DOWN as exc:
        logger.warning("redis not reachable yet (%s); precompute retries until it is", exc)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    client = async_redis_client(
        settings, socket_timeout=10, socket_connect_timeout=5, decode_responses=False
    )
    watcher = BundleWatcher(registry, settings.bundle_path, settings.recall_watch_interval_s)
    watch_task = asyncio.create_task(watcher.run(), name="precompute-bundle-watcher")
    precomputer = Precomputer(settings, registry, client, n=n, exclude_seen=exclude_seen)
    try:
        await precomputer.run(stop, full=full)
    finally:
        watch_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch_task
        watcher.close()
        precomputer.log_totals()
        await client.aclose()  # type: ignore[attr-defined]  # stubs predate redis 5
