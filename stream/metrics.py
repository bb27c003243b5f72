"""Prometheus metrics of one stream worker: :class:`StreamMetrics`, its own registry.

The worker creates one when it starts and hands it to what records (the batch processor, the
runtime's bundle reload) and to its ``/metrics`` page, which serves that registry. Nothing is
registered on import and nothing goes to prometheus_client's default registry, so tests can run
several processors in one process.

Metric names are ``mindstream_stream_*``, times in seconds. The registry also holds
``mindstream_stream_consumer_lag_records{topic,partition}``, computed from the consumer at each
scrape (``stream.lag``, registered by the worker), and prometheus_client's ``process_*``,
``python_gc_*`` and ``python_info`` of the worker process (resident memory, CPU time, open
files, collections).
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
# Fine buckets up to a minute: the benchmark reads p50/p95/p99 freshness from this histogram.
FRESHNESS_BUCKETS = (
    0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5,
    0.6, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0,
)  # fmt: skip
_BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
# aiohttp (Faust's web pages) refuses a charset inside content_type; the text is UTF-8 anyway.
CONTENT_TYPE = "text/plain; version=0.0.4"


class StreamMetrics:
    """The worker's counters, histograms and gauges, in :attr:`registry`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # what prometheus_client's default registry holds, in its order
        GCCollector(registry=r)
        PlatformCollector(registry=r)
        ProcessCollector(registry=r)
        self.events_in = Counter(
            "mindstream_stream_events_in_total",
            "Records consumed, by topic.",
            ["topic"],
            registry=r,
        )
        self.events_applied = Counter(
            "mindstream_stream_events_applied_total",
            "Valid events applied to a window (replays excluded).",
            registry=r,
        )
        self.events_replayed = Counter(
            "mindstream_stream_events_replayed_total",
            "Valid events skipped because their window had applied them already (after a restart).",
            registry=r,
        )
        self.bad_events = Counter(
            "mindstream_stream_bad_events_total",
            "Events dead-lettered, by reason.",
            ["reason"],
            registry=r,
        )
        self.rekeyed = Counter(
            "mindstream_stream_rekeyed_total",
            "Valid events forwarded to the re-key topic: no key, or not on their user's partition.",
            ["why"],
            registry=r,
        )
        self.unknown_items = Counter(
            "mindstream_stream_unknown_items_total",
            "Applied events whose item the current bundle does not know (kept, skipped at "
            "inference).",
            registry=r,
        )
        self.batch_events = Histogram(
            "mindstream_stream_batch_events",
            "Records per micro-batch.",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.batch_users = Histogram(
            "mindstream_stream_batch_users",
            "Users recomputed per micro-batch.",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.users_recomputed = Counter(
            "mindstream_stream_users_recomputed_total", "User interest recomputations.", registry=r
        )
        self.tower_latency = Histogram(
            "mindstream_stream_tower_seconds",
            "User tower time per micro-batch.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.redis_latency = Histogram(
            "mindstream_stream_redis_write_seconds",
            "Redis pipeline time per micro-batch (successful attempt).",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.redis_failures = Counter(
            "mindstream_stream_redis_write_failures_total",
            "Failed Redis pipeline attempts (retried).",
            registry=r,
        )
        self.changelog_latency = Histogram(
            "mindstream_stream_changelog_write_seconds",
            "Window changelog produce time per micro-batch, until acknowledged (successful "
            "attempt).",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.changelog_failures = Counter(
            "mindstream_stream_changelog_write_failures_total",
            "Failed window changelog produce attempts (retried).",
            registry=r,
        )
        self.rekey_latency = Histogram(
            "mindstream_stream_rekey_write_seconds",
            "Re-keyed click produce time per micro-batch, until acknowledged (successful attempt).",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.rekey_failures = Counter(
            "mindstream_stream_rekey_write_failures_total",
            "Failed re-key produce attempts (retried).",
            registry=r,
        )
        self.records_written = Counter(
            "mindstream_stream_records_written_total",
            "Interest records written, by outcome (written, or kept because Redis held newer "
            "input).",
            ["outcome"],
            registry=r,
        )
        self.freshness = Histogram(
            "mindstream_stream_freshness_seconds",
            "Redis write time minus the Kafka record timestamp, per applied event.",
            buckets=FRESHNESS_BUCKETS,
            registry=r,
        )
        self.tower_info = Gauge(
            "mindstream_stream_tower_info",
            "1 for the bundle version and onnxruntime provider in use.",
            ["version", "provider"],
            registry=r,
        )
        self.bundle_reloads = Counter(
            "mindstream_stream_bundle_reloads_total",
            "Bundle hot reloads, by outcome.",
            ["outcome"],
            registry=r,
        )
        self.last_batch = Gauge(
            "mindstream_stream_last_batch_timestamp_seconds",
            "Wall time the last batch was written.",
            registry=r,
        )
        self.offset_holes = Counter(
            "mindstream_stream_offset_holes_total",
            "Records delivered beyond the next expected offset of their partition (skipped "
            "records).",
            ["topic"],
            registry=r,
        )

    def write_target(self, target: str) -> tuple[Counter, Histogram]:
        """(failed attempts, latency of the successful attempt) of a batch's write target:
        ``redis``, ``changelog`` or ``rekey``."""
        return {
            "redis": (self.redis_failures, self.redis_latency),
            "changelog": (self.changelog_failures, self.changelog_latency),
            "rekey": (self.rekey_failures, self.rekey_latency),
        }[target]

    def exposition(self) -> bytes:
        """The registry in Prometheus's text format (:data:`CONTENT_TYPE`)."""
        return generate_latest(self.registry)
