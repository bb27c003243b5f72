"""Replay a click log, or the synthetic generator, onto the clicks topic (``mindstream publish``).

Sources become click-event dicts in event-time order (:class:`EventSource`); every event is
encoded and checked with :func:`stream.events.encode_event` (the one contract), keyed by user id
and sent with kafka-python at a fixed rate or as fast as the broker takes it. Malformed input
lines and events the worker would reject are counted, and the first few shown; they never stop
the replay. Every send is followed to its acknowledgement, so the final count says exactly how
many events the broker took.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mindstream.kafka_config import kafka_python_producer_kwargs
from mindstream.settings import Settings
from model_export.dataset import Interactions, category_feature
from stream.events import encode_event, event_key
from stream.exceptions import BadEvent, StreamError

logger = logging.getLogger(__name__)

# How many bad lines, rejected events and delivery errors a run keeps as examples.
MAX_EXAMPLES = 5
# A source without timestamps (Amazon) is stamped this far apart per user, ending now.
UNTIMED_GAP_MS = 1_000


@dataclass
class EventSource:
    """Click-event dicts in event-time order, plus what reading the input left out."""

    name: str
    events: Iterable[dict[str, Any]]
    total: int | None = None  # events the iterable yields, when known in advance
    bad_lines: int = 0
    bad_line_examples: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def interactions_source(
    data: Interactions,
    *,
    category_names: dict[str, list[str]] | None = None,
    now_ms: int | None = None,
) -> EventSource:
    """Every behaviour of ``data`` as a click event, in global event-time order.

    ``category`` is the first value of the item feature that names categories (``category``,
    else ``genre``: :func:`model_export.dataset.category_feature`), named by
    ``category_names[feature]`` when given. Data without
    timestamps is stamped ``UNTIMED_GAP_MS`` apart per user, each user's last event at now.
    """
    from model_export.data.events import iter_click_events

    notes: list[str] = []
    if data.timestamps is None:
        now = int(time.time() * 1000) if now_ms is None else now_ms
        stamped = [
            now - UNTIMED_GAP_MS * np.arange(len(s) - 1, -1, -1, dtype=np.int64)
            for s in data.sequences
        ]
        data = dataclasses.replace(data, timestamps=stamped)
        notes.append(
            f"the source has no timestamps: each user's events are stamped "
            f"{UNTIMED_GAP_MS} ms apart in sequence order, the last one now"
        )
    feature = category_feature(data)
    names = (category_names or {}).get(feature) if feature else None
    if feature is not None and feature != "category":
        notes.append(f"category = the item's first {feature!r} value")
    events = iter_click_events(data, category_feature=feature, category_names=names)
    return EventSource(data.name, events, total=data.n_interactions, notes=notes)


def file_source(path: str | Path, format: str = "auto") -> EventSource:
    """A log file (any format :func:`model_export.data.load` reads) as click events.

    Malformed lines are skipped and counted. Taobao logs keep their real behaviour types
    (``pv`` becomes ``click``; ``cart``, ``fav``, ``buy`` stay).
    """
    from model_export.data import detect_format, load

    chosen = detect_format(path) if format == "auto" else format
    result = load(path, chosen, skip_bad=True)
    if chosen == "taobao":
        from model_export.data.taobao import iter_events

        # The loaded interactions drop the behaviour type; the replay reads it again.
        source = EventSource(
            result.interactions.name,
            iter_events(path, skip_bad=True),
            total=result.interactions.n_interactions,
        )
    else:
        source = interactions_source(result.interactions, category_names=result.feature_vocab)
    source.bad_lines = result.bad_lines
    source.bad_line_examples = list(result.bad_line_examples[:MAX_EXAMPLES])
    source.name = f"{chosen} {result.source}"
    return source


def synthetic_source(config: Any = None) -> EventSource:
    """The synthetic planted-interest generator's log (a ``SyntheticConfig``) as click events."""
    from model_export.data.synthetic import SyntheticConfig, click_events, generate

    data, _ = generate(config or SyntheticConfig())
    return EventSource(data.name, click_events(data), total=data.n_interactions)


def limited(source: EventSource, limit: int | None) -> EventSource:
    """The first ``limit`` events of ``source`` (all when None)."""
    if limit is None:
        return source
    total = limit if source.total is None else min(limit, source.total)
    return dataclasses.replace(source, events=itertools.islice(source.events, limit), total=total)


@dataclass
class PublishStats:
    """What happened to every event of a replay."""

    topic: str
    sent: int = 0  # handed to the producer
    acknowledged: int = 0  # written by the broker (acks as configured)
    failed: int = 0  # refused by the producer or not acknowledged
    bad_lines: int = 0  # malformed input lines, skipped by the reader
    bad_events: int = 0  # events the worker would dead-letter, not sent
    seconds: float = 0.0
    examples: list[str] = field(default_factory=list)  # bad lines, bad events, failures

    @property
    def rate(self) -> float:
        return self.acknowledged / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        return (
            f"topic {self.topic}: sent {self.sent}, acknowledged {self.acknowledged}, "
            f"failed {self.failed}, bad lines {self.bad_lines}, bad events {self.bad_events} "
            f"in {self.seconds:.1f} s ({self.rate:.0f} events/s acknowledged)"
        )

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["rate"] = round(self.rate, 1)
        return out


class Pacer:
    """Spaces sends ``1 / rate`` seconds apart on average (``rate`` 0: no pacing).

    It sleeps only when more than ``slack_s`` ahead of schedule, so short sleeps do not
    dominate at high rates; falling behind is never made up by bursting more than planned.
    """

    def __init__(self, rate: float, *, slack_s: float = 0.005) -> None:
        if not rate >= 0:
            raise ValueError(f"rate must be >= 0 events/s, got {rate}")
        self.rate = rate
        self.slack_s = slack_s
        self.started = time.monotonic()
        self.count = 0

    def wait(self) -> None:
        if self.rate > 0:
            ahead = self.started + self.count / self.rate - time.monotonic()
            if ahead > self.slack_s:
                time.sleep(ahead)
            elif ahead < -1.0:
                self.started -= ahead + 1.0  # behind by over a second: forget the debt
        self.count += 1


class _Deliveries:
    """Acknowledgement callbacks from the producer's I/O thread, counted under a lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.acknowledged = 0
        self.failed = 0
        self.errors: list[str] = []

    def ok(self, _metadata: Any) -> None:
        with self.lock:
            self.acknowledged += 1

    def error(self, exc: BaseException) -> None:
        with self.lock:
            self.failed += 1
            if len(self.errors) < MAX_EXAMPLES:
                self.errors.append(f"delivery failed: {exc!r}")


def make_producer(settings: Settings) -> Any:
    """A kafka-python producer with the settings' connection, security and profile options."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    try:
        return KafkaProducer(
            **kafka_python_producer_kwargs(settings, client_id=f"{settings.app_id}-publish")
        )
    except KafkaError as exc:
        raise StreamError(
            f"cannot reach the Kafka brokers at {settings.kafka_bootstrap_servers} "
            f"(KAFKA_BOOTSTRAP_SERVERS): {exc}"
        ) from exc


def publish(
    settings: Settings,
    source: EventSource,
    *,
    rate: float = 0.0,
    topic: str | None = None,
    restamp: bool = False,
    create_topic: bool = True,
    progress: bool = True,
    flush_timeout_s: float = 60.0,
    on_sent: Callable[[dict[str, Any]], None] | None = None,
    producer: Any = None,
) -> PublishStats:
    """Send ``source``'s events to ``topic`` (default the clicks topic), keyed by user id.

    ``rate`` events/s (0 = as fast as possible). ``restamp`` replaces each event's ``ts`` by
    the send time (clock-monotonic), so that event time minus Redis write time measures the
    pipeline's freshness. Creates the topic with ``settings.topic_partitions`` when missing.
    ``on_sent`` sees each event as sent (after restamping). ``producer`` replaces the
    kafka-python producer built from ``settings`` (it is closed at the end). Returns the counts
    after every send was acknowledged or failed (or ``flush_timeout_s`` ran out: those count
    as failed).
    """
    from kafka.errors import KafkaError, KafkaTimeoutError

    from mindstream.progress import progress_bar

    topic = topic or settings.clicks_topic
    if create_topic:
        from mindstream.topics import ensure_topic

        ensure_topic(settings, topic, settings.topic_partitions)
    stats = PublishStats(topic, bad_lines=source.bad_lines)
    stats.examples += [f"bad line: {line}" for line in source.bad_line_examples]
    deliveries = _Deliveries()
    producer = make_producer(settings) if producer is None else producer
    pacer = Pacer(rate)
    skew_ms = settings.event_max_skew_s * 1000
    last_ts = 0
    started = time.monotonic()
    bar = progress_bar(source.total, "publish", "ev", enabled=progress, smoothing=0.1)
    try:
        for event in source.events:
            if restamp:
                last_ts = max(last_ts, int(time.time() * 1000))
                event = {**event, "ts": last_ts}
            try:
                value = _encode(event, skew_ms)
            except BadEvent as exc:
                stats.bad_events += 1
                _example(stats, f"bad event {_short(event)}: {exc}")
                bar.update(1)
                continue
            pacer.wait()
            try:
                future = producer.send(topic, key=event_key(event["user_id"]), value=value)
            except KafkaError as exc:
                # Raised before the record was queued (metadata timeout, record too large...).
                deliveries.error(exc)
            else:
                future.add_callback(deliveries.ok)
                future.add_errback(deliveries.error)
            stats.sent += 1
            if on_sent is not None:
                on_sent(event)
            bar.update(1)
        bar.set_postfix_str("flushing")
        try:
            producer.flush(timeout=flush_timeout_s)
        except KafkaTimeoutError:
            logger.warning("flush timed out after %.0f s", flush_timeout_s)
    finally:
        bar.close()
        producer.close(timeout=10)
        stats.seconds = time.monotonic() - started
    with deliveries.lock:
        stats.acknowledged = deliveries.acknowledged
        stats.failed = stats.sent - deliveries.acknowledged
        stats.examples += deliveries.errors
    if stats.failed > deliveries.failed:
        _example(
            stats,
            f"{stats.failed - deliveries.failed} events neither acknowledged nor failed within "
            f"{flush_timeout_s:.0f} s of the end",
        )
    logger.debug(
        "published topic=%s sent=%d acknowledged=%d failed=%d bad_lines=%d bad_events=%d",
        topic,
        stats.sent,
        stats.acknowledged,
        stats.failed,
        stats.bad_lines,
        stats.bad_events,
    )
    return stats


def _encode(event: dict[str, Any], skew_ms: int) -> bytes:
    try:
        return encode_event(
            event["user_id"],
            event["item_id"],
            event["ts"],
            event=event.get("event"),
            category=event.get("category"),
            max_future_skew_ms=skew_ms,
        )
    except KeyError as exc:
        raise BadEvent("missing_field", f"{exc.args[0]!r} is required") from None


def _short(event: dict[str, Any]) -> str:
    text = repr(event)
    return text if len(text) <= 120 else text[:117] + "..."


def _example(stats: PublishStats, message: str) -> None:
    if len(stats.examples) < 3 * MAX_EXAMPLES:
        stats.examples.append(message)
