"""What the agent holds at run time: the hot-swappable tower, Redis, the batch processor and
the worker's metrics (``stream.metrics.StreamMetrics``, given to it: the processor records the
batches there, the runtime the bundle reloads and the tower in use).

Also the Faust adapters the processor is written against (window table, Kafka outbox) and the
one way out when a batch cannot be completed: exit the process at once, before Faust can
acknowledge and commit the batch (it is replayed on restart; every step is idempotent). The
exit status says whether a restart can help: 75 (temporary) or 78 (configuration: Redis
refuses the worker's requests).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from typing import Any

import redis.asyncio
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaError,
    OutOfOrderSequenceNumber,
    UnknownProducerId,
)
from faust.types import TP

from mindstream.kafka_config import aiokafka_producer_kwargs
from mindstream.redis_config import RedisConfigError, async_redis_client, check_redis
from mindstream.settings import Settings
from model_export.bundle import BundleLink
from model_export.exceptions import BundleError
from stream import faust_internals
from stream.batchwriter import MAX_BATCH_BYTES, BatchWriter, OutRecord
from stream.deadletter import DeadLetter
from stream.exceptions import StoreUnavailable, TowerError
from stream.metrics import StreamMetrics
from stream.processor import (
    BatchProcessor,
    FatalBatchError,
    ProcessorConfig,
    SourceMessage,
    StoreRefusedError,
    span,
)
from stream.record import write_records_async
from stream.rekey import rekey_topic_name
from stream.tower import UserTower

logger = logging.getLogger(__name__)

# EX_TEMPFAIL: the batch in flight was not written; restart and it is replayed.
EXIT_UNWRITTEN = FatalBatchError.exit_code
# EX_CONFIG: Redis refuses the worker as configured; a restart alone would fail the same way.
EXIT_REFUSED = StoreRefusedError.exit_code


def exit_without_commit(reason: str, code: int = EXIT_UNWRITTEN) -> None:
    """Leave now: no acknowledgement, no commit, no changelog flush. Never returns."""
    logger.critical("exiting without committing the batch in flight: %s", reason)
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    os._exit(code)


# Answers after which an idempotent producer's sequence numbers no longer match what the
# brokers hold for its producer id. Seen on Apache Kafka after a restart of the whole cluster
# mid-write: OutOfOrderSequenceNumber on every retry, for good (aiokafka keeps the producer id
# and the sequence numbers). A new producer gets a new id and starts its sequences afresh.
PRODUCER_STATE_LOST = (OutOfOrderSequenceNumber, UnknownProducerId, InvalidProducerEpoch)
PRODUCER_STOP_TIMEOUT_S = 5.0


class ProducerRenewal:
    """Replaces the producer the batch writers share by a new one (see PRODUCER_STATE_LOST)."""

    def __init__(self, make: Any, writers: list[BatchWriter]) -> None:
        self.make = make  # () -> a new, not yet started AIOKafkaProducer
        self.writers = writers
        self.renewals = 0

    @property
    def producer(self) -> Any:
        return self.writers[0].producer

    async def renew(self) -> None:
        old = self.producer
        new = self.make()
        await new.start()
        for writer in self.writers:
            writer.producer = new
        self.renewals += 1
        logger.warning("kafka producer replaced renewals=%d", self.renewals)
        # the old one may hold batches it can never deliver: do not wait for them for long
        with contextlib.suppress(Exception):
            await asyncio.wait_for(old.stop(), PRODUCER_STOP_TIMEOUT_S)


async def write_or_unavailable(
    writer: BatchWriter,
    records: list[OutRecord],
    what: str,
    renewal: ProducerRenewal | None = None,
) -> None:
    """Write ``records`` through ``writer``; a broker failure becomes StoreUnavailable, which
    the processor retries (``what`` names the topic in the error). When the brokers lost the
    producer's idempotence state, the producer is replaced first, so the retry can succeed."""
    try:
        await writer.write(records)
    except PRODUCER_STATE_LOST as exc:
        if renewal is not None:
            await renewal.renew()
        raise StoreUnavailable(f"{what} write failed: {exc!r}; producer replaced") from exc
    except (KafkaError, OSError, TimeoutError) as exc:
        raise StoreUnavailable(f"{what} write failed: {exc!r}") from exc


class TableWindowStore:
    """The window table: the changelog records of a batch are produced together by
    :meth:`flush` (see ``stream.batchwriter``), and only once they are acknowledged is the
    table's store written, directly (with the user's event as Faust's current event, which a
    RocksDB store needs for the partition).

    That order matters for a store that outlives the process (RocksDB): written first, a
    SIGKILL before the changelog write left windows the changelog lacked; after the restart
    their events were skipped as replays and committed, so a worker recovering from the
    changelog alone (another machine, a lost disk) lost them (2 of 9 runs of
    tests/integration/test_stream_rocksdb.py, e.g. 7 events of one user; 0 of 9 since).
    """

    def __init__(
        self, table: Any, writer: BatchWriter, renewal: ProducerRenewal | None = None
    ) -> None:
        self.table = table
        self.writer = writer
        self.renewal = renewal
        self.pending: list[OutRecord] = []
        self.unflushed: dict[bytes, tuple[bytes, SourceMessage]] = {}

    def get(self, key: bytes) -> bytes | None:
        unflushed = self.unflushed.get(key)
        if unflushed is not None:
            return unflushed[0]
        value = self.table.get(key)
        return None if value is None else bytes(value)

    def set(self, key: bytes, value: bytes, message: SourceMessage) -> None:
        self.unflushed[key] = (value, message)
        self.pending.append((message.partition, key, value, []))

    async def flush(self) -> None:
        if not self.pending:
            return
        await write_or_unavailable(self.writer, self.pending, "window changelog", self.renewal)
        for key, (value, message) in self.unflushed.items():
            self._write_store(key, value, message)
        self.pending = []
        self.unflushed = {}

    def _write_store(self, key: bytes, value: bytes, message: SourceMessage) -> None:
        faust_internals.write_table_store(self.table, key, value, message)


class KafkaOutbox:
    """Dead letters through the app's producer (flushed by Faust before each commit); re-keyed
    clicks gathered per batch and written in order by :meth:`flush` (``stream.batchwriter``)."""

    def __init__(
        self, dead_letters: Any, rekey: BatchWriter, renewal: ProducerRenewal | None = None
    ) -> None:
        self.dead_letters = dead_letters
        self.rekey = rekey
        self.renewal = renewal
        self.pending: list[OutRecord] = []

    async def dead_letter(self, letter: DeadLetter) -> None:
        await self.dead_letters.send(key=letter.key, value=letter.value, headers=letter.headers())

    async def forward(
        self, key: bytes, value: bytes, partition: int, headers: list[tuple[str, bytes]]
    ) -> None:
        self.pending.append((partition, key, value, headers))

    async def flush(self) -> None:
        if not self.pending:
            return
        await write_or_unavailable(self.rekey, self.pending, "re-key topic", self.renewal)
        self.pending = []


class Runtime:
    """The worker's state between batches."""

    def __init__(
        self,
        settings: Settings,
        tower: UserTower,
        redis_client: redis.asyncio.Redis,
        processor_config: ProcessorConfig,
        store: Any,
        outbox: Any,
        stopping: Any,
        metrics: StreamMetrics,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.tower = tower
        self.redis = redis_client
        self.bundle_link = BundleLink(settings.bundle_path)
        self.producers: ProducerRenewal | None = None
        self.processor = BatchProcessor(
            processor_config,
            self,
            store,
            outbox,
            functools.partial(
                write_records_async,
                redis_client,
                settings.redis_prefix,
                wait_replicas=settings.redis_wait_replicas,
                wait_timeout_ms=settings.redis_wait_timeout_ms,
            ),
            metrics=metrics,
            stopping=stopping,
        )
        self._export_tower_info(None)

    @classmethod
    async def start(
        cls,
        settings: Settings,
        n_partitions: int,
        table: Any,
        dead_letters: Any,
        stopping: Any,
        metrics: StreamMetrics,
    ) -> Runtime:
        loop = asyncio.get_running_loop()

        def make_producer() -> AIOKafkaProducer:
            return AIOKafkaProducer(
                **{
                    **aiokafka_producer_kwargs(settings, client_id=f"{settings.app_id}-batches"),
                    # batches are composed explicitly (stream.batchwriter), so the profile's one
                    # record per batch does not apply; durability as Faust's own producer
                    "max_batch_size": MAX_BATCH_BYTES,
                    "acks": "all",
                }
            )

        producer = make_producer()
        await producer.start()
        topic = table.changelog_topic.get_topic_name()

        def persisted(partition: int, offset: int) -> None:
            faust_internals.set_persisted_offset(table, TP(topic, partition), offset)

        tail = settings.profile.single_record_tail_batch
        writer = BatchWriter(producer, topic, single_record_tail=tail, on_persisted=persisted)
        rekey = BatchWriter(
            producer,
            rekey_topic_name(settings.app_id, settings.clicks_topic),
            single_record_tail=tail,
        )
        renewal = ProducerRenewal(make_producer, [writer, rekey])
        outbox = KafkaOutbox(dead_letters, rekey, renewal)
        store = TableWindowStore(table, writer, renewal)
        tower = await loop.run_in_executor(
            None,
            functools.partial(
                UserTower.load,
                settings.bundle_path,
                provider=settings.onnx_provider,
                threads=settings.onnx_threads,
            ),
        )
        try:
            await loop.run_in_executor(None, check_redis, settings)
        except RedisConfigError as exc:
            exit_without_commit(str(exc), EXIT_REFUSED)
        except Exception as exc:  # Redis down now: the writes retry until it is back
            logger.warning("redis not checked at start (the writes retry) error=%r", exc)
        client = async_redis_client(settings, socket_timeout=5.0, socket_connect_timeout=5.0)
        config = ProcessorConfig.from_settings(settings, n_partitions)
        logger.info(
            "stream runtime ready bundle=%s provider=%s partitions=%d batch_size=%d "
            "deadline_ms=%d rekey_topic=%s loop=%s",
            tower.version,
            tower.provider,
            n_partitions,
            settings.batch_size,
            settings.batch_deadline_ms,
            config.rekey_topic,
            type(loop).__module__.split(".")[0],
        )
        runtime = cls(settings, tower, client, config, store, outbox, stopping, metrics)
        runtime.producers = renewal
        return runtime

    async def run_batch(self, messages: list[SourceMessage]) -> None:
        """Process a batch to the end; if that is impossible, exit without acknowledging it."""
        task = asyncio.ensure_future(self.processor.process(messages))
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            # Cancelled mid-batch (the worker is stopping): finish it, so that it can be
            # acknowledged and committed, or leave without committing it.
            logger.info("finishing the batch in flight before stopping batch=%s", span(messages))
            done, _ = await asyncio.wait({task}, timeout=self.settings.stream_shutdown_grace_s)
            if not done or task.exception() is not None:
                exit_without_commit(f"batch {span(messages)} not completed while stopping")
            raise
        except FatalBatchError as exc:
            exit_without_commit(str(exc), exc.exit_code)

    async def maybe_reload(self) -> bool:
        """Swap in the bundle the link points to now, if it is new and verifies."""
        target = self.bundle_link.new_target(self.tower.bundle.path)
        if target is None:
            return False
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            tower = await loop.run_in_executor(
                None,
                functools.partial(
                    UserTower.load,
                    target,
                    provider=self.settings.onnx_provider,
                    threads=self.settings.onnx_threads,
                ),
            )
        except (BundleError, TowerError, OSError) as exc:
            self.metrics.bundle_reloads.labels("rejected").inc()
            logger.error("bundle reload rejected path=%s error=%s", target, exc)
            return False
        old = self.tower
        self.tower = tower  # the batch in flight keeps the tower it started with
        self.metrics.bundle_reloads.labels("swapped").inc()
        self._export_tower_info(old)
        logger.info(
            "bundle swapped from=%s to=%s provider=%s load_s=%.2f",
            old.version,
            tower.version,
            tower.provider,
            time.perf_counter() - started,
        )
        return True

    def _export_tower_info(self, old: UserTower | None) -> None:
        if old is not None:
            with contextlib.suppress(KeyError):
                self.metrics.tower_info.remove(old.version, old.provider)
        self.metrics.tower_info.labels(self.tower.version, self.tower.provider).set(1)

    def health(self) -> tuple[bool, dict[str, Any]]:
        p = self.processor
        now = time.time()
        healthy = not p.failing_since
        return healthy, {
            "status": "refused" if p.refused else "ok" if healthy else "degraded",
            # target -> why it is refused (retrying cannot fix it; the worker exits soon)
            "refused": dict(p.refused),
            "bundle": self.tower.version,
            "provider": self.tower.provider,
            "batches": p.batches,
            "last_batch_age_s": None
            if p.last_batch_at is None
            else round(now - p.last_batch_at, 3),
            "failing_for_s": {name: round(now - t, 3) for name, t in p.failing_since.items()},
        }

    async def close(self) -> None:
        await self.redis.aclose()  # type: ignore[attr-defined]  # stubs predate redis 5
        if self.producers is not None:
            await self.producers.producer.stop()
