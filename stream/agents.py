"""The worker's agent (micro-batches of clicks -> Redis), the bundle watcher, the rebalance
rewind, and the health and metrics pages.

Importing this module only declares them on the app (``stream.app``). What the worker process
needs besides is done by :func:`start_worker`, which Faust's worker command runs through
``app.on_worker_init`` (``mindstream stream worker`` and ``faust -A stream.agents:app worker``
alike), before the app starts: it installs ``stream.faust_internals`` (the source records go
from the consumer's fetch loop to the intake, ``stream.intake``), sets the cyclic garbage
collector's thresholds and creates the worker's metrics (``stream.metrics.StreamMetrics``,
with the consumer lag collector of ``stream.lag``), which the runtime records in and the
``/metrics`` page serves.

Without :func:`start_worker` (Faust's ``agent.test_context()``), the agent takes the records
Faust delivers through its stream into the same intake, so the same batch path can be
unit-tested.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Any

from stream import faust_internals
from stream.app import app, settings
from stream.continuity import OffsetGuard
from stream.intake import Intake
from stream.lag import ConsumerLagCollector, ListedEnds, source_offsets
from stream.metrics import CONTENT_TYPE, StreamMetrics
from stream.positions import SeekOnce, limit_commits, rewind_to_committed, skip_seek_after_rewind
from stream.rekey import rekey_topic_name
from stream.runtime import Runtime, exit_without_commit
from stream.tables import windows
from stream.topics import clicks_in, dead_letters

logger = logging.getLogger(__name__)

# The worker makes and drops many small objects per event, nearly all freed by reference
# counting; with the default thresholds (700, 10, 10) the cyclic collector ran 7,608 + 692 + 63
# times in a 120 s run at 5,000 events/s, 10.3 s of CPU in all, pauses up to 105 ms. With these:
# 7 collections, 0.1 s; worker CPU per event 0.171 -> 0.155 ms (BENCHMARKS.md).
GC_THRESHOLDS = (50_000, 20, 100)
BATCH_DEADLINE_S = max(settings.batch_deadline_ms, 1) / 1000  # 0 would wait for a full batch
INTAKE_BATCHES = 2  # records fetched ahead of the batch in flight, in batches
_runtime: Runtime | None = None
_runtime_lock = asyncio.Lock()
# where each source partition of the current assignment must continue (see stream.continuity)
_offset_guard = OffsetGuard()
_seek_once: SeekOnce | None = None
SOURCES = frozenset(
    {settings.clicks_topic, rekey_topic_name(settings.app_id, settings.clicks_topic)}
)
# mindstream_stream_consumer_lag_records, computed at each scrape (see stream.lag)
_listed_ends = ListedEnds()
# the records of SOURCES, from the consumer's fetch loop to process_clicks (see stream.intake)
_intake = Intake(INTAKE_BATCHES * settings.batch_size)
# the worker's metrics, created by start_worker
_metrics: StreamMetrics | None = None


@app.on_worker_init.connect  # type: ignore[arg-type]
def start_worker(sender: Any, **kwargs: Any) -> None:
    """Prepare this process to run the worker (see the module's docstring); refuses, with
    :class:`~stream.faust_internals.FaustInternalsMismatch`, on a Faust it was not written for.
    Faust sends ``on_worker_init`` twice when the app is started by ``app.main()``: the second
    time changes nothing."""
    global _metrics
    if faust_internals.installed(app):
        return
    faust_internals.install(
        app,
        _intake,
        SOURCES,
        fetch_max_wait_ms=settings.profile.consumer_fetch_max_wait_ms,
    )
    gc.set_threshold(*GC_THRESHOLDS)
    _metrics = StreamMetrics()
    _metrics.registry.register(
        ConsumerLagCollector(lambda: source_offsets(app.consumer, SOURCES, _listed_ends.ends))
    )


async def get_runtime() -> Runtime:
    global _runtime
    async with _runtime_lock:
        if _runtime is None:
            if _metrics is None:
                raise RuntimeError("start_worker has not run: no metrics to record in")
            n = app.consumer.topic_partitions(settings.clicks_topic) or settings.topic_partitions
            if n != settings.topic_partitions:
                exit_without_commit(
                    f"topic {settings.clicks_topic} has {n} partitions but "
                    f"MINDSTREAM_TOPIC_PARTITIONS={settings.topic_partitions}: the window "
                    "changelog must have as many partitions as its source"
                )
            _runtime = await Runtime.start(
                settings,
                n,
                windows,
                dead_letters,
                stopping=lambda: app.should_stop,
                metrics=_metrics,
            )
            _runtime.processor.offset_guard = _offset_guard
        return _runtime


@app.agent(clicks_in)
async def process_clicks(stream: Any) -> None:
    """Micro-batches of click records: one recompute per dirty user, one Redis pipeline.

    The records come from the intake (``stream.intake``), which the consumer's fetch loop fills
    (``stream.faust_internals``); the stream is what subscribes the consumer to the topics
    (Faust does that when it creates it) and delivers nothing then. Without the fetch loop
    (Faust's test context), the records the stream delivers go into the intake."""
    runtime = await get_runtime()
    feeding = None
    if not faust_internals.installed(app):
        feeding = asyncio.ensure_future(_feed_intake(stream, _intake))
    try:
        await _run_batches(runtime)
    finally:
        if feeding is not None:
            feeding.cancel()


async def _run_batches(runtime: Runtime) -> None:
    consumer = app.consumer
    inbound = app.monitor.stream_inbound_time
    while True:
        messages = await _intake.next_batch(settings.batch_size, BATCH_DEADLINE_S)
        now = time.monotonic()
        for tp in {m.tp for m in messages}:
            inbound[tp] = now  # what Faust's stream records, for its slow-stream warnings
        await runtime.run_batch(messages)
        _intake.acknowledge(consumer, app.sensors, messages)


async def _feed_intake(stream: Any, intake: Intake) -> None:
    """Put the records ``stream`` delivers into ``intake`` (acknowledged after their batch)."""
    async for event in stream.noack().events():
        while not await intake.wait_for_room(1.0):
            pass
        intake.put(event.message)


if settings.stream_watch_interval_s > 0:

    @app.timer(interval=settings.stream_watch_interval_s)
    async def watch_bundle() -> None:
        if _runtime is not None:
            await _runtime.maybe_reload()


@app.on_rebalance_complete.connect  # type: ignore[arg-type]
async def rewind_sources(sender: Any, **kwargs: Any) -> None:
    """See stream.positions: no record may be skipped across a rebalance. Sent by Faust's
    recovery after an assignment, before it resumes the source partitions and seeks them
    (a seek this rewind has done, so that one is skipped)."""
    global _seek_once
    if _seek_once is None:
        _seek_once = skip_seek_after_rewind(app.consumer)
        limit_commits(app.consumer, set(SOURCES), _offset_guard.next_expected)
    positions = await rewind_to_committed(
        app.consumer, settings, app.consumer.assignment(), set(SOURCES)
    )
    _offset_guard.reset({(tp.topic, tp.partition): offset for tp, offset in positions.items()})
    _seek_once.arm()


@app.page("/health")
async def health(self: Any, request: Any) -> Any:
    """200 when consuming with recovered tables and Redis writes succeed; 503 otherwise."""
    if _runtime is None or not app.tables.recovery.completed.is_set():  # type: ignore[attr-defined]
        return self.json({"status": "starting"}, status=503)
    healthy, state = _runtime.health()
    if healthy and app.rebalancing:
        healthy, state["status"] = False, "rebalancing"
    return self.json(state, status=200 if healthy else 503)


@app.page("/metrics")
async def prometheus_metrics(self: Any, request: Any) -> Any:
    """The worker's metrics (``stream.metrics``) in Prometheus's text format."""
    if _metrics is None:
        return self.text("starting\n", status=503)
    await _listed_ends.refresh(app.consumer, SOURCES)
    return self.bytes(_metrics.exposition(), content_type=CONTENT_TYPE)


@app.on_before_shutdown.connect  # type: ignore[arg-type]
async def close_runtime(sender: Any, **kwargs: Any) -> None:
    if _runtime is not None:
        await _runtime.close()
