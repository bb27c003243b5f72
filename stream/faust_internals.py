"""Every use of a Faust or aiokafka private name in the worker, behind one door.

The worker relies on a few internals of faust-streaming (the consumer's fetch loop and its
offset bookkeeping, the context variable that names the event being processed) and on one
attribute of aiokafka's consumer. They are all here, and nothing is changed until
:func:`install` runs, which the worker does when it starts (``stream.agents.start_worker``),
never on import:

- the fetch loop (``Consumer._drain_messages``) is replaced, for the worker's app only, by
  :func:`drain_messages`: the records of the source topics go to the worker's intake
  (``stream.intake``), every other record the way Faust sends it;
- the aiokafka consumer Faust builds (``AIOKafkaConsumerThread._create_worker_consumer``) gets
  the profile's fetch wait (``KafkaProfile.consumer_fetch_max_wait_ms``): Faust hard-codes
  1,500 ms and aiokafka reads the value only when the consumer starts, after Faust built it;
- :func:`wrap_perform_seek` and :func:`adjust_committable_offsets` wrap the consumer's
  recovery seek and commit computation with the rules of ``stream.positions``;
- :func:`set_committed_offset` and :func:`committed_offsets` write and read Faust's record of
  the committed offsets (``stream.positions``, ``stream.lag``);
- :func:`write_table_store` writes a table's store directly, with the event's partition as
  Faust's current event (``stream.runtime``), and :func:`set_persisted_offset` records the
  changelog offset such a write came from.

:func:`install` refuses to start (:class:`FaustInternalsMismatch`, with what to do) unless
faust-streaming is exactly :data:`FAUST_VERSION` and every function listed in
:data:`FINGERPRINTS` has the source it was read from. The behaviours themselves are covered by
tests against the installed Faust (``tests/unit/stream/test_faust_internals.py``), so an
upgrade fails a test before it reaches a worker. docs/ARCHITECTURE.md ("Faust") says why each
is needed.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import importlib.metadata
import inspect
import logging
import weakref
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from stream.exceptions import StreamError
from stream.intake import Intake, already_read, offset_gap

logger = logging.getLogger(__name__)

FAUST_VERSION = "0.15.3"


@dataclass(frozen=True)
class Fingerprint:
    """A third-party function this module copies, wraps or depends on, as it was read."""

    module: str
    qualname: str
    sha256: str  # first 16 hex digits of sha256(inspect.getsource(function))
    why: str


FINGERPRINTS = (
    Fingerprint(
        "faust.transport.consumer",
        "Consumer._drain_messages",
        "44a2500309e83c63",
        "copied as drain_messages, which replaces it",
    ),
    Fingerprint(
        "faust.transport.consumer",
        "Consumer.perform_seek",
        "0e8c130ff4b0afd8",
        "wrapped by wrap_perform_seek; set_committed_offset records what it records",
    ),
    Fingerprint(
        "faust.transport.consumer",
        "Consumer._filter_committable_offsets",
        "dc5e9baf5d994485",
        "wrapped by adjust_committable_offsets",
    ),
    Fingerprint(
        "faust.transport.consumer",
        "Consumer._add_gap",
        "4df2573ded7c1c2c",
        "called by drain_messages for offset gaps",
    ),
    Fingerprint(
        "faust.transport.drivers.aiokafka",
        "AIOKafkaConsumerThread._create_worker_consumer",
        "c2701bfc3e6f6cad",
        "wrapped by install to set the fetch wait",
    ),
    Fingerprint(
        "faust.streams",
        "current_event",
        "3b821f1a78d86a58",
        "reads the context variable write_table_store sets",
    ),
    Fingerprint(
        "aiokafka.consumer.consumer",
        "AIOKafkaConsumer.start",
        "2f1ba70443327538",
        "reads _fetch_max_wait_ms, which install sets",
    ),
)

FETCHING_FLAG = "FETCHING"  # faust.transport.consumer.CONSUMER_FETCHING
ROOM_POLL_S = 0.1
YIELD_EVERY = 100  # records, as Faust's loop
_INSTALLED = "mindstream_app"  # marks a replaced function with the app it serves


class FaustInternalsMismatch(StreamError):
    """The installed faust-streaming is not the code this module was written against."""


def source_fingerprint(function: Any) -> str:
    return hashlib.sha256(inspect.getsource(function).encode("utf-8")).hexdigest()[:16]


def _resolve(fingerprint: Fingerprint) -> Any:
    target: Any = importlib.import_module(fingerprint.module)
    for name in fingerprint.qualname.split("."):
        target = getattr(target, name)
    return target


def check_faust() -> None:
    """Raise :class:`FaustInternalsMismatch` unless faust-streaming is :data:`FAUST_VERSION`
    and each function of :data:`FINGERPRINTS` has the source it was read from."""
    version = FAUST_VERSION
    installed = importlib.metadata.version("faust-streaming")
    if installed != version:
        raise FaustInternalsMismatch(
            f"stream.faust_internals is written for faust-streaming {version}, and "
            f"{installed} is installed: pin faust-streaming=={version} "
            f"(pip install faust-streaming=={version}), or port the worker to {installed}: "
            "re-check every function listed in stream/faust_internals.py FINGERPRINTS against "
            "its new source, run tests/unit/stream/test_faust_internals.py, then update "
            "FAUST_VERSION and the fingerprints"
        )
    for fp in FINGERPRINTS:
        try:
            got = source_fingerprint(_resolve(fp))
        except (ImportError, AttributeError, OSError, TypeError) as exc:
            got = f"unreadable ({exc!r})"
        if got != fp.sha256:
            raise FaustInternalsMismatch(
                f"{fp.module}.{fp.qualname} is not the code stream.faust_internals was "
                f"written against (source fingerprint {got}, expected {fp.sha256}; it is "
                f"{fp.why}): reinstall faust-streaming=={version} as released, or re-check "
                "the code of stream/faust_internals.py that depends on it against the new "
                "source, run tests/unit/stream/test_faust_internals.py, and update its "
                "fingerprint in FINGERPRINTS"
            )


def install(
    app: Any,
    intake: Intake,
    sources: Collection[str],
    *,
    fetch_max_wait_ms: int | None = None,
) -> None:
    """Check the installed Faust (:func:`check_faust`), then make ``app``'s consumer put the
    records of ``sources`` into ``intake`` and, when ``fetch_max_wait_ms`` is set, wait at most
    that long per fetch. Other apps in the process keep Faust's behaviour."""
    from faust.transport.consumer import Consumer
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    drain = Consumer._drain_messages
    if getattr(drain, _INSTALLED, None) is not None:
        raise FaustInternalsMismatch("stream.faust_internals is installed already")
    check_faust()
    topics = frozenset(sources)

    async def _drain_messages(self: Any, fetcher: Any) -> None:
        if self.app is not app:
            await drain(self, fetcher)
            return
        await drain_messages(self, fetcher, intake, topics)

    setattr(_drain_messages, _INSTALLED, app)
    Consumer._drain_messages = _drain_messages  # type: ignore[method-assign]

    if fetch_max_wait_ms is not None:
        create = AIOKafkaConsumerThread._create_worker_consumer

        def _create_worker_consumer(self: Any, transport: Any) -> Any:
            consumer = create(self, transport)
            if self.app is app:
                consumer._fetch_max_wait_ms = fetch_max_wait_ms
            return consumer

        setattr(_create_worker_consumer, _INSTALLED, app)
        AIOKafkaConsumerThread._create_worker_consumer = _create_worker_consumer  # type: ignore[method-assign]
    logger.info(
        "faust internals installed faust_version=%s sources=%s fetch_max_wait_ms=%s",
        FAUST_VERSION,
        ",".join(sorted(topics)),
        fetch_max_wait_ms,
    )


def installed(app: Any) -> bool:
    """Whether :func:`install` routes ``app``'s source records to an intake."""
    from faust.transport.consumer import Consumer

    return getattr(Consumer._drain_messages, _INSTALLED, None) is app


async def drain_messages(
    consumer: Any, fetcher: Any, intake: Intake, sources: Collection[str]
) -> None:
    """Faust's fetch loop (``Consumer._drain_messages``, faust-streaming 0.15.3), with the
    records of ``sources`` put into ``intake`` instead of sent through the conductor.

    Unlike Faust's loop, a source record is marked as read only once it is in the intake: a
    record fetched while the flow is suspended (a rebalance) is dropped unread, and the rewind
    after the rebalance (``stream.positions``) reads it again."""
    callback = consumer.callback
    get_read_offset = consumer._read_offset.__getitem__
    set_read_offset = consumer._read_offset.__setitem__
    consumer_should_stop = consumer._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    suspended = consumer.suspend_flow.is_set
    track = consumer.track_message
    commit_every = consumer._commit_every
    put = intake.put
    acks_enabled_for = consumer.app.topics.acks_enabled_for
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            consumer.diag.set_flag(FETCHING_FLAG)
            records = consumer.getmany(timeout=1.0)
            await asyncio.sleep(0)  # as Faust's: getmany can return at once, again and again
            if consumer.should_stop:
                continue
            since_yield = 0
            async for tp, message in records:
                since_yield += 1
                if since_yield > YIELD_EVERY:
                    # as Faust's: let the agent and the web endpoint run during a long fetch
                    await asyncio.sleep(0)
                    since_yield = 0
                offset = message.offset
                read = get_read_offset(tp)
                if already_read(read, offset):
                    continue  # Faust drops these too
                gap = offset_gap(read, offset)
                if gap is not None and acks_enabled_for(tp.topic):
                    # Faust's commit bookkeeping must know a gap or it stops committing at it
                    await consumer._add_gap(tp, *gap)
                if commit_every is not None and consumer._n_acked >= commit_every:
                    consumer._n_acked = 0
                    await consumer.commit()
                if tp.topic in sources:
                    if suspended():
                        continue  # not marked as read: the rewind after the rebalance reads it
                    track(message)
                    put(message)
                else:
                    await consumer.wait_first(callback(message), consumer.suspend_flow.wait())
                set_read_offset(tp, offset)
            consumer.diag.unset_flag(FETCHING_FLAG)
            while intake.full and not (suspended() or consumer_should_stop()):
                if fetcher_should_stop():
                    break
                await intake.wait_for_room(ROOM_POLL_S)
    except consumer.consumer_stopped_errors:
        if consumer.transport.app.should_stop:
            logger.info("broker stopped the consumer, shutting down")
            return
        raise
    except asyncio.CancelledError:
        if consumer.transport.app.should_stop:
            return
        raise
    except Exception as exc:
        logger.exception("fetch loop failed: %r", exc)
        raise
    finally:
        consumer.diag.unset_flag(FETCHING_FLAG)


def wrap_perform_seek(
    consumer: Any,
    wrap: Callable[[Callable[[], Awaitable[None]]], Callable[[], Awaitable[None]]],
) -> None:
    """Replace ``consumer.perform_seek`` (Faust's recovery seek) by ``wrap(original)``."""
    consumer.perform_seek = wrap(consumer.perform_seek)


def adjust_committable_offsets(
    consumer: Any,
    adjust: Callable[[dict[Any, int], Mapping[Any, int | None]], dict[Any, int]],
) -> None:
    """Make Faust commit ``adjust(offsets, committed)`` where it would commit ``offsets``
    (what its acknowledgements allow; ``committed``: what it last committed, by partition)."""
    compute = consumer._filter_committable_offsets
    committed = committed_offsets(consumer)

    def filtered(tps: Any) -> dict[Any, int]:
        return adjust(compute(tps), committed)

    consumer._filter_committable_offsets = filtered


def committed_offsets(consumer: Any) -> Mapping[Any, int | None]:
    """Faust's record of the consumer's committed offsets, by partition: set when it commits
    or seeks to the committed offsets (read-only use; ``.get``, a lookup would insert)."""
    committed: Mapping[Any, int | None] = getattr(consumer, "_committed_offset", {})
    return committed


def set_committed_offset(consumer: Any, tp: Any, offset: int) -> None:
    """Record ``offset`` as ``tp``'s committed offset, as Faust's ``perform_seek`` does after
    seeking there (its commit bookkeeping starts from it)."""
    consumer._committed_offset[tp] = offset


class _EventRef:
    """Stands in for the Faust event whose partition owns a table write."""

    __slots__ = ("__weakref__", "message")

    def __init__(self, message: Any) -> None:
        self.message = message


def write_table_store(table: Any, key: bytes, value: bytes, message: Any) -> None:
    """Write ``table``'s store directly (no changelog record), with ``message`` (a record of
    the partition that owns ``key``) as Faust's current event: a RocksDB store picks the
    partition's database from it."""
    import faust.streams

    ref = _EventRef(message)
    token = faust.streams._current_event.set(weakref.ref(ref))  # type: ignore[arg-type]
    try:
        table.data[key] = value
    finally:
        faust.streams._current_event.reset(token)


def set_persisted_offset(table: Any, tp: Any, offset: int) -> None:
    """Tell ``table``'s store that its changelog partition ``tp`` is written up to ``offset``
    (a RocksDB store starts its recovery there)."""
    table.data.set_persisted_offset(tp, offset)
