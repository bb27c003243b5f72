"""A stream worker as a child process, and what a test or a benchmark needs around it.

Used by the integration tests and by ``mindstream bench stream``: start ``python -m stream
worker`` with given settings, wait until it answers ``/health``, read its ``/metrics``, kill it
(SIGKILL) or stop it (SIGTERM); publish click records with kafka-python; read dead letters back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mindstream.kafka_config import kafka_python_consumer_kwargs, kafka_python_producer_kwargs
from mindstream.settings import Settings, known_env
from stream.deadletter import DeadLetter, parse_dead_letter
from stream.exceptions import StreamError

logger = logging.getLogger(__name__)

Record = tuple[bytes | None, bytes | None]


class WorkerProcess:
    """``python -m stream worker`` with ``settings`` as its whole configuration."""

    def __init__(
        self,
        settings: Settings,
        log_path: Path,
        *,
        args: Sequence[str] = (),
        python_args: Sequence[str] = (),
    ) -> None:
        """``python_args`` go before ``-m stream``, e.g. ``["-m", "cProfile", "-o", "w.prof"]``."""
        self.settings = settings
        self.log_path = Path(log_path)
        self.args = list(args)
        self.python_args = list(python_args)
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        if self.running:
            raise StreamError("worker is running already")
        # The settings alone configure the child: drop the caller's own mindstream variables.
        env = {k: v for k, v in os.environ.items() if k not in known_env()}
        env.update(self.settings.as_env())
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start {self.starts} =====\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [sys.executable, *self.python_args, "-m", "stream", "worker", *self.args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.worker_web_port}"

    def health(self) -> tuple[int, dict[str, Any]] | None:
        """(HTTP status, body) of ``/health``, or None when nothing answers."""
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:  # noqa: S310
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")
        except (OSError, ValueError):
            return None

    def wait_ready(self, timeout_s: float = 60.0) -> dict[str, Any]:
        """Wait until ``/health`` answers 200; raise StreamError (with the log) otherwise."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.running:
                raise StreamError(f"worker exited with {self.returncode}:\n{self.log_tail()}")
            answer = self.health()
            if answer is not None and answer[0] == 200:
                return answer[1]
            time.sleep(0.2)
        raise StreamError(f"worker not healthy after {timeout_s:.0f} s:\n{self.log_tail()}")

    def metrics(self) -> dict[str, float]:
        """``/metrics`` as {sample name with labels: value}."""
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as response:  # noqa: S310
            text = response.read().decode()
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return out

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def kill(self) -> int:
        """SIGKILL (no shutdown at all) and reap; returns the exit status."""
        return self._signal(signal.SIGKILL, 30.0)

    def terminate(self, timeout_s: float = 60.0) -> int:
        """SIGTERM (graceful stop) and wait; SIGKILL after ``timeout_s``."""
        try:
            return self._signal(signal.SIGTERM, timeout_s)
        except subprocess.TimeoutExpired:
            logger.warning("worker ignored SIGTERM for %.0f s; killing it", timeout_s)
            return self.kill()

    def _signal(self, sig: signal.Signals, timeout_s: float) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout_s)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.running:
            self.kill()


def publish(
    settings: Settings, records: Iterable[Record], *, topic: str | None = None
) -> list[tuple[int, int]]:
    """Send (key, value) records in order with kafka-python; return their (partition, offset)."""
    from kafka import KafkaProducer

    producer = KafkaProducer(
        **kafka_python_producer_kwargs(settings, client_id="mindstream-publish")
    )
    try:
        futures = [
            producer.send(topic or settings.clicks_topic, key=k, value=v) for k, v in records
        ]
        producer.flush()
        return [(m.partition, m.offset) for m in (f.get(timeout=30) for f in futures)]
    finally:
        producer.close()


@dataclass
class Published:
    """What :func:`publish_batches` sent: events, seconds from first to last acknowledgement."""

    events: int
    seconds: float
    record_batches: int

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def publish_batches(
    settings: Settings,
    records: Sequence[tuple[bytes, bytes]],
    *,
    topic: str | None = None,
    rate: float = 0.0,
    tick_s: float = 0.01,
    chunk: int = 5000,
) -> Published:
    """Send keyed (key, value) records in multi-record batches, each key to its user's partition.

    A load generator that costs the broker and itself far less per event than one record per
    batch: every ``tick_s`` (``rate`` events/s; 0 = as fast as the broker acknowledges, ``chunk``
    records a step) the records due go out as :class:`~stream.batchwriter.BatchWriter` batches,
    in order per partition, with the profile's single-record tail batch (Tansu's "latest
    offset"), and the next step starts once the broker has acknowledged them. A step that falls
    behind takes every record due by then, so the offered rate holds while the broker keeps up.
    Partitions follow :func:`stream.rekey.user_partition` (Kafka's default partitioner).
    """
    if not 0 <= rate < float("inf"):
        raise ValueError(f"rate must be >= 0 events/s, got {rate}")
    for key, _ in records:
        if not key:
            raise StreamError("publish_batches needs every record keyed by its user id")
    return asyncio.run(_publish_batches(settings, records, topic, rate, tick_s, chunk))


async def _publish_batches(
    settings: Settings,
    records: Sequence[tuple[bytes, bytes]],
    topic: str | None,
    rate: float,
    tick_s: float,
    chunk: int,
) -> Published:
    from aiokafka import AIOKafkaProducer

    from mindstream.kafka_config import aiokafka_producer_kwargs
    from stream.batchwriter import MAX_BATCH_BYTES, BatchWriter
    from stream.rekey import user_partition

    topic = topic or settings.clicks_topic
    producer = AIOKafkaProducer(
        **{
            **aiokafka_producer_kwargs(settings, client_id="mindstream-publish-batches"),
            # batches are composed here, so the profile's one record per batch does not apply
            "max_batch_size": MAX_BATCH_BYTES,
        }
    )
    await producer.start()
    try:
        n_partitions = len(await producer.partitions_for(topic))
        writer = BatchWriter(
            producer, topic, single_record_tail=settings.profile.single_record_tail_batch
        )
        loop = asyncio.get_running_loop()
        started = next_step = loop.time()
        sent = 0
        while sent < len(records):
            if rate > 0:
                # steps at least tick_s apart, so that a step's batches hold several records
                await asyncio.sleep(max(0.0, next_step - loop.time()))
                next_step = loop.time() + tick_s
                due = min(len(records), int((loop.time() - started) * rate) + 1)
            else:
                due = min(len(records), sent + chunk)
            await writer.write(
                [(user_partition(k, n_partitions), k, v, []) for k, v in records[sent:due]]
            )
            sent = due
        return Published(sent, loop.time() - started, writer.batches_sent)
    finally:
        await producer.stop()


def read_dead_letters(
    settings: Settings, expected: int, *, group_id: str, timeout_s: float = 60.0
) -> list[DeadLetter]:
    """Read the dead-letter topic from the start until ``expected`` letters (or the timeout)."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        settings.dlq_topic,
        **kafka_python_consumer_kwargs(settings, group_id=group_id),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    letters: list[DeadLetter] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(letters) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                letters += [parse_dead_letter(r.key, r.value, r.headers) for r in batch]
    finally:
        consumer.close()
    return letters
