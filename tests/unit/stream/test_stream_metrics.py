"""The worker's metrics: one registry per StreamMetrics, none of it in the default registry."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from stream.metrics import FRESHNESS_BUCKETS, StreamMetrics
from tests.unit.stream.test_stream_processor import T0, click, make

# what dashboards, RELIABILITY.md, BENCHMARKS.md and the benchmarks read of the worker
EXPECTED = {
    "mindstream_stream_events_in",
    "mindstream_stream_events_applied",
    "mindstream_stream_events_replayed",
    "mindstream_stream_bad_events",
    "mindstream_stream_rekeyed",
    "mindstream_stream_unknown_items",
    "mindstream_stream_batch_events",
    "mindstream_stream_batch_users",
    "mindstream_stream_users_recomputed",
    "mindstream_stream_tower_seconds",
    "mindstream_stream_redis_write_seconds",
    "mindstream_stream_redis_write_failures",
    "mindstream_stream_changelog_write_seconds",
    "mindstream_stream_changelog_write_failures",
    "mindstream_stream_rekey_write_seconds",
    "mindstream_stream_rekey_write_failures",
    "mindstream_stream_records_written",
    "mindstream_stream_freshness_seconds",
    "mindstream_stream_tower_info",
    "mindstream_stream_bundle_reloads",
    "mindstream_stream_last_batch_timestamp_seconds",
    "mindstream_stream_offset_holes",
    "process_cpu_seconds",
    "process_resident_memory_bytes",
    "python_gc_collections",
}


def samples(text: bytes) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def families(text: bytes) -> set[str]:
    return {family.name for family in text_string_to_metric_families(text.decode())}


def test_two_instances_in_one_process_count_apart() -> None:
    first, second = StreamMetrics(), StreamMetrics()  # the same names, registered twice
    assert EXPECTED <= families(first.exposition()) == families(second.exposition())
    first.events_applied.inc(3)
    first.rekeyed.labels("no_key").inc()
    second.events_applied.inc(1)
    one, two = samples(first.exposition()), samples(second.exposition())
    assert one["mindstream_stream_events_applied_total"] == 3
    assert two["mindstream_stream_events_applied_total"] == 1
    assert one['mindstream_stream_rekeyed_total{why="no_key"}'] == 1
    assert 'mindstream_stream_rekeyed_total{why="no_key"}' not in two
    # the default registry holds none of it (prometheus_client's own process metrics only)
    assert not any(name.startswith("mindstream_") for name in families(generate_latest(REGISTRY)))


def test_freshness_buckets_are_the_benchmarks() -> None:
    text = StreamMetrics().exposition().decode()
    bounds = [
        float(line.split('le="')[1].split('"')[0])
        for line in text.splitlines()
        if line.startswith("mindstream_stream_freshness_seconds_bucket") and "+Inf" not in line
    ]
    assert bounds == list(FRESHNESS_BUCKETS)


def test_a_processor_records_in_the_metrics_it_is_given(tiny_bundle: Path) -> None:
    p, _, _, _ = make(tiny_bundle)
    other, _, _, _ = make(tiny_bundle)
    batch = [click("ann", "i1", T0 + 30, 10), click("ann", "zz", T0 + 40, 11)]
    asyncio.run(p.process(batch))
    mine, theirs = samples(p.metrics.exposition()), samples(other.metrics.exposition())
    assert mine["mindstream_stream_events_applied_total"] == 2
    assert mine["mindstream_stream_unknown_items_total"] == 1
    assert mine['mindstream_stream_records_written_total{outcome="written"}'] == 1
    assert mine["mindstream_stream_freshness_seconds_count"] == 2
    assert mine["mindstream_stream_redis_write_seconds_count"] == 1
    assert mine["mindstream_stream_last_batch_timestamp_seconds"] == p.last_batch_at
    assert theirs["mindstream_stream_events_applied_total"] == 0
    assert theirs["mindstream_stream_freshness_seconds_count"] == 0
