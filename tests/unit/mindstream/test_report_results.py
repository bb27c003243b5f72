"""The results files the report reads: discovery, the benchmark format, histogram quantiles."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from mindstream.app.report_results import (
    FORMAT,
    find_evaluations,
    find_measurements,
    histogram_quantile,
    new_results,
    percentiles,
    write_results,
)


def test_histogram_quantile_follows_the_samples_it_was_built_from():
    rng = np.random.default_rng(0)
    samples = rng.gamma(3.0, 0.02, 20_000)
    bounds = [0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, float("inf")]
    counts = np.histogram(samples, bins=[0.0, *bounds[:-1], np.inf])[0]
    for q in (0.5, 0.9, 0.99):
        exact = float(np.quantile(samples, q))
        estimate = histogram_quantile(bounds, counts.tolist(), q)
        # Linear interpolation inside a bucket: within that bucket's width of the truth.
        i = int(np.searchsorted(bounds, exact))
        width = bounds[i] - (bounds[i - 1] if i else 0.0)
        assert abs(estimate - exact) <= width
    assert np.isnan(histogram_quantile([0.1, 1.0], [0, 0], 0.5))
    assert histogram_quantile([0.1, float("inf")], [0, 5], 0.5) == 0.1


def test_percentiles():
    stats = percentiles(list(range(1, 101)))
    assert stats["p50_ms"] == pytest.approx(50.5)
    assert stats["max_ms"] == 100 and stats["count"] == 100
    assert percentiles([]) == {"count": 0}


def test_newest_file_per_source_and_protocol_wins(tmp_path):
    old = write_results(tmp_path / "a" / "old.json", new_results("demo", throughput=[
        {"name": "old", "events_per_s": 1.0}
    ]))  # fmt: skip
    new = write_results(tmp_path / "b" / "new.json", new_results("demo", throughput=[
        {"name": "new", "events_per_s": 2.0}
    ]))  # fmt: skip
    os.utime(old, (1, 1))
    other = write_results(
        tmp_path / "stream.json",
        new_results("bench stream", latency=[{"name": "x", "p50_ms": 1.0}]),
    )
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "unrelated.json").write_text(json.dumps({"hello": 1}))
    found = find_measurements(tmp_path)
    assert [e["name"] for e in found.throughput] == ["new"]
    assert found.latency == [{"name": "x", "p50_ms": 1.0, "source": "bench stream"}]
    assert set(found.files) == {new, other}

    for protocol, stamp in (("comirec", 5), ("comirec", 9), ("leave_last_out", 1)):
        path = tmp_path / "evaluate" / f"{protocol}{stamp}" / "results.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"protocol": protocol, "models": {}, "stamp": stamp}))
        os.utime(path, (stamp, stamp))
    chosen = {data["protocol"]: data["stamp"] for _, data in find_evaluations(tmp_path)}
    assert chosen == {"comirec": 9, "leave_last_out": 1}


def test_recall_bench_output_is_read_as_latency(tmp_path):
    (tmp_path / "recall.json").write_text(
        json.dumps(
            {
                "catalogues": [
                    {
                        "n_items": 1000,
                        "index": {"kind": "flat"},
                        "bare": {"single": {"p50_ms": 0.1, "p99_ms": 0.3, "calls_per_s": 9}},
                        "service": {"batch": {"p50_ms": 5.0, "p99_ms": 9.0, "req_per_s": 90}},
                    }
                ]
            }
        )
    )
    found = find_measurements(tmp_path)
    assert [(e["name"], e["per_s"]) for e in found.latency] == [
        ("Faiss single (1,000 items, flat)", 9),
        ("HTTP batch (1,000 items, flat)", 90),
    ]


def test_write_results_refuses_other_formats(tmp_path):
    with pytest.raises(ValueError):
        write_results(tmp_path / "x.json", {"format": "nope"})
    assert new_results("demo")["format"] == FORMAT


def test_stream_bench_output_is_read_as_throughput_and_freshness(tmp_path):
    (tmp_path / "stream.json").write_text(
        json.dumps(
            {
                "machine": {},
                "setup": {"events": 1000},
                "phases": {
                    "publish (kafka-python)": {
                        "events": 1000,
                        "seconds": 0.5,
                        "events_per_s": 2000,
                    },
                    "worker, sustained": {
                        "offered_events_per_s": 500,
                        "sustained_events_per_s": 480,
                        "freshness": {"p50_ms": 40.0, "p95_ms": 90.0, "p99_ms": 120.0},
                    },
                    "broken": "not a phase",
                },
            }
        )
    )
    found = find_measurements(tmp_path)
    assert [(e["name"], e["events_per_s"]) for e in found.throughput] == [
        ("publish (kafka-python)", 2000.0),
        ("worker, sustained", 480.0),
    ]
    assert found.freshness == [
        {
            "name": "worker, sustained at 500 events/s: Redis write - Kafka record time",
            "p50_ms": 40.0,
            "p95_ms": 90.0,
            "p99_ms": 120.0,
            "source": "bench stream",
        }
    ]
