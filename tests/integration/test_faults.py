"""Faults while a sustained click stream runs: nothing lost, nothing applied twice.

Each test offers a steady synthetic stream (``FAULT_RATE`` events/s from a producer thread,
keyed by user id except every 7th click, which is unkeyed and goes through the re-key topic
(the SIGKILL test also runs a variant with keyed clicks only), late events, behaviours beyond
the window horizon, items unknown to the model, and one malformed record from the catalogue
every ``BAD_EVERY`` records) to ``python -m stream worker`` on the test broker, injects its
fault while the stream runs, and then, once the worker has caught up, checks (the stream and
the checks are ``faultcheck``'s, shared with the cluster fault tests):

- every user's Redis record equals the batch recompute of the user's full event history
  (window by definition, vectors from the bundle's ONNX graph, max abs diff <= 1e-5; the
  helpers of ``streamcheck``);
- lost = 0 and duplicated = 0: each record's ``seq`` (events ever applied to the window) equals
  the user's number of valid events, and the window holds exactly the expected behaviours;
- applied + dead-lettered == published, and the dead-letter sources are exactly the positions
  of the malformed records, each with its catalogued reason (dead letters are at-least-once:
  a duplicate has the same source and is counted once, and reported).

The figures (faults injected, events published, applied, dead-lettered, lost, duplicated) are
printed and written to ``var/reliability/<test>.json``; RELIABILITY.md records them with the
command to rerun. ``MINDSTREAM_FAULTS_REDIS_OUTAGE_S`` sets the Redis outage (default 8 s in
CI; the documented run uses 20 s), ``MINDSTREAM_FAULTS_KILLS`` the number of SIGKILLs (default
3) and ``MINDSTREAM_FAULTS_SEED`` the seed of the click log and the kill moments (default 2).
"""

from __future__ import annotations

import dataclasses
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from benchmarks.harness import WorkerProcess
from infra import processes, services
from infra.ports import free_port
from infra.testing import ServiceEndpoints, Source
from mindstream.settings import Settings
from tests.integration.faultcheck import FAULT_RATE, click_log, verify
from tests.integration.streamcheck import (
    UNKEYED_EVERY,
    Report,
    SustainedStream,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REDIS_OUTAGE_S = float(os.environ.get("MINDSTREAM_FAULTS_REDIS_OUTAGE_S", "8"))
KILLS = int(os.environ.get("MINDSTREAM_FAULTS_KILLS", "3"))  # at least this many SIGKILLs
SEED = int(os.environ.get("MINDSTREAM_FAULTS_SEED", "2"))  # kill moments and the click log


# --- the faults ------------------------------------------------------------------------------


def _wait_applied(worker: WorkerProcess, events: int, timeout_s: float = 60.0) -> None:
    """Wait until ``worker`` has applied ``events`` events (its own /metrics)."""
    deadline = time.monotonic() + timeout_s
    while worker.metrics().get("mindstream_stream_events_applied_total", 0.0) < events:
        assert worker.running and time.monotonic() < deadline, worker.log_tail()
        time.sleep(0.1)


@pytest.mark.parametrize("unkeyed_every", [0, UNKEYED_EVERY], ids=["keyed", "rekeyed"])
def test_sigkill_at_random_moments(
    unkeyed_every: int,
    stream_settings: Settings,
    redis_client: redis.Redis,
    bundle_dir: Path,
    tmp_path: Path,
    unique_name: Callable[[str], str],
    report: Report,
) -> None:
    """(a) SIGKILL the worker at random moments, repeatedly, while the stream runs."""
    log = click_log(FAULT_RATE * 5 * KILLS, seed=SEED, unkeyed_every=unkeyed_every)
    rng = random.Random(SEED)
    kills: list[float] = []
    with WorkerProcess(stream_settings, tmp_path / "worker.log") as worker:
        worker.start()
        worker.wait_ready()
        stream = SustainedStream(stream_settings, log.records, FAULT_RATE).start()
        t0 = time.monotonic()
        while not stream.done or len(kills) < KILLS:
            time.sleep(rng.uniform(0.5, 3.0))  # a random moment: mid-batch, mid-commit, ...
            kills.append(round(time.monotonic() - t0, 2))
            worker.kill()
            worker.start()
            if rng.random() < 0.5:
                worker.wait_ready()  # else the next kill may hit it while it starts or recovers
        positions = stream.join()
        worker.wait_ready(timeout_s=120)
        verify(
            "sigkill-rekeyed" if unkeyed_every else "sigkill",
            stream_settings,
            redis_client,
            log,
            positions,
            bundle_dir,
            unique_name,
            worker,
            {"sigkill": len(kills), "at_s": kills, "worker_starts": worker.starts, "seed": SEED},
            report,
        )
    assert len(kills) >= KILLS


def test_redis_outage_and_return_on_the_same_port(
    stream_settings: Settings,
    own_redis: Callable[..., object],
    bundle_dir: Path,
    tmp_path: Path,
    unique_name: Callable[[str], str],
    report: Report,
) -> None:
    """(b) Redis stops (saving its data) for REDIS_OUTAGE_S and comes back on the same port."""
    client = own_redis("start")
    assert isinstance(client, redis.Redis)
    settings = dataclasses.replace(stream_settings, redis_url=str(own_redis("url")))
    log = click_log(int(FAULT_RATE * (REDIS_OUTAGE_S + 8)), seed=3)
    states: list[str] = []
    with WorkerProcess(settings, tmp_path / "worker.log") as worker:
        worker.start()
        worker.wait_ready()
        stream = SustainedStream(settings, log.records, FAULT_RATE).start()
        _wait_applied(worker, 200)  # the outage hits a worker with records in Redis
        client.shutdown(save=True)  # like a restart of a Redis with persistence
        down_at = time.monotonic()
        while time.monotonic() - down_at < REDIS_OUTAGE_S:
            answer = worker.health()
            states.append("none" if answer is None else str(answer[1].get("status")))
            assert worker.running, worker.log_tail()  # retrying, not crashing
            time.sleep(0.5)
        client = own_redis("start")  # same port, same data directory: the snapshot is loaded
        assert isinstance(client, redis.Redis)
        outage_s = time.monotonic() - down_at
        deadline = time.monotonic() + 60
        while (answer := worker.health()) is None or answer[0] != 200:
            assert time.monotonic() < deadline, worker.log_tail()
            time.sleep(0.2)
        recovered_s = time.monotonic() - down_at - outage_s
        positions = stream.join()
        failures = worker.metrics().get("mindstream_stream_redis_write_failures_total", 0.0)
        figures = verify(
            "redis_outage",
            settings,
            client,
            log,
            positions,
            bundle_dir,
            unique_name,
            worker,
            {
                "redis_stopped_s": round(outage_s, 1),
                "healthy_again_after_return_s": round(recovered_s, 1),
                "redis_write_failures_retried": failures,
                "worker_starts": worker.starts,
            },
            report,
        )
    assert "degraded" in states, states  # the outage was seen and reported by /health
    assert failures > 0 and worker.starts == 1, figures


def _events_in(worker: WorkerProcess) -> float:
    return sum(v for k, v in worker.metrics().items() if "events_in_total" in k)


def test_broker_restart_with_durable_storage(
    service_endpoints: ServiceEndpoints,
    stream_settings: Settings,
    redis_client: redis.Redis,
    bundle_dir: Path,
    tmp_path: Path,
    unique_name: Callable[[str], str],
    report: Report,
) -> None:
    """(c) the broker stops (SIGTERM, its data kept) mid-stream and starts again on the same
    ports with its data; the worker and the producer ride it out."""
    data_dir = service_endpoints.data_dir
    if service_endpoints.source is not Source.KAFKA or data_dir is None:
        pytest.skip(
            "needs the local Apache Kafka launched by this session (MINDSTREAM_TEST_SERVICES="
            "kafka): the local Tansu broker keeps topics in memory only, and services from the "
            "environment or Docker are not restarted by the tests"
        )
    log = click_log(FAULT_RATE * 15, seed=6)
    with WorkerProcess(stream_settings, tmp_path / "worker.log") as worker:
        worker.start()
        worker.wait_ready(timeout_s=120)
        stream = SustainedStream(stream_settings, log.records, FAULT_RATE).start()
        deadline = time.monotonic() + 60
        while _events_in(worker) < FAULT_RATE * 2:  # the worker is in the middle of the stream
            assert time.monotonic() < deadline and worker.running, worker.log_tail()
            time.sleep(0.1)
        state = services.read_state(data_dir)
        assert state is not None
        nodes = [r.name for r in state.broker_nodes]
        stopped_at = time.monotonic()
        outcomes = services.stop_nodes(data_dir, nodes)
        assert all(o is processes.StopOutcome.TERMINATED for o in outcomes.values()), outcomes
        sent_before_stop = stream.sent
        assert worker.running, worker.log_tail()  # waiting for the broker, not crashing
        services.restart_nodes(data_dir, nodes, timeout_s=120)
        down_s = time.monotonic() - stopped_at
        positions = stream.join()
        verify(
            "broker_restart",
            stream_settings,
            redis_client,
            log,
            positions,
            bundle_dir,
            unique_name,
            worker,
            {
                "broker_restarts": 1,
                "broker_nodes": len(nodes),
                "broker_down_s": round(down_s, 1),
                "records_sent_before_stop": sent_before_stop,
                "worker_starts": worker.starts,
            },
            report,
        )
        assert worker.running and worker.starts == 1, worker.log_tail()


def test_two_workers_one_killed_rebalance(
    stream_settings: Settings,
    redis_client: redis.Redis,
    bundle_dir: Path,
    tmp_path: Path,
    unique_name: Callable[[str], str],
    report: Report,
) -> None:
    """(d) two workers share the group; one is SIGKILLed and the other takes its partitions."""
    log = click_log(2400, seed=4)
    second = dataclasses.replace(stream_settings, worker_web_port=free_port())
    with (
        WorkerProcess(stream_settings, tmp_path / "worker-a.log") as a,
        WorkerProcess(second, tmp_path / "worker-b.log") as b,
    ):
        a.start()
        b.start()
        a.wait_ready(timeout_s=120)
        b.wait_ready(timeout_s=120)
        stream = SustainedStream(stream_settings, log.records, FAULT_RATE).start()
        _wait_applied(b, 100)  # the worker to kill owns partitions and has applied events
        b_events = sum(v for k, v in b.metrics().items() if "events_in_total" in k)
        b.kill()
        killed_at = time.monotonic()
        positions = stream.join()
        figures = verify(
            "rebalance",
            stream_settings,
            redis_client,
            log,
            positions,
            bundle_dir,
            unique_name,
            a,
            {
                "workers": 2,
                "sigkill": 1,
                "killed_worker_had_consumed": b_events,
                "survivor_caught_up_after_kill_s": round(time.monotonic() - killed_at, 1),
            },
            report,
        )
        assert a.running and a.starts == 1
    # both workers had partitions before the kill: the survivor really took some over
    assert b_events > 0, figures
