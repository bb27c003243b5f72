"""The stream bench's arithmetic over several workers: histograms added up, the assignment."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.stream_bench import (
    assigned_partitions,
    assignment_settled,
    freshness_quantiles,
    parse_brokers,
    parse_rates,
    sum_samples,
    window_figures,
)
from stream.lag import LAG_METRIC
from stream.metrics import FRESHNESS_BUCKETS


def worker_metrics(freshness_s: list[float]) -> dict[str, float]:
    """A worker's /metrics as WorkerProcess.metrics reads them, after these observations."""
    registry = CollectorRegistry()
    histogram = Histogram(
        "mindstream_stream_freshness_seconds",
        "test",
        buckets=FRESHNESS_BUCKETS,
        registry=registry,
    )
    for value in freshness_s:
        histogram.observe(value)
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def test_summed_histograms_give_the_quantiles_of_all_events_together() -> None:
    rng = random.Random(7)
    # a busy fast worker and a quiet slow one: the group's p50 is the fast one's, its p99 the
    # slow one's, which no average of the two workers' quantiles would give
    fast = [rng.uniform(0.02, 0.08) for _ in range(9000)]
    slow = [rng.uniform(0.6, 1.5) for _ in range(300)]
    group = freshness_quantiles(sum_samples([worker_metrics(fast), worker_metrics(slow)]))
    assert group == freshness_quantiles(worker_metrics(fast + slow))
    assert group["p50_ms"] < 100
    assert group["p99_ms"] > 500
    assert freshness_quantiles(worker_metrics(fast))["p99_ms"] < 100


def test_sum_samples_adds_counters_and_keeps_one_workers_figures() -> None:
    a = {'mindstream_stream_events_in_total{topic="c"}': 3.0, "process_cpu_seconds_total": 1.5}
    b = {'mindstream_stream_events_in_total{topic="c"}': 4.0, "only_b": 2.0}
    assert sum_samples([a, b]) == {
        'mindstream_stream_events_in_total{topic="c"}': 7.0,
        "process_cpu_seconds_total": 1.5,
        "only_b": 2.0,
    }
    assert sum_samples([a]) == a
    assert sum_samples([]) == {}


def lag_metrics(topic: str, partitions: list[int]) -> dict[str, float]:
    return {f'{LAG_METRIC}{{partition="{p}",topic="{topic}"}}': 0.0 for p in partitions}


def test_assigned_partitions_reads_the_lag_gauge_of_the_clicks_topic_only() -> None:
    metrics = {**lag_metrics("clicks", [0, 3]), **lag_metrics("app-clicks-rekey", [1, 2])}
    assert assigned_partitions(metrics, "clicks", 4) == {0, 3}
    assert assigned_partitions({}, "clicks", 4) == set()


@pytest.mark.parametrize(
    ("assignments", "settled"),
    [
        ([{0, 1, 2, 3}, {4, 5, 6, 7}], True),
        ([{0, 2, 4, 6}, {1, 3, 5, 7}], True),
        ([set(range(8)), set()], False),  # the second worker has nothing yet
        ([{0, 1, 2, 3}, {3, 4, 5, 6, 7}], False),  # partition 3 on both: mid-rebalance
        ([{0, 1, 2}, {4, 5, 6, 7}], False),  # partition 3 unassigned
        ([set(range(8))], True),
    ],
)
def test_assignment_settled(assignments: list[set[int]], settled: bool) -> None:
    assert assignment_settled(assignments, 8) is settled


def test_brokers_from_repeated_and_comma_separated_options() -> None:
    assert parse_brokers(None) == ["tansu"]
    assert parse_brokers(["kafka,tansu"]) == ["kafka", "tansu"]
    assert parse_brokers(["Kafka", "tansu", "kafka"]) == ["kafka", "tansu"]
    with pytest.raises(ValueError, match="'redpanda'"):
        parse_brokers(["kafka,redpanda"])
    with pytest.raises(ValueError, match="at least one"):
        parse_brokers([","])


def test_rates_are_positive_whole_numbers_in_the_order_given() -> None:
    assert parse_rates("5000") == [5000]
    assert parse_rates("5000, 7000,6000") == [5000, 7000, 6000]
    for bad, message in (("0", "> 0"), ("5k", "'5k'"), (",", "at least one")):
        with pytest.raises(ValueError, match=message):
            parse_rates(bad)


def test_a_window_holds_the_quantiles_and_stage_times_of_its_own_events_only() -> None:
    rng = random.Random(3)
    early = [rng.uniform(0.02, 0.08) for _ in range(5000)]
    late = [rng.uniform(0.8, 1.2) for _ in range(5000)]
    before = {
        **worker_metrics(early),
        'mindstream_stream_events_in_total{topic="c"}': 5000.0,
        "mindstream_stream_batch_events_count": 20.0,
        "mindstream_stream_tower_seconds_count": 20.0,
        "mindstream_stream_tower_seconds_sum": 0.2,
        "process_cpu_seconds_total": 4.0,
    }
    after = {
        **worker_metrics(early + late),
        'mindstream_stream_events_in_total{topic="c"}': 10000.0,
        "mindstream_stream_batch_events_count": 30.0,
        "mindstream_stream_tower_seconds_count": 30.0,
        "mindstream_stream_tower_seconds_sum": 0.7,
        "process_cpu_seconds_total": 9.0,
    }
    window = window_figures(before, after, 10.0, {"broker": 1.0}, {"broker": 3.5})
    assert window["events_per_s"] == 500
    assert window["mean_batch_events"] == 500
    assert window["mean_ms_per_batch"]["tower"] == 50.0
    assert window["worker_core_share"] == 0.5
    assert window["broker_core_share"] == 0.25
    # the late events alone: the early, fast ones do not dilute the window's tail
    assert window["freshness"]["p50_ms"] > 750
    assert freshness_quantiles(after)["p50_ms"] < 750
