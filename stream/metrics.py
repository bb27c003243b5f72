"""Prometheus metrics of the stream worker (names ``mindstream_stream_*``, times in seconds).

Besides these: ``mindstream_stream_consumer_lag_records{topic,partition}``, computed from the
consumer at each scrape (``stream.lag``), and prometheus_client's ``process_*`` metrics
(resident memory, CPU time, open files) of the worker process.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
# Fine buckets up to a minute: the benchmark reads p50/p95/p99 freshness from this histogram.
FRESHNESS_BUCKETS = (
    0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5,
    0.6, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0,
)  # fmt: skip
_BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)

EVENTS_IN = Counter("mindstream_stream_events_in_total", "Records consumed, by topic.", ["topic"])
EVENTS_APPLIED = Counter(
    "mindstream_stream_events_applied_total", "Valid events applied to a window (replays excluded)."
)
EVENTS_REPLAYED = Counter(
    "mindstream_stream_events_replayed_total",
    "Valid events skipped because their window had applied them already (after a restart).",
)
BAD_EVENTS = Counter(
    "mindstream_stream_bad_events_total", "Events dead-lettered, by reason.", ["reason"]
)
REKEYED = Counter(
    "mindstream_stream_rekeyed_total",
    "Valid events forwarded to the re-key topic: no key, or not on their user's partition.",
    ["why"],
)
UNKNOWN_ITEMS = Counter(
    "mindstream_stream_unknown_items_total",
    "Applied events whose item the current bundle does not know (kept, skipped at inference).",
)
BATCH_EVENTS = Histogram(
    "mindstream_stream_batch_events", "Records per micro-batch.", buckets=_BATCH_BUCKETS
)
BATCH_USERS = Histogram(
    "mindstream_stream_batch_users", "Users recomputed per micro-batch.", buckets=_BATCH_BUCKETS
)
USERS_RECOMPUTED = Counter(
    "mindstream_stream_users_recomputed_total", "User interest recomputations."
)
TOWER_LATENCY = Histogram(
    "mindstream_stream_tower_seconds", "User tower time per micro-batch.", buckets=_LATENCY_BUCKETS
)
REDIS_LATENCY = Histogram(
    "mindstream_stream_redis_write_seconds",
    "Redis pipeline time per micro-batch (successful attempt).",
    buckets=_LATENCY_BUCKETS,
)
REDIS_FAILURES = Counter(
    "mindstream_stream_redis_write_failures_total", "Failed Redis pipeline attempts (retried)."
)
CHANGELOG_LATENCY = Histogram(
    "mindstream_stream_changelog_write_seconds",
    "Window changelog produce time per micro-batch, until acknowledged (successful attempt).",
    buckets=_LATENCY_BUCKETS,
)
CHANGELOG_FAILURES = Counter(
    "mindstream_stream_changelog_write_failures_total",
    "Failed window changelog produce attempts (retried).",
)
REKEY_LATENCY = Histogram(
    "mindstream_stream_rekey_write_seconds",
    "Re-keyed click produce time per micro-batch, until acknowledged (successful attempt).",
    buckets=_LATENCY_BUCKETS,
)
REKEY_FAILURES = Counter(
    "mindstream_stream_rekey_write_failures_total", "Failed re-key produce attempts (retried)."
)
RECORDS_WRITTEN = Counter(
    "mindstream_stream_records_written_total",
    "Interest records written, by outcome (written, or kept because Redis held newer input).",
    ["outcome"],
)
FRESHNESS = Histogram(
    "mindstream_stream_freshness_seconds",
    "Redis write time minus the Kafka record timestamp, per applied event.",
    buckets=FRESHNESS_BUCKETS,
)
TOWER_INFO = Gauge(
    "mindstream_stream_tower_info",
    "1 for the bundle version and onnxruntime provider in use.",
    ["version", "provider"],
)
BUNDLE_RELOADS = Counter(
    "mindstream_stream_bundle_reloads_total", "Bundle hot reloads, by outcome.", ["outcome"]
)
LAST_BATCH = Gauge(
    "mindstream_stream_last_batch_timestamp_seconds", "Wall time the last batch was written."
)
OFFSET_HOLES = Counter(
    "mindstream_stream_offset_holes_total",
    "Records delivered beyond the next expected offset of their partition (skipped records).",
    ["topic"],
)
