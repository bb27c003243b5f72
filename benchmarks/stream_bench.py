"""``mindstream bench stream``: the stream worker under load, next to two references.

On each broker named by ``--broker`` (``kafka``: a local Apache Kafka node, profile
``standard``; ``tansu``: the local Tansu broker, profile ``local``; one after the other in one
run, each with a redis-server of its own), or on the environment's services (``--services env``):

1. publish a backlog of ``--events`` synthetic clicks over ``--users`` users in multi-record
   batches (:func:`benchmarks.harness.publish_batches`), after a sample of them with kafka-python
   and the broker profile's producer settings (one record per batch in the ``local`` profile): the
   bare producer rates;
2. drain it with a bare aiokafka consumer that JSON-decodes each value: the consumer ceiling;
3. drain it with a Faust agent that only counts: Faust's own per-event ceiling;
4. drain it with the real worker (``python -m stream worker``): capacity in events/s and users
   recomputed/s; with ``--redis-cluster``, drain it once more with a worker of its own writing
   to a local Redis Cluster (3 masters, 3 replicas), for the cost of the cluster write;
5. for each rate of ``--rate``, offer it for ``--duration`` s to a fresh worker (multi-record
   batches every ``--tick-ms``) and read the end-to-end freshness (Redis write time minus the
   Kafka record timestamp) p50/p95/p99 from its ``/metrics`` histogram, the events/s it
   sustained, and every ``--sample-s`` seconds a window of the same figures with the batch size,
   the per-batch stage times and each process's share of a core (where the time goes as the
   run goes on). With ``--workers N`` (N > 1), N worker processes in one consumer group split
   the partitions; the load starts once every one of them is healthy and the group's
   assignment has settled, and the figures add up the workers' counters and histogram buckets
   (phase ``N workers, sustained``, with each worker's own figures under ``per_worker``).

CPU per event: the worker's CPU seconds from ready to caught up (startup excluded), from its
``/metrics``; the broker's (the JVM for Apache Kafka) and Redis's (every node of a cluster) from
``/proc/<pid>/stat`` over the same span (:mod:`benchmarks.cpu`). On a shared machine these are
the figures that move least with the neighbours' load.

Without ``--bundle`` (and no bundle at ``MINDSTREAM_BUNDLE``) a small MIND bundle is trained
first with ``mindstream train`` (d=64, K=4, L=50; random-ish weights do not change the cost).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.util
import json
import logging
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.cpu import ServiceCpu, per_event, share_of_core
from benchmarks.harness import WorkerProcess, publish, publish_batches
from infra.ports import free_port
from mindstream.errors import MindstreamError
from mindstream.kafka_config import aiokafka_consumer_kwargs
from mindstream.settings import Settings, known_env
from mindstream.topics import delete_topics, ensure_topics
from stream.events import encode_event, event_key
from stream.lag import LAG_METRIC

logger = logging.getLogger(__name__)

ITEMS = 5000
# The local brokers --broker can start (infra.testing's sources of the same names).
BROKERS = ("kafka", "tansu")
# records of the per-record kafka-python reference publish (a sample: it is the slow one)
PER_RECORD_SAMPLE = 20_000


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mindstream bench stream", description=__doc__)
    p.add_argument("--events", type=int, default=200_000, help="backlog size (default 200000)")
    p.add_argument("--users", type=int, default=20_000, help="distinct users (default 20000)")
    p.add_argument("--partitions", type=int, default=8, help="clicks topic partitions")
    p.add_argument(
        "--rate",
        default="5000",
        help="offered events/s in the sustained run; a comma list (e.g. 5000,6000,7000) runs "
        "one sustained phase per rate, each with a fresh worker (default 5000)",
    )
    p.add_argument(
        "--duration", type=float, default=20.0, help="seconds of each sustained run (default 20)"
    )
    p.add_argument(
        "--sample-s",
        type=float,
        default=10.0,
        help="sustained run: seconds per window of the time series (0: none; default 10)",
    )
    p.add_argument(
        "--tick-ms", type=float, default=20.0, help="sustained run: publish step (default 20 ms)"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="sustained run: worker processes in one consumer group (default 1; the backlog "
        "drain always uses one)",
    )
    p.add_argument("--batch-size", type=int, default=None, help="MINDSTREAM_BATCH_SIZE")
    p.add_argument("--deadline-ms", type=int, default=None, help="MINDSTREAM_BATCH_DEADLINE_MS")
    p.add_argument(
        "--services",
        choices=("local", "env"),
        default="local",
        help="local: start a throw-away broker (--broker) and redis-server (default); env: use "
        "KAFKA_BOOTSTRAP_SERVERS / REDIS_URL",
    )
    p.add_argument(
        "--broker",
        action="append",
        default=None,
        help="local services: the broker(s) to run the phases on, one after the other: kafka "
        "(Apache Kafka, profile standard) and/or tansu (profile local); a comma list or the "
        "option repeated, e.g. --broker kafka,tansu (default tansu)",
    )
    p.add_argument(
        "--redis-cluster",
        action="store_true",
        help="also drain the backlog with a worker writing to a local Redis Cluster (3 "
        "masters, 3 replicas) after the single-node drain, for both CPU per event in one run",
    )
    p.add_argument("--bundle", type=Path, default=None, help="bundle to serve (default: train)")
    p.add_argument("--skip", default="", help="comma list of phases to skip: noop,bare,drain,rate")
    p.add_argument("--work-dir", type=Path, default=None, help="logs and the trained bundle")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    return p


@dataclasses.dataclass
class Results:
    machine: dict[str, Any]
    setup: dict[str, Any]
    phases: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def clicks(
    n: int, users: int, items: Sequence[str], seed: int, now_ms: int
) -> list[tuple[bytes, bytes]]:
    """Keyed click records: users uniform, items Zipf-like, event times one ms apart."""
    rng = random.Random(seed)
    weights = [1.0 / (r + 1) ** 0.8 for r in range(len(items))]
    picks = rng.choices(items, weights=weights, k=n)
    out = []
    for i, item in enumerate(picks):
        user = f"u{rng.randrange(users)}"
        out.append((event_key(user), encode_event(user, item, now_ms - n + i, now_ms=now_ms)))
    return out


@contextlib.contextmanager
def services(
    kind: str, broker: str, settings: Settings, root: Path
) -> Iterator[tuple[Settings, ServiceCpu]]:
    """The settings pointed at the services, and their processes for the CPU figures (none
    for ``env`` services, which may not even run on this machine)."""
    if kind == "env":
        yield settings, ServiceCpu({})
        return
    from infra.services import read_state
    from infra.testing import Source, provide

    source = Source.KAFKA if broker == "kafka" else Source.TANSU
    with provide(source, os.environ, local_root=root) as endpoints:
        state = read_state(endpoints.data_dir) if endpoints.data_dir else None
        groups: dict[str, list[int]] = {}
        if state is not None:
            groups["broker"] = [r.process.pid for r in state.broker_nodes]
            groups["redis"] = [r.process.pid for n, r in state.services.items() if n == "redis"]
        yield endpoints.apply(settings), ServiceCpu(groups)


def parse_brokers(values: Sequence[str] | None) -> list[str]:
    """``--broker`` values (repeated and/or comma lists) as an ordered list without repeats."""
    out: list[str] = []
    for value in values or ["tansu"]:
        for name in value.split(","):
            name = name.strip().lower()
            if not name:
                continue
            if name not in BROKERS:
                raise ValueError(f"--broker {name!r}: expected one of {', '.join(BROKERS)}")
            if name not in out:
                out.append(name)
    if not out:
        raise ValueError("--broker: name at least one of " + ", ".join(BROKERS))
    return out


def parse_rates(value: str) -> list[int]:
    """``--rate`` as a list of offered events/s (each > 0), in the order given."""
    rates = []
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            rate = int(part)
        except ValueError:
            raise ValueError(f"--rate {value!r}: {part!r} is not a whole number") from None
        if rate <= 0:
            raise ValueError(f"--rate {value!r}: each rate must be > 0 events/s")
        rates.append(rate)
    if not rates:
        raise ValueError(f"--rate {value!r}: give at least one rate")
    return rates


def ensure_bundle(args: argparse.Namespace, settings: Settings, work: Path) -> Path:
    if args.bundle is not None:
        return Path(args.bundle)
    if (Path(settings.bundle_path) / "manifest.json").is_file():
        return Path(settings.bundle_path)
    out = work / "bundles"
    if not (out / "current").exists():
        logger.info("training a small bundle for the benchmark in %s", out)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "mindstream",
                "train",
                *("--synthetic-users", "500", "--synthetic-items", str(ITEMS)),
                *("--max-steps", "3", "--epochs", "1", "--valid-users", "50"),
                *("--dim", "64", "--k", "4", "--max-len", "50"),
                *("--bundles", str(out), "--run-dir", str(work / "run")),
            ],
            check=True,
            env={k: v for k, v in os.environ.items() if k not in known_env()},
        )
    return out / "current"


def bare_aiokafka(settings: Settings, topic: str, n: int) -> dict[str, Any]:
    """Drain ``n`` records with a bare aiokafka consumer, JSON-decoding each value."""
    from aiokafka import AIOKafkaConsumer

    async def drain() -> float:
        consumer = AIOKafkaConsumer(
            topic,
            **aiokafka_consumer_kwargs(settings, group_id=f"bench-bare-{uuid.uuid4().hex[:8]}"),
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            count, started = 0, None
            while count < n:
                batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
                for records in batches.values():
                    if started is None:
                        started = time.perf_counter()
                    for record in records:
                        json.loads(record.value)
                    count += len(records)
            return time.perf_counter() - (started or time.perf_counter())
        finally:
            await consumer.stop()

    elapsed = asyncio.run(drain())
    return {"events": n, "seconds": round(elapsed, 2), "events_per_s": round(n / elapsed)}


def noop_faust(settings: Settings, topic: str, n: int, work: Path) -> dict[str, Any]:
    """A Faust agent that only counts, in a child process on the same settings."""
    out = work / f"noop-{uuid.uuid4().hex[:6]}.json"
    noop_settings = dataclasses.replace(
        settings, app_id=f"bench-noop-{uuid.uuid4().hex[:8]}", data_dir=str(work)
    )
    env = {k: v for k, v in os.environ.items() if k not in known_env()}
    env.update(noop_settings.as_env())
    with (work / "noop-faust.log").open("ab") as log:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.stream_bench",
                "noop-faust",
                topic,
                str(n),
                str(out),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=1800,
            check=True,
        )
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def _noop_faust_child(topic_name: str, n: int, out: Path) -> None:
    import faust

    from stream.config import app_options

    settings = Settings.from_env()
    options = {**app_options(settings), "web_enabled": False}
    app = faust.App(settings.app_id, **options)
    topic = app.topic(topic_name, key_type=bytes, value_type=bytes)
    state = {"count": 0, "started": 0.0}

    @app.agent(topic)
    async def count(stream: Any) -> None:
        async for _ in stream:
            if state["count"] == 0:
                state["started"] = time.perf_counter()
            state["count"] += 1
            if state["count"] >= n:
                elapsed = time.perf_counter() - state["started"]
                out.write_text(
                    json.dumps(
                        {
                            "events": n,
                            "seconds": round(elapsed, 2),
                            "events_per_s": round(n / elapsed),
                        }
                    )
                )
                os._exit(0)

    loop = "uvloop" if importlib.util.find_spec("uvloop") else "aio"  # as the worker's
    sys.argv = ["bench-noop", "-L", loop, "worker", "-l", "warn", "--without-web"]
    app.main()


def _events_in(metrics: dict[str, float]) -> float:
    return sum(v for k, v in metrics.items() if k.startswith("mindstream_stream_events_in_total"))


def drain_worker(
    settings: Settings,
    n: int,
    work: Path,
    cpu: ServiceCpu | None = None,
    *,
    log_name: str = "worker-drain.log",
) -> dict[str, Any]:
    """The real worker draining a backlog of ``n`` events: its capacity, and the CPU per event
    of the worker and of the services in ``cpu`` (broker: the fetches and the changelog). The
    worker logs to ``work / log_name``."""
    cpu = cpu or ServiceCpu({})
    with WorkerProcess(settings, work / log_name) as worker:
        worker.start()
        worker.wait_ready(timeout_s=180)
        started = time.time()
        cpu_at_ready = _cpu(worker.metrics())
        services_at_ready = cpu.read()
        while True:
            metrics = worker.metrics()
            if _events_in(metrics) >= n:
                break
            if not worker.running:
                raise MindstreamError(f"worker exited:\n{worker.log_tail()}")
            time.sleep(0.5)
        services_at_end = cpu.read()
        elapsed = metrics["mindstream_stream_last_batch_timestamp_seconds"] - started
        worker.terminate()
    users = metrics["mindstream_stream_users_recomputed_total"]
    batches = metrics["mindstream_stream_batch_events_count"]
    return {
        "events": n,
        "seconds": round(elapsed, 2),
        "events_per_s": round(n / elapsed),
        "users_recomputed_per_s": round(users / elapsed),
        "mean_batch_events": round(n / max(batches, 1)),
        "tower_s": round(metrics["mindstream_stream_tower_seconds_sum"], 2),
        "redis_s": round(metrics["mindstream_stream_redis_write_seconds_sum"], 2),
        "worker_cpu_s": round(_cpu(metrics), 1),
        "worker_cpu_ms_per_event": round(1000 * (_cpu(metrics) - cpu_at_ready) / n, 4),
        **per_event(services_at_ready, services_at_end, n),
        "redis_records_per_s_per_core": _records_per_core(
            users, services_at_ready.get("redis"), services_at_end.get("redis")
        ),
        "mean_ms_per_batch": _mean_stage_ms(metrics),
    }


def _records_per_core(records: float, before: float | None, after: float | None) -> int | None:
    """Interest records written per second of Redis CPU (all its nodes): one script call's
    worth of work per record, the figure a Redis capacity estimate needs."""
    if before is None or after is None or after <= before:
        return None
    return round(records / (after - before))


def drain_worker_on_cluster(
    settings: Settings, n: int, work: Path, cpu: ServiceCpu | None = None
) -> dict[str, Any]:
    """:func:`drain_worker` with its own consumer group (so the same backlog from the start)
    and a local Redis Cluster of its own (``infra.redis_cluster``)."""
    from infra import processes
    from infra.redis_cluster import start_cluster

    started: list[Any] = []
    nodes = start_cluster(work / "redis-cluster", on_spawn=started.append)
    try:
        cluster_settings = dataclasses.replace(
            settings,
            app_id=f"{settings.app_id}-cluster",
            redis_url=f"redis://{nodes[0].host}:{nodes[0].port}/0",
            redis_cluster=True,
            worker_web_port=free_port(),
        )
        # the cluster's nodes stand in for the single redis-server in the CPU figures
        cluster_cpu = (cpu or ServiceCpu({})).with_group("redis", [r.process.pid for r in nodes])
        return {"redis_masters": 3, **drain_worker(cluster_settings, n, work, cluster_cpu)}
    finally:
        for record in started:
            processes.stop(record.process, timeout_s=5.0)


def _cpu(metrics: dict[str, float]) -> float:
    return metrics.get("process_cpu_seconds_total", float("nan"))


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus-style quantile from cumulative (upper bound, count) pairs, linear in a bucket."""
    total = buckets[-1][1]
    if total == 0:
        return float("nan")
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            share = (rank - lower_count) / max(count - lower_count, 1e-12)
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return lower_bound


def freshness_quantiles(metrics: dict[str, float]) -> dict[str, float]:
    prefix = 'mindstream_stream_freshness_seconds_bucket{le="'
    buckets = sorted(
        (float(key[len(prefix) : -2]), value)
        for key, value in metrics.items()
        if key.startswith(prefix)
    )
    return {
        f"p{int(q * 100)}_ms": round(histogram_quantile(q, buckets) * 1000, 1)
        for q in (0.5, 0.95, 0.99)
    }


def sum_samples(samples: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Several workers' ``/metrics`` samples added up name by name: right for counters and for
    histogram buckets, sums and counts (one histogram of the whole group), not for gauges."""
    out: dict[str, float] = {}
    for metrics in samples:
        for key, value in metrics.items():
            out[key] = out.get(key, 0.0) + value
    return out


def assigned_partitions(metrics: Mapping[str, float], topic: str, partitions: int) -> set[int]:
    """The partitions of ``topic`` a worker reports a consumer lag for: its assignment (a
    partition shows once the worker knows its log end, at the latest after one scrape)."""
    return {
        p
        for p in range(partitions)
        if f'{LAG_METRIC}{{partition="{p}",topic="{topic}"}}' in metrics
    }


def assignment_settled(assignments: Sequence[set[int]], partitions: int) -> bool:
    """Every worker holds at least one partition and together they hold each exactly once."""
    held = [p for a in assignments for p in a]
    return all(assignments) and len(held) == partitions and set(held) == set(range(partitions))


def wait_settled(
    workers: Sequence[WorkerProcess], topic: str, partitions: int, timeout_s: float = 180.0
) -> list[set[int]]:
    """Wait until every worker is healthy (not rebalancing) and the group's assignment covers
    the partitions once, the same over three polls half a second apart; return it."""
    deadline = time.monotonic() + timeout_s
    stable = 0
    last: list[set[int]] | None = None
    now: list[set[int]] | None
    while stable < 3:
        if time.monotonic() > deadline:
            tails = "\n".join(w.log_tail(20) for w in workers)
            raise MindstreamError(f"worker group did not settle (last: {last}):\n{tails}")
        for worker in workers:
            if not worker.running:
                raise MindstreamError(f"worker exited:\n{worker.log_tail()}")
        answers = [w.health() for w in workers]
        now = (
            [assigned_partitions(w.metrics(), topic, partitions) for w in workers]
            if all(a is not None and a[0] == 200 for a in answers)
            else None
        )
        settled = now is not None and assignment_settled(now, partitions)
        stable = stable + 1 if settled and now == last else (1 if settled else 0)
        last = now
        time.sleep(0.5)
    return last or []


def sustained(
    settings: Settings,
    records: list[tuple[bytes, bytes]],
    rate: int,
    tick_s: float,
    work: Path,
    workers: int = 1,
    cpu: ServiceCpu | None = None,
    sample_s: float = 10.0,
) -> dict[str, Any]:
    """Offer ``rate`` events/s to running workers; freshness and the rate they kept up with,
    the CPU per event of the workers and of the services in ``cpu``, and every ``sample_s``
    seconds a window of the same figures (``windows``: where the time goes as the run goes on).
    """
    cpu = cpu or ServiceCpu({})
    group = [
        WorkerProcess(settings, work / "worker-rate.log")
        if workers == 1
        else WorkerProcess(
            dataclasses.replace(
                settings,
                worker_web_port=free_port() if i else settings.worker_web_port,
                data_dir=str(Path(settings.data_dir) / f"worker-{i}"),
            ),
            work / f"worker-rate-{i}.log",
        )
        for i in range(workers)
    ]
    with contextlib.ExitStack() as stack:
        for worker in group:
            stack.enter_context(worker)
            worker.start()
        for worker in group:
            worker.wait_ready(timeout_s=180)
        assignments = (
            wait_settled(group, settings.clicks_topic, settings.topic_partitions)
            if workers > 1
            else []
        )
        cpu_at_ready = [_cpu(worker.metrics()) for worker in group]
        services_at_ready = cpu.read()
        sampler = WindowSampler(group, cpu, sample_s)
        started = time.time()
        sampler.start()
        publisher_cpu = time.process_time()
        try:
            published = publish_batches(settings, records, rate=rate, tick_s=tick_s)
            publisher_cpu = time.process_time() - publisher_cpu
            deadline = time.monotonic() + 600
            while True:
                each = [worker.metrics() for worker in group]
                metrics = sum_samples(each)
                if _events_in(metrics) >= len(records):
                    break
                if time.monotonic() > deadline or not all(w.running for w in group):
                    tails = "\n".join(w.log_tail() for w in group)
                    raise MindstreamError(f"worker did not catch up:\n{tails}")
                time.sleep(0.5)
            services_at_end = cpu.read()
        finally:
            windows = sampler.stop()
        caught_up = max(m["mindstream_stream_last_batch_timestamp_seconds"] for m in each) - started
        for worker in group:
            worker.terminate()
    n = published.events
    worker_cpu = sum(_cpu(m) for m in each) - sum(cpu_at_ready)
    out: dict[str, Any] = {
        "offered_events_per_s": rate,
        "published_events_per_s": round(published.events_per_s),
        "events": n,
        "publish_seconds": round(published.seconds, 2),
        "publisher_cpu_ms_per_event": round(1000 * publisher_cpu / n, 3),
        "events_per_record_batch": round(n / max(published.record_batches, 1), 1),
        "caught_up_seconds": round(caught_up, 2),
        "sustained_events_per_s": round(n / caught_up),
        "users_recomputed_per_s": round(
            metrics["mindstream_stream_users_recomputed_total"] / caught_up
        ),
        "freshness": freshness_quantiles(metrics),
        "mean_batch_events": round(n / max(metrics["mindstream_stream_batch_events_count"], 1)),
        "worker_cpu_ms_per_event": round(1000 * worker_cpu / n, 3),
        **per_event(services_at_ready, services_at_end, n),
        "mean_ms_per_batch": _mean_stage_ms(metrics),
        "windows": windows,
    }
    if workers > 1:
        out["workers"] = workers
        out["per_worker"] = [
            _worker_figures(m, ready_cpu, partitions)
            for m, ready_cpu, partitions in zip(each, cpu_at_ready, assignments, strict=True)
        ]
    return out


def diff_samples(after: Mapping[str, float], before: Mapping[str, float]) -> dict[str, float]:
    """Counter and histogram samples over an interval: ``after`` minus ``before``, name by name."""
    return {key: value - before.get(key, 0.0) for key, value in after.items()}


def window_figures(
    before: Mapping[str, float],
    after: Mapping[str, float],
    seconds: float,
    services_before: Mapping[str, float | None],
    services_after: Mapping[str, float | None],
) -> dict[str, Any]:
    """One interval of a sustained run from two summed ``/metrics`` samples of the workers and
    two readings of the services' CPU: events/s, the freshness quantiles of the events written
    in it, batch size and per-batch stage times, and each process's share of a core."""
    delta = diff_samples(after, before)
    events = _events_in(delta)
    batches = delta.get("mindstream_stream_batch_events_count", 0.0)
    out: dict[str, Any] = {
        "events_per_s": round(events / seconds) if seconds > 0 else None,
        "freshness": freshness_quantiles(delta) if events else {},
        "mean_batch_events": round(events / batches) if batches else None,
        "mean_ms_per_batch": _mean_stage_ms(delta),
        "worker_core_share": share_of_core(
            before.get("process_cpu_seconds_total"),
            after.get("process_cpu_seconds_total"),
            seconds,
        ),
    }
    for name in services_after:
        out[f"{name}_core_share"] = share_of_core(
            services_before.get(name), services_after.get(name), seconds
        )
    return out


class WindowSampler:
    """A thread that reads the workers' ``/metrics`` and the services' CPU every ``every_s``
    seconds and keeps one :func:`window_figures` per interval (plus the last partial one)."""

    def __init__(self, workers: Sequence[WorkerProcess], cpu: ServiceCpu, every_s: float) -> None:
        self.workers = list(workers)
        self.cpu = cpu
        self.every_s = every_s
        self.windows: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def _sample(self) -> tuple[float, dict[str, float], dict[str, float | None]]:
        return time.monotonic(), sum_samples([w.metrics() for w in self.workers]), self.cpu.read()

    def _run(self) -> None:
        began, metrics, services = self._sample()
        last = began
        stopping = False
        while not stopping:
            stopping = self._stop.wait(self.every_s)
            try:
                now, now_metrics, now_services = self._sample()
            except OSError:  # a worker stopped answering: the main loop reports it
                return
            if now - last < 1.0:
                break  # a stop right after a sample: nothing worth a window
            window = window_figures(metrics, now_metrics, now - last, services, now_services)
            self.windows.append({"t_s": round(now - began, 1), **window})
            last, metrics, services = now, now_metrics, now_services

    def start(self) -> None:
        if self.every_s > 0:
            self._thread.start()

    def stop(self) -> list[dict[str, Any]]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        return self.windows


def _worker_figures(
    metrics: dict[str, float], cpu_at_ready: float, partitions: set[int]
) -> dict[str, Any]:
    """One worker of a group in the sustained run: its share of the events and of the CPU."""
    events = _events_in(metrics)
    cpu = _cpu(metrics) - cpu_at_ready
    return {
        "partitions": sorted(partitions),
        "events_in": round(events),
        "events_applied": round(metrics.get("mindstream_stream_events_applied_total", 0.0)),
        "worker_cpu_s": round(cpu, 2),
        "worker_cpu_ms_per_event": round(1000 * cpu / events, 3) if events else None,
        "freshness": freshness_quantiles(metrics),
        "mean_batch_events": round(
            events / max(metrics.get("mindstream_stream_batch_events_count", 0.0), 1)
        ),
    }


def _mean_stage_ms(metrics: dict[str, float]) -> dict[str, float]:
    """Mean time per micro-batch of each stage (from the worker's histograms)."""
    out = {}
    for stage, name in (
        ("tower", "tower_seconds"),
        ("redis", "redis_write_seconds"),
        ("changelog", "changelog_write_seconds"),
        ("rekey", "rekey_write_seconds"),
    ):
        count = metrics.get(f"mindstream_stream_{name}_count", 0.0)
        total = metrics.get(f"mindstream_stream_{name}_sum", 0.0)
        out[stage] = round(1000 * total / count, 1) if count else 0.0
    return out


def run(args: argparse.Namespace, base: Settings) -> Results:
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="mindstream-bench-stream-"))
    work.mkdir(parents=True, exist_ok=True)
    results = Results(machine=machine(), setup={})
    brokers = ["env"] if args.services == "env" else args.brokers
    for broker in brokers:
        # one run on the default broker or on the environment's keeps the plain phase names
        prefix = "" if len(brokers) == 1 and broker in ("tansu", "env") else f"{broker}: "
        run_on(args, base, broker, prefix, work / broker, results)
    results.machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return results


def run_on(
    args: argparse.Namespace,
    base: Settings,
    broker: str,
    prefix: str,
    work: Path,
    results: Results,
) -> None:
    """Every phase on one broker's services; phase names start with ``prefix``."""
    work.mkdir(parents=True, exist_ok=True)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}

    def record(name: str, figures: dict[str, Any]) -> None:
        figures.setdefault("load_average", [round(x, 2) for x in os.getloadavg()])
        results.phases[f"{prefix}{name}"] = figures
        _report(results)

    root = Path(base.data_dir) / "bench-services"
    with services(args.services, broker, base, root) as (settings, cpu):
        bundle = ensure_bundle(args, settings, work.parent)
        from model_export.bundle import load_bundle

        item_ids = load_bundle(bundle).item_ids
        tag = uuid.uuid4().hex[:8]
        settings = dataclasses.replace(
            settings,
            app_id=f"bench-{tag}",
            clicks_topic=f"bench-clicks-{tag}",
            dlq_topic=f"bench-dlq-{tag}",
            redis_prefix=f"bench:{tag}:",
            topic_partitions=args.partitions,
            bundle_path=str(bundle),
            worker_web_port=free_port(),
            data_dir=str(work / "state"),
            stream_watch_interval_s=0.0,
            batch_size=args.batch_size or base.batch_size,
            batch_deadline_ms=args.deadline_ms or base.batch_deadline_ms,
        )
        setup = {
            "events": args.events,
            "users": args.users,
            "partitions": args.partitions,
            "items": len(item_ids),
            "bundle": str(bundle),
            "kafka_profile": settings.kafka_profile,
            "batch_size": settings.batch_size,
            "batch_deadline_ms": settings.batch_deadline_ms,
            "services": args.services,
            "broker": broker,
            "service_pids": cpu.groups,
        }
        if args.workers > 1:
            setup["sustained_workers"] = args.workers
        if prefix:
            results.setup.setdefault("brokers", {})[broker] = setup
        else:
            results.setup = setup
        now_ms = int(time.time() * 1000)
        backlog = clicks(args.events, args.users, item_ids, seed=1, now_ms=now_ms)
        sample_topic = f"bench-sample-{tag}"
        ensure_topics(
            settings, {settings.clicks_topic: args.partitions, sample_topic: args.partitions}
        )
        sample = backlog[:PER_RECORD_SAMPLE]
        before = cpu.read()
        started, own = time.perf_counter(), time.process_time()
        publish(settings, sample, topic=sample_topic)
        elapsed, own = time.perf_counter() - started, time.process_time() - own
        record(
            "publish, kafka-python",
            {
                "events": len(sample),
                "seconds": round(elapsed, 2),
                "events_per_s": round(len(sample) / elapsed),
                "publisher_cpu_ms_per_event": round(1000 * own / len(sample), 3),
                **per_event(before, cpu.read(), len(sample)),
                "batching": f"the profile's ({settings.kafka_profile})",
            },
        )
        before = cpu.read()
        own = time.process_time()
        published = publish_batches(settings, backlog)
        own = time.process_time() - own
        record(
            "publish, record batches",
            {
                "events": published.events,
                "seconds": round(published.seconds, 2),
                "events_per_s": round(published.events_per_s),
                "publisher_cpu_ms_per_event": round(1000 * own / published.events, 3),
                **per_event(before, cpu.read(), published.events),
                "events_per_record_batch": round(published.events / published.record_batches, 1),
            },
        )
        if "bare" not in skip:
            before = cpu.read()
            figures = bare_aiokafka(settings, settings.clicks_topic, args.events)
            record(
                "bare aiokafka + json", {**figures, **per_event(before, cpu.read(), args.events)}
            )
        if "noop" not in skip:
            before = cpu.read()
            figures = noop_faust(settings, settings.clicks_topic, args.events, work)
            record("no-op Faust agent", {**figures, **per_event(before, cpu.read(), args.events)})
        if "drain" not in skip:
            record("worker, backlog", drain_worker(settings, args.events, work, cpu))
            if args.redis_cluster:
                record(
                    "worker, backlog, redis cluster",
                    drain_worker_on_cluster(settings, args.events, work, cpu),
                )
        topics = []
        if "rate" not in skip:
            rates = args.rates
            for rate in rates:
                rate_tag = f"{tag}-{rate}"
                rate_settings = dataclasses.replace(
                    settings,
                    app_id=f"bench-rate-{rate_tag}",
                    clicks_topic=f"bench-rate-{rate_tag}",
                    worker_web_port=free_port(),
                    data_dir=str(work / f"state-{rate}"),
                )
                ensure_topics(rate_settings, {rate_settings.clicks_topic: args.partitions})
                topics.append(rate_settings.clicks_topic)
                offered = clicks(
                    int(rate * args.duration), args.users, item_ids, seed=2, now_ms=now_ms
                )
                name = "worker" if args.workers == 1 else f"{args.workers} workers"
                if len(rates) > 1:
                    name += f", {rate}/s"
                load_before = [round(x, 2) for x in os.getloadavg()]
                figures = sustained(
                    rate_settings,
                    offered,
                    rate,
                    args.tick_ms / 1000,
                    work,
                    args.workers,
                    cpu,
                    args.sample_s,
                )
                figures["load_average_before"] = load_before
                record(f"{name}, sustained", figures)
        with contextlib.suppress(MindstreamError):
            delete_topics(settings, [settings.clicks_topic, sample_topic, *topics])


def _report(results: Results) -> None:
    name, values = list(results.phases.items())[-1]
    flat = {k: v for k, v in values.items() if k not in ("per_worker", "windows")}
    print(f"{name:28s} " + "  ".join(f"{k}={v}" for k, v in flat.items()), flush=True)
    for i, worker in enumerate(values.get("per_worker", [])):
        print(f"  worker {i:<19d} " + "  ".join(f"{k}={v}" for k, v in worker.items()), flush=True)
    for window in values.get("windows", []):
        print(
            f"  t={window['t_s']:<24} "
            + "  ".join(f"{k}={v}" for k, v in window.items() if k != "t_s"),
            flush=True,
        )


def main(argv: Sequence[str], settings: Settings) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv)[1:])
    try:
        args.brokers = parse_brokers(args.broker)
        args.rates = parse_rates(args.rate)
    except ValueError as exc:
        parser.error(str(exc))
    if args.services == "env" and args.broker:
        parser.error("--broker starts local services; it does not go with --services env")
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    if args.workers > args.partitions:
        # a worker without a partition would idle, and the group would never look settled
        parser.error(f"--workers {args.workers} exceeds --partitions {args.partitions}")
    results = run(args, settings)
    print(json.dumps(dataclasses.asdict(results), indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(dataclasses.asdict(results), indent=2) + "\n")
    return 0


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "noop-faust":
    _noop_faust_child(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))
