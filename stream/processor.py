"""One micro-batch of click records, end to end: the worker's logic without Faust around it.

validate each record (bad ones to the dead-letter topic) -> re-key those not on their user's
partition -> apply the rest to their users' windows (replays are no-ops) -> recompute each user
touched by the batch once with the current tower -> write all their records to Redis in one
monotonic pipeline, retrying with backoff until it succeeds, or, for a Redis error that
retrying cannot fix (refused TLS certificate or password, NOPERM, CROSSSLOT, ...), until
``refused_exit_s`` have passed without a success.

Every user touched by a valid event is rewritten, replays included: after a crash the changelog
can hold a window whose Redis write never happened, and the monotonic check makes the rewrite
harmless. :meth:`BatchProcessor.process` never raises on bad data or a Redis outage; it raises
:class:`FatalBatchError` only when the batch cannot be completed (the worker is stopping while
Redis keeps failing, Redis keeps refusing the request, or a bug), and the caller must then
exit without acknowledging the batch. What it does is counted in the
:class:`~stream.metrics.StreamMetrics` it is given.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast

from mindstream.redis_config import REDIS_ERRORS, unrecoverable_reason
from mindstream.settings import Settings
from stream.continuity import OffsetGuard
from stream.deadletter import DeadLetter
from stream.events import decode_event
from stream.exceptions import BadEvent, StoreUnavailable, StreamError
from stream.metrics import StreamMetrics
from stream.record import InterestRecord
from stream.rekey import origin_headers, parse_origin, rekey_topic_name, user_partition
from stream.tower import UserTower
from stream.window import Behaviour, BehaviourWindow, apply_batch, decode_window, encode_window

logger = logging.getLogger(__name__)

RETRY_FIRST_S = 0.05
# What a failed write can raise: Redis errors, socket errors, a broker write (StoreUnavailable).
_WRITE_ERRORS = (TimeoutError, OSError, StoreUnavailable, *REDIS_ERRORS)
T = TypeVar("T")
REKEYED = "+rekey"
# decoded windows kept between batches (LRU, by user key)
WINDOW_CACHE_SIZE = 100_000


class FatalBatchError(StreamError):
    """The batch cannot be completed; exit without acknowledging it (it will be replayed)."""

    # EX_TEMPFAIL: a restart replays the batch and may well succeed.
    exit_code = 75


class StoreRefusedError(FatalBatchError):
    """Redis kept refusing the write for ``refused_exit_s``: a restart would not help."""

    # EX_CONFIG: fix the configuration (or the server) before starting again.
    exit_code = 78


@dataclass(frozen=True)
class ProcessorConfig:
    clicks_topic: str
    rekey_topic: str
    n_partitions: int
    max_len: int
    horizon_ms: int
    max_skew_ms: int
    retry_max_s: float
    shutdown_grace_s: float
    allow_offset_gaps: bool = False
    refused_exit_s: float = 30.0
    redis_cluster: bool = False

    @classmethod
    def from_settings(cls, settings: Settings, n_partitions: int) -> ProcessorConfig:
        return cls(
            clicks_topic=settings.clicks_topic,
            rekey_topic=rekey_topic_name(settings.app_id, settings.clicks_topic),
            n_partitions=n_partitions,
            max_len=settings.window_max_len,
            horizon_ms=settings.window_horizon_s * 1000,
            max_skew_ms=settings.event_max_skew_s * 1000,
            retry_max_s=settings.stream_retry_max_s,
            shutdown_grace_s=settings.stream_shutdown_grace_s,
            allow_offset_gaps=settings.stream_allow_offset_gaps,
            refused_exit_s=settings.stream_redis_refused_exit_s,
            redis_cluster=settings.redis_cluster,
        )


class SourceMessage(Protocol):
    """What the processor reads of a consumed record (a Faust ``Message`` has all of it)."""

    topic: str
    partition: int
    offset: int
    timestamp: float  # seconds
    headers: Any
    key: bytes | None
    value: bytes | None


class WindowStore(Protocol):
    def get(self, key: bytes) -> bytes | None: ...

    def set(self, key: bytes, value: bytes, message: SourceMessage) -> None:
        """Store a window; ``message`` is the user's latest record (its partition owns the key)."""

    async def flush(self) -> None:
        """Make the windows set since the last flush durable (raise StoreUnavailable if not)."""


class Outbox(Protocol):
    async def dead_letter(self, letter: DeadLetter) -> None: ...

    async def forward(
        self, key: bytes, value: bytes, partition: int, headers: list[tuple[str, bytes]]
    ) -> None: ...

    async def flush(self) -> None:
        """Make the forwarded records durable, in order (raise StoreUnavailable if not)."""


class TowerHolder(Protocol):
    tower: UserTower


RecordWriter = Callable[[Sequence[InterestRecord]], Awaitable[list[bool]]]


@dataclass
class BatchOutcome:
    records: int = 0
    applied: int = 0
    replayed: int = 0
    bad: int = 0
    rekeyed: int = 0
    users: int = 0
    written: int = 0
    kept_newer: int = 0
    bundle: str = ""


@dataclass
class _UserBatch:
    """One user's valid events of a batch, in batch order."""

    behaviours: list[Behaviour] = field(default_factory=list)
    record_ts_ms: list[int] = field(default_factory=list)  # origin record timestamps
    message: Any = None  # the user's latest record (its partition owns the window)


@dataclass
class _Applied:
    """What applying a batch to the windows produced, for the tower and the metrics."""

    windows: list[BehaviourWindow] = field(default_factory=list)  # per user, in batch order
    fresh_ts: list[int] = field(default_factory=list)  # timestamps of the new events
    unknown: int = 0  # new events whose item the bundle does not know


def source_id(topic: str, partition: int, forwarded: bool) -> str:
    """The window's de-duplication channel of an event: its origin partition, and the path.

    A re-keyed event travels through the re-key topic and arrives later than direct events of
    the same origin partition with higher offsets, so the two paths are separate channels (a
    record always takes the same path). Direct events reach the window in offset order
    ("offset <= last applied" means replay); re-keyed ones can overtake each other across a
    crash, so they are de-duplicated by the exact offsets applied (``Behaviour.ordered``).
    """
    return f"{topic}/{partition}{REKEYED}" if forwarded else f"{topic}/{partition}"


def _headers(raw: Any) -> list[tuple[str, bytes]]:
    if not raw:
        return []
    items: Iterable[Any] = raw.items() if hasattr(raw, "items") else raw
    return [(str(name), bytes(value or b"")) for name, value in items]


def span(messages: Sequence[SourceMessage]) -> str:
    """``topic[partition] first..last`` for each partition in a batch, for logs."""
    ranges: dict[tuple[str, int], list[int]] = {}
    for m in messages:
        r = ranges.setdefault((m.topic, m.partition), [m.offset, m.offset])
        r[0], r[1] = min(r[0], m.offset), max(r[1], m.offset)
    return " ".join(f"{t}[{p}]{lo}..{hi}" for (t, p), (lo, hi) in sorted(ranges.items()))


class BatchProcessor:
    """Turns micro-batches of click records into Redis interest records."""

    def __init__(
        self,
        config: ProcessorConfig,
        holder: TowerHolder,
        store: WindowStore,
        outbox: Outbox,
        writer: RecordWriter,
        *,
        metrics: StreamMetrics,
        stopping: Callable[[], bool] = lambda: False,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        run_tower: Callable[[UserTower, list[tuple[str, ...]]], Awaitable[list[Any]]] | None = None,
        window_cache_size: int = WINDOW_CACHE_SIZE,
    ) -> None:
        self.config = config
        self.holder = holder
        self.store = store
        self.outbox = outbox
        self.writer = writer
        self.metrics = metrics
        self.stopping = stopping
        self.sleep = sleep
        self.clock = clock
        self.run_tower = run_tower or _tower_inline
        self.window_cache_size = window_cache_size
        self._decoded: OrderedDict[bytes, tuple[bytes, BehaviourWindow]] = OrderedDict()
        self.failing_since: dict[str, float] = {}
        # target -> the name of the unrecoverable error it keeps failing with
        self.refused: dict[str, str] = {}
        self.offset_guard = OffsetGuard()
        self.last_batch_at: float | None = None
        self.batches = 0

    async def process(self, messages: Sequence[SourceMessage]) -> BatchOutcome:
        """Process one batch; raise FatalBatchError only if it must not be acknowledged."""
        try:
            return await self._process(messages)
        except FatalBatchError:
            raise
        except Exception as exc:
            raise FatalBatchError(f"unexpected error in batch {span(messages)}: {exc!r}") from exc

    async def _process(self, messages: Sequence[SourceMessage]) -> BatchOutcome:
        """The batch's steps, in order; the broker writes (re-keyed clicks, changelog) run
        while the tower runs and Redis is written, and all must succeed before it returns."""
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("batch %s", span(messages))
        self._check_offsets(messages)
        tower = self.holder.tower
        outcome = BatchOutcome(records=len(messages), bundle=tower.version)
        per_user = await self._route(messages, outcome)
        # Re-keyed clicks must be in the re-key topic, in order, before this batch is acked.
        forwards = asyncio.ensure_future(self._retry("rekey", self.outbox.flush, messages))
        if not per_user:
            await forwards
            self._batch_done()
            return outcome
        applied = self._apply(per_user, tower, outcome)
        # The changelog goes out while the tower runs and Redis is written; both must be
        # acknowledged before this batch is.
        changelog = asyncio.ensure_future(self._retry("changelog", self.store.flush, messages))
        records = await self._recompute(tower, per_user, applied.windows)
        try:
            written = await self._retry("redis", lambda: self.writer(records), messages)
        finally:
            await asyncio.wait({changelog, forwards})
        changelog.result()  # re-raises FatalBatchError
        forwards.result()
        outcome.users = len(records)
        outcome.written = sum(written)
        outcome.kept_newer = len(written) - outcome.written
        self._count_written(outcome, applied)
        self._batch_done()
        return outcome

    async def _route(
        self, messages: Sequence[SourceMessage], outcome: BatchOutcome
    ) -> dict[str, _UserBatch]:
        """Validate each record and send it its way: a bad one to the dead-letter topic, one
        off its user's partition to the re-key topic (``stream.rekey``), the rest into their
        users' batches, in batch order."""
        cfg = self.config
        now_ms = int(time.time() * 1000)
        per_user: dict[str, _UserBatch] = {}
        per_topic: dict[str, int] = {}
        for m in messages:
            per_topic[m.topic] = per_topic.get(m.topic, 0) + 1
            forwarded = m.topic == cfg.rekey_topic
            origin = await self._origin(m, forwarded)
            if origin is None:
                outcome.bad += 1
                continue
            o_topic, o_partition, o_offset, o_ts = origin
            try:
                event = decode_event(
                    m.key, m.value, now_ms=now_ms, max_future_skew_ms=cfg.max_skew_ms
                )
            except BadEvent as exc:
                await self._dead_letter(
                    m, exc.reason, exc.detail, o_topic, o_partition, o_offset, o_ts
                )
                outcome.bad += 1
                continue
            key = event.user_id.encode("utf-8")
            home = user_partition(key, cfg.n_partitions)
            if m.key is None or m.partition != home:
                why = "no_key" if m.key is None else "wrong_partition"
                # decode_event has rejected a missing value already
                value = cast(bytes, m.value)
                await self.outbox.forward(
                    key, value, home, origin_headers(o_topic, o_partition, o_offset, o_ts)
                )
                self.metrics.rekeyed.labels(why).inc()
                outcome.rekeyed += 1
                continue
            batch = per_user.get(event.user_id)
            if batch is None:
                batch = per_user[event.user_id] = _UserBatch()
            source = source_id(o_topic, o_partition, forwarded)
            batch.behaviours.append(
                Behaviour(event.item_id, event.ts, source, o_offset, ordered=not forwarded)
            )
            batch.record_ts_ms.append(o_ts)
            batch.message = m
        for topic, n in per_topic.items():
            self.metrics.events_in.labels(topic).inc(n)
        self.metrics.batch_events.observe(len(messages))
        return per_user

    async def _origin(self, m: SourceMessage, forwarded: bool) -> tuple[str, int, int, int] | None:
        """Where a record was first written (topic, partition, offset, timestamp in ms): its own
        position, or for a re-keyed one the origin in its headers. None, after dead-lettering
        it, when a re-keyed record's origin headers are unreadable."""
        ts_ms = int(m.timestamp * 1000)
        if not forwarded:
            return m.topic, m.partition, m.offset, ts_ms
        try:
            return parse_origin(_headers(m.headers))
        except StreamError as exc:
            await self._dead_letter(
                m, "bad_origin", str(exc), m.topic, m.partition, m.offset, ts_ms
            )
            return None

    def _apply(
        self, per_user: dict[str, _UserBatch], tower: UserTower, outcome: BatchOutcome
    ) -> _Applied:
        """Apply each user's behaviours to their window (replays change nothing) and store the
        windows that changed (made durable by the store's flush)."""
        cfg = self.config
        applied = _Applied()
        index = tower.bundle.item_index
        for user, batch in per_user.items():
            key = user.encode("utf-8")
            old = self._load_window(key, batch.message)
            window, new = apply_batch(
                old, batch.behaviours, max_len=cfg.max_len, horizon_ms=cfg.horizon_ms
            )
            n_new = sum(new)
            if n_new:
                raw = encode_window(window)
                self.store.set(key, raw, batch.message)
                self._remember(key, raw, window)
                for b, ts, is_new in zip(batch.behaviours, batch.record_ts_ms, new, strict=True):
                    if is_new:
                        applied.fresh_ts.append(ts)
                        if b.item_id not in index:
                            applied.unknown += 1
            outcome.applied += n_new
            outcome.replayed += len(batch.behaviours) - n_new
            applied.windows.append(window)
        return applied

    async def _recompute(
        self,
        tower: UserTower,
        per_user: dict[str, _UserBatch],
        windows: list[BehaviourWindow],
    ) -> list[InterestRecord]:
        """Run the tower once over the users' windows (in ``per_user`` order) and build each
        user's interest record, stamped with the newest source position applied."""
        started = time.perf_counter()
        interests = await self.run_tower(tower, [w.items for w in windows])
        self.metrics.tower_latency.observe(time.perf_counter() - started)
        updated_ms = int(time.time() * 1000)
        records = []
        for (user, batch), window, result in zip(per_user.items(), windows, interests, strict=True):
            source = batch.behaviours[-1].source
            records.append(
                InterestRecord(
                    user_id=user,
                    vectors=result.vectors,
                    k=result.k,
                    dim=tower.dim,
                    model=tower.version,
                    event_ts=window.newest_ts or 0,
                    updated_ms=updated_ms,
                    n_behaviours=len(window),
                    seq=window.seq,
                    src=f"{source.removesuffix(REKEYED)}/{window.offsets[source]}",
                    items=window.items,
                )
            )
        return records

    def _count_written(self, outcome: BatchOutcome, applied: _Applied) -> None:
        """The metrics of a batch whose records are written."""
        done_s = time.time()
        for ts in applied.fresh_ts:
            self.metrics.freshness.observe(max(0.0, done_s - ts / 1000))
        self.metrics.events_applied.inc(outcome.applied)
        self.metrics.events_replayed.inc(outcome.replayed)
        self.metrics.unknown_items.inc(applied.unknown)
        self.metrics.batch_users.observe(outcome.users)
        self.metrics.users_recomputed.inc(outcome.users)
        self.metrics.records_written.labels("written").inc(outcome.written)
        self.metrics.records_written.labels("kept_newer").inc(outcome.kept_newer)

    def _check_offsets(self, messages: Sequence[SourceMessage]) -> None:
        """Refuse a batch that follows skipped records (see stream.continuity)."""
        holes = self.offset_guard.check((m.topic, m.partition, m.offset) for m in messages)
        for hole in holes:
            self.metrics.offset_holes.labels(hole.topic).inc()
            logger.error("records skipped by the consumer: %s", hole)
        if holes and not self.config.allow_offset_gaps:
            raise FatalBatchError(
                f"records skipped before batch {span(messages)}: "
                + ", ".join(str(h) for h in holes)
                + "; restarting replays them from the committed offsets (a topic with real "
                "offset gaps needs MINDSTREAM_STREAM_ALLOW_OFFSET_GAPS=true)"
            )

    def _remember(self, key: bytes, raw: bytes, window: BehaviourWindow) -> None:
        # Decoding a window costs about as much as applying an event to it; the table holds
        # the same bytes, so a hit is exact (compared by value, a miss just decodes).
        self._decoded[key] = (raw, window)
        self._decoded.move_to_end(key)
        if len(self._decoded) > self.window_cache_size:
            self._decoded.popitem(last=False)

    def _batch_done(self) -> None:
        self.batches += 1
        self.last_batch_at = time.time()
        self.metrics.last_batch.set(self.last_batch_at)

    def _load_window(self, key: bytes, message: SourceMessage) -> BehaviourWindow | None:
        raw = self.store.get(key)
        if raw is None:
            return None
        cached = self._decoded.get(key)
        if cached is not None and cached[0] == raw:
            self._decoded.move_to_end(key)
            return cached[1]
        try:
            return decode_window(raw)
        except StreamError as exc:
            # Not retryable: a window this code cannot read starts afresh (and says so).
            logger.error(
                "window reset user_key=%r topic=%s partition=%d offset=%d error=%s",
                key[:64],
                message.topic,
                message.partition,
                message.offset,
                exc,
            )
            return None

    async def _dead_letter(
        self,
        m: SourceMessage,
        reason: str,
        detail: str,
        topic: str,
        partition: int,
        offset: int,
        timestamp_ms: int,
    ) -> None:
        logger.warning(
            "bad event reason=%s topic=%s partition=%d offset=%d detail=%s",
            reason,
            topic,
            partition,
            offset,
            detail[:200],
        )
        self.metrics.bad_events.labels(reason).inc()
        original = [(n, v) for n, v in _headers(m.headers) if not n.startswith("mindstream.")]
        await self.outbox.dead_letter(
            DeadLetter(
                key=m.key,
                value=m.value,
                reason=reason,
                detail=detail,
                source_topic=topic,
                source_partition=partition,
                source_offset=offset,
                source_timestamp_ms=timestamp_ms,
                original_headers=tuple(original),
            )
        )

    async def _retry(
        self, target: str, operation: Callable[[], Awaitable[T]], messages: Sequence[SourceMessage]
    ) -> T:
        """Run ``operation`` until it succeeds (backoff doubling to retry_max_s); while the
        worker is stopping, give up after shutdown_grace_s with FatalBatchError; when every
        failure for refused_exit_s was one that retrying cannot fix, give up with
        StoreRefusedError."""
        failures, latency = self.metrics.write_target(target)
        delay = RETRY_FIRST_S
        stop_seen: float | None = None
        refused_since: float | None = None
        attempt = 0
        while True:
            attempt += 1
            started = time.perf_counter()
            try:
                result = await operation()
            except _WRITE_ERRORS as exc:
                failures.inc()
                self.failing_since.setdefault(target, time.time())
                reason = unrecoverable_reason(exc, cluster=self.config.redis_cluster)
                if reason is None:
                    refused_since = None
                    self.refused.pop(target, None)
                    logger.warning(
                        "%s write failed attempt=%d batch=%s retry_in_s=%.2f error=%r",
                        target,
                        attempt,
                        span(messages),
                        delay,
                        exc,
                    )
                else:
                    now = self.clock()
                    refused_since = refused_since if refused_since is not None else now
                    self.refused[target] = reason
                    left = self.config.refused_exit_s - (now - refused_since)
                    logger.error(
                        "%s write refused, retrying cannot fix it reason=%r attempt=%d batch=%s "
                        "exit_in_s=%.1f error=%r",
                        target,
                        reason,
                        attempt,
                        span(messages),
                        max(0.0, left),
                        exc,
                    )
                    if left <= 0:
                        raise StoreRefusedError(
                            f"{target} refused every write for {now - refused_since:.1f} s "
                            f"({reason}): {exc} - fix the Redis settings (REDIS_URL, "
                            "MINDSTREAM_REDIS_SSL_*, MINDSTREAM_REDIS_CLUSTER) or the server "
                            "(ACL, cluster slots) and start the worker again; batch "
                            f"{span(messages)} is not written and not committed"
                        ) from exc
                if self.stopping():
                    stop_seen = stop_seen if stop_seen is not None else time.monotonic()
                    if time.monotonic() - stop_seen >= self.config.shutdown_grace_s:
                        raise FatalBatchError(
                            f"stopping while {target} writes keep failing; batch "
                            f"{span(messages)} is not written and must not be committed"
                        ) from exc
                await self.sleep(delay)
                delay = min(delay * 2, self.config.retry_max_s)
                continue
            latency.observe(time.perf_counter() - started)
            self.refused.pop(target, None)
            since = self.failing_since.pop(target, None)
            if since is not None:
                logger.info(
                    "%s write recovered after_s=%.1f attempts=%d",
                    target,
                    time.time() - since,
                    attempt,
                )
            return result

    @property
    def redis_failing_since(self) -> float | None:
        return self.failing_since.get("redis")


async def _tower_inline(tower: UserTower, windows: list[tuple[str, ...]]) -> list[Any]:
    # Inline: a batch's tower call takes milliseconds, and a thread hand-off per batch did not
    # pay on 2 busy cores, with the intake gathering the next batch meanwhile or without it
    # (BENCHMARKS.md: the same or worse at 5,000 and 6,000 events/s).
    return tower.compute(windows)
