"""Overload: a burst far above what the worker sustains; it falls behind, catches up, stays exact.

A producer publishes ``BURST`` keyed clicks over ``BURST_USERS`` users (a key flood: most users
are new to the worker) as fast as the broker takes them, while the worker runs with its
production batch settings. Sampled every half second while it drains:

- the consumer lag, from outside: log end offsets (known exactly from the producer's
  acknowledgements) minus the offsets the group committed (asked from the broker);
- the consumer lag as the worker reports it (``mindstream_stream_consumer_lag_records`` in
  its ``/metrics``, summed over the clicks partitions);
- the backlog as the worker's other metrics show it (records acknowledged by the broker minus
  ``mindstream_stream_events_in_total``), with the freshness histogram's count of events older
  than 5 s when written;
- the worker's resident memory (``VmRSS`` and ``process_resident_memory_bytes`` from
  ``/metrics``; ``VmHWM`` at the end is the peak).

Then: the lag went up to a large part of the burst, the worker was still behind when the
producer finished, the lag never grew once the producer had finished (commits only move
forward), and it came back to 0, by both measures (the worker's gauge per clicks partition, 0
on each once caught up, as the broker's committed offsets say); every event was applied once
and every user's record equals the batch recompute; no bad events, no Redis failures, no ERROR
in the worker's log; peak RSS is reported and bounded. The offered and drained rates are
reported, not checked: they depend on the machine.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from benchmarks.harness import WorkerProcess, publish_batches
from mindstream.kafka_config import kafka_python_kwargs
from mindstream.settings import Settings
from stream.events import encode_event, event_key
from stream.lag import LAG_METRIC
from stream.rekey import rekey_topic_name, user_partition
from tests.integration.streamcheck import (
    assert_equal_to_batch_recompute,
    expected_windows,
    wait_for_records,
)
from tests.unit.test_security import _listening as listening

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BURST = 40_000
BURST_USERS = 10_000
MAX_RSS_MB = 1_500  # the worker's peak resident memory must stay under this


def burst_log(seed: int) -> tuple[list[dict[str, Any]], list[tuple[bytes, bytes]]]:
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    events, records = [], []
    for n in range(BURST):
        user = f"b{rng.randrange(BURST_USERS)}"
        event: dict[str, Any] = {
            "user_id": user,
            "item_id": f"i{rng.randrange(1, 301)}",
            "ts": now - BURST + n,  # unique, in order
            "event": "click",
            "category": None,
        }
        events.append(event)
        records.append((event_key(user), encode_event(user, event["item_id"], event["ts"])))
    return events, records


def _memory_kb(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in {"VmRSS", "VmHWM"}:
            out[name] = int(value.split()[0])
    return out


class Burst:
    """Publishes keyed records with :func:`benchmarks.harness.publish_batches` from a thread.

    ``acked`` is 0 until the broker has acknowledged them all, then all of them; ``ends`` holds
    the log end offsets per partition (exact: the topic is new, and the batches end with a
    single-record tail for the local broker's "latest offset")."""

    def __init__(self, settings: Settings, records: list[tuple[bytes, bytes]]) -> None:
        self.settings = settings
        self.records = records
        self.acked = 0
        self.ends: dict[int, int] = {}
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="burst", daemon=True)

    def _run(self) -> None:
        try:
            publish_batches(self.settings, self.records)
        except BaseException as exc:
            self.error = exc
            return
        n = self.settings.topic_partitions
        self.ends = dict(Counter(user_partition(key, n) for key, _ in self.records))
        self.acked = len(self.records)

    def start(self) -> Burst:
        self._thread.start()
        return self

    def join(self, timeout_s: float = 120.0) -> None:
        self._thread.join(timeout_s)
        if self._thread.is_alive() or self.error is not None:
            raise AssertionError(f"publishing the burst failed: {self.error!r}")


class LagProbe:
    """The group's lag on the clicks topic: log end offsets (from the producer's
    acknowledgements) minus the offsets the group committed (from the broker)."""

    def __init__(self, settings: Settings) -> None:
        from kafka import KafkaAdminClient, TopicPartition

        self.group = settings.app_id
        self.admin = KafkaAdminClient(**kafka_python_kwargs(settings, client_id="lag-probe"))
        self.partitions = [
            TopicPartition(settings.clicks_topic, p) for p in range(settings.topic_partitions)
        ]

    def lag(self, ends: dict[int, int]) -> dict[int, int]:
        """Per partition of the clicks topic."""
        committed = self.admin.list_group_offsets({self.group: self.partitions})[self.group]
        done = {tp.partition: max(meta.offset, 0) for tp, meta in committed.items()}
        return {p: max(0, ends.get(p, 0) - done.get(p, 0)) for p in range(len(self.partitions))}

    def close(self) -> None:
        self.admin.close()


def reported_lag(metrics: dict[str, float], topic: str) -> dict[int, float]:
    """The worker's ``mindstream_stream_consumer_lag_records`` for ``topic``, per partition."""
    out = {}
    for name, value in metrics.items():
        family, _, labels = name.partition("{")
        if family == LAG_METRIC and f'topic="{topic}"' in labels:
            out[int(labels.split('partition="')[1].split('"')[0])] = value
    return out


def test_burst_falls_behind_and_catches_up(
    stream_settings: Settings,
    redis_client: redis.Redis,
    bundle_dir: Path,
    tmp_path: Path,
    report: Callable[[str, dict[str, Any]], None],
) -> None:
    # production batching; the fixture's small batches are for the fault tests' many commits
    settings = dataclasses.replace(stream_settings, batch_size=1000, batch_deadline_ms=50)
    events, records = burst_log(seed=5)
    probe = LagProbe(settings)
    samples: list[dict[str, float]] = []
    with WorkerProcess(settings, tmp_path / "worker.log") as worker:
        worker.start()
        worker.wait_ready()
        assert worker.process is not None
        pid = worker.process.pid
        baseline_kb = _memory_kb(pid)["VmRSS"]
        # As fast as the broker takes it, in multi-record batches composed directly (the
        # kafka-python producer, at about 12k records/s here, does not outrun the worker by
        # much).
        stream = Burst(settings, records).start()
        started = time.monotonic()
        published_s = drained_s = None
        deadline = started + 240
        while time.monotonic() < deadline:
            metrics = worker.metrics()
            consumed = sum(
                v for k, v in metrics.items() if k.startswith("mindstream_stream_events_in_total")
            )
            now = time.monotonic() - started
            if published_s is None and stream.acked >= BURST:
                published_s = now
            broker_lag = probe.lag(dict(stream.ends))
            sample = {
                "t": round(now, 2),
                "published": published_s is not None,
                "acked": stream.acked,
                "consumed": consumed,
                "backlog": stream.acked - consumed,
                "broker_lag": sum(broker_lag.values()),
                "reported_lag": sum(reported_lag(metrics, settings.clicks_topic).values()),
                "reported_rss_mb": metrics["process_resident_memory_bytes"] / 2**20,
                "stale_5s": metrics["mindstream_stream_freshness_seconds_count"]
                - metrics.get('mindstream_stream_freshness_seconds_bucket{le="5.0"}', 0.0),
                "rss_mb": _memory_kb(pid)["VmRSS"] / 1024,
            }
            samples.append(sample)
            if drained_s is None and consumed >= BURST:
                drained_s = now
            if drained_s is not None and sample["broker_lag"] == 0:
                break
            assert worker.running, worker.log_tail()
            time.sleep(0.1)
        stream.join()
        expected = expected_windows(events)
        recs = wait_for_records(settings, redis_client, expected, worker=worker)
        metrics = worker.metrics()
        # a quiet point: caught up, all committed; the gauge must say so for each partition
        final_reported = reported_lag(metrics, settings.clicks_topic)
        final_reported_rekey = reported_lag(
            metrics, rekey_topic_name(settings.app_id, settings.clicks_topic)
        )
        final_broker = probe.lag(dict(stream.ends))
        peak_kb = _memory_kb(pid)["VmHWM"]
        log_text = worker.log_path.read_text(errors="replace")
        web_listen = sorted(listening(settings.worker_web_port))
        probe.close()
    assert published_s is not None and drained_s is not None, samples[-3:]
    offered = BURST / max(published_s, 0.5)
    drained = BURST / drained_s
    figures: dict[str, Any] = {
        "test": "overload",
        "burst_events": BURST,
        "burst_users": BURST_USERS,
        "publish_s": round(published_s, 1),
        "offered_events_per_s": round(offered),
        "drain_s": round(drained_s, 1),
        "drained_events_per_s": round(drained),
        "offered_over_drained": round(offered / drained, 1),
        "max_backlog_from_metrics": max(s["backlog"] for s in samples),
        "max_broker_lag": max(s["broker_lag"] for s in samples),
        "final_broker_lag": samples[-1]["broker_lag"],
        "max_reported_lag": max(s["reported_lag"] for s in samples),
        "final_reported_lag_by_partition": final_reported,
        "final_reported_rekey_lag_by_partition": final_reported_rekey,
        "final_broker_lag_by_partition": final_broker,
        "events_written_over_5s_after_publish": samples[-1]["stale_5s"],
        "baseline_rss_mb": round(baseline_kb / 1024),
        "peak_rss_mb": round(peak_kb / 1024),
        "max_reported_rss_mb": round(max(s["reported_rss_mb"] for s in samples)),
        "applied": sum(r.seq for r in recs.values()),
        "bad_events": sum(v for k, v in metrics.items() if "bad_events_total" in k),
        "redis_write_failures": metrics.get("mindstream_stream_redis_write_failures_total", 0),
        "error_log_lines": sum(
            1 for line in log_text.splitlines() if " ERROR " in line or "CRITICAL" in line
        ),
        "worker_web_listens_on": web_listen,
        "lag_samples": [
            (s["t"], s["backlog"], s["broker_lag"], s["reported_lag"]) for s in samples[::4]
        ],
    }
    report("overload", figures)
    # it fell behind: most of the burst was waiting at some point, by each of the measures
    assert figures["max_backlog_from_metrics"] >= 0.3 * BURST, figures
    assert figures["max_broker_lag"] >= 0.3 * BURST, figures
    assert figures["max_reported_lag"] >= 0.3 * BURST, figures
    # the worker was still behind when the producer had finished, ...
    after_publish = [s["broker_lag"] for s in samples if s["published"]]
    assert after_publish and after_publish[0] > 0, figures
    # ... then only caught up: with nothing more offered, the lag never grew
    growth = [(a, b) for a, b in itertools.pairwise(after_publish) if b > a]
    assert not growth, (growth, figures)
    # ... and caught up, exactly, with no errors and bounded memory
    assert figures["final_broker_lag"] == 0, figures
    partitions = dict.fromkeys(range(settings.topic_partitions), 0)
    assert final_broker == partitions, figures
    assert final_reported == partitions, figures  # a sample for each partition, each 0
    assert all(v == 0 for v in final_reported_rekey.values()), figures  # nothing re-keyed
    assert figures["applied"] == BURST
    assert figures["bad_events"] == 0 and figures["redis_write_failures"] == 0, figures
    assert figures["error_log_lines"] == 0, log_text[-3000:]
    assert figures["peak_rss_mb"] < MAX_RSS_MB, figures
    assert_equal_to_batch_recompute(bundle_dir, recs, expected)
