"""The product on a Redis Cluster: 3 masters and 3 replicas of redis-server on loopback ports.

Each test starts its own cluster (``redis_cluster`` fixture, ``infra.redis_cluster``) and runs
``python -m stream worker`` with ``MINDSTREAM_REDIS_CLUSTER=true`` and ``REDIS_URL`` at one
node. Checked: every user's record equals the batch recompute and ``seq`` is exact (the
``streamcheck`` helpers), the records are spread over every master, recall and ``mindstream
stream show`` read them through a cluster client; a batch is written with one script call per
master, and a slot migrating or moved behind the client's back makes the write fall back to
calls per slot that follow ASK and MOVED; a master SIGKILLed mid-stream is replaced by
its replica and the worker (waiting for one replica per batch) carries on without a restart and
without losing an event; 2,000 slots resharded mid-stream (MOVED/ASK) lose nothing; and
misconfiguration (cluster mode on the wrong kind of server, uncovered slots, a node refusing
the write script) fails with an error that names the setting instead of a retry loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import redis

from benchmarks.harness import WorkerProcess, publish
from infra import processes
from infra.launch import ServiceRecord
from infra.redis_cluster import restart_node, wait_cluster_ok
from infra.services import read_state
from mindstream.redis_config import (
    RedisConfigError,
    async_redis_client,
    check_redis,
    redis_client,
)
from mindstream.settings import Settings, known_env
from stream.record import InterestRecord, read_many, write_records, write_records_async
from tests.integration.faultcheck import FAULT_RATE, click_log, verify
from tests.integration.streamcheck import (
    Report,
    SustainedStream,
    assert_equal_to_batch_recompute,
    click_records,
    expected_windows,
    recall_interests,
    run_worker_until_written,
    stream_show,
    synthetic_clicks,
)
from tests.requirements import missing

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MASTERS = 3
REFUSED_EXIT_S = 3.0


def _cluster_settings(settings: Settings, nodes: list[ServiceRecord]) -> Settings:
    out = dataclasses.replace(
        settings, redis_url=f"redis://{nodes[0].host}:{nodes[0].port}/0", redis_cluster=True
    )
    out.validate()
    return out


def _node(record: ServiceRecord) -> redis.Redis:
    return redis.Redis(host=record.host, port=record.port, socket_timeout=5)


def test_worker_writes_per_slot_and_readers_read_through_the_cluster(
    redis_cluster: list[ServiceRecord],
    stream_settings: Settings,
    bundle_dir: Path,
    tmp_path: Path,
) -> None:
    settings = _cluster_settings(stream_settings, redis_cluster)
    clicks = synthetic_clicks(60)
    expected = expected_windows(clicks)
    records, log = run_worker_until_written(settings, clicks, tmp_path / "worker.log")
    assert_equal_to_batch_recompute(bundle_dir, records, expected)
    assert "cluster=True" in log  # the start-up check saw a cluster, as configured
    # the users' records landed on every master, each on the master of its slot
    per_master = [_node(r).dbsize() for r in redis_cluster[:MASTERS]]
    assert all(n > 0 for n in per_master) and sum(per_master) == len(expected), per_master
    users = sorted(expected)[:6]
    shown = stream_show(settings, users)
    served = asyncio.run(recall_interests(settings, users))
    for user in users:
        assert shown[user]["seq"] == served[user]["seq"] == records[user].seq, user


@pytest.mark.parametrize("wait_replicas", [0, 1], ids=["async-replication", "wait-1-replica"])
def test_master_sigkilled_mid_stream_is_replaced_and_nothing_is_lost(
    wait_replicas: int,
    redis_cluster: list[ServiceRecord],
    stream_settings: Settings,
    bundle_dir: Path,
    tmp_path: Path,
    unique_name: Callable[[str], str],
    report: Report,
) -> None:
    """A master is SIGKILLed while the stream runs; its replica takes over its slots.

    With ``MINDSTREAM_REDIS_WAIT_REPLICAS=1`` every batch is on a replica before it is
    committed, so the failover cannot lose a committed record; the promoted replica then has no
    replica of its own, and the writes to its slots wait (``/health`` degraded) until the killed
    node is started again, as a supervisor would, and rejoins as its replica."""
    settings = dataclasses.replace(
        _cluster_settings(stream_settings, redis_cluster), redis_wait_replicas=wait_replicas
    )
    log = click_log(FAULT_RATE * 12, seed=6)
    victim, replica = redis_cluster[1], redis_cluster[1 + MASTERS]
    restarted: list[ServiceRecord] = []
    client = redis_client(settings)
    try:
        with WorkerProcess(settings, tmp_path / "worker.log") as worker:
            worker.start()
            worker.wait_ready()
            stream = SustainedStream(settings, log.records, FAULT_RATE).start()
            deadline = time.monotonic() + 60
            while _node(victim).dbsize() < 20:  # it holds records: writes to it are under way
                assert time.monotonic() < deadline and worker.running, worker.log_tail()
                time.sleep(0.05)
            os.kill(victim.process.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            while _node(replica).info("replication")["role"] != "master":
                assert time.monotonic() - killed_at < 60, "the replica was not promoted"
                time.sleep(0.05)
            wait_cluster_ok([r for r in redis_cluster if r is not victim], timeout_s=60)
            failover_s = time.monotonic() - killed_at
            faults: dict[str, object] = {
                "master_sigkill": 1,
                "replica_promoted_after_s": round(failover_s, 1),
                "wait_replicas": wait_replicas,
            }
            if wait_replicas:
                # no replica for the promoted master: its slots' writes wait, the worker says so
                while (answer := worker.health()) is None or answer[0] == 200:
                    assert time.monotonic() - killed_at < 60, worker.log_tail()
                    time.sleep(0.1)
                assert answer[1]["status"] == "degraded", answer
                restarted.append(restart_node(victim))
                while _node(victim).info("replication").get("master_link_status") != "up":
                    assert time.monotonic() - killed_at < 90, "the old master did not rejoin"
                    time.sleep(0.1)
                faults["old_master_back_as_replica_after_s"] = round(
                    time.monotonic() - killed_at, 1
                )
            positions = stream.join()
            faults["redis_write_failures_retried"] = worker.metrics().get(
                "mindstream_stream_redis_write_failures_total", 0.0
            )
            faults["worker_starts"] = worker.starts
            figures = verify(
                f"redis_cluster_failover_wait{wait_replicas}",
                settings,
                client,
                log,
                positions,
                bundle_dir,
                unique_name,
                worker,
                faults,
                report,
            )
            assert worker.running and worker.starts == 1, figures
    finally:
        client.close()
        for record in restarted:
            processes.stop(record.process, timeout_s=5.0)


def test_cluster_mode_must_match_the_server(
    redis_cluster: list[ServiceRecord],
    stream_settings: Settings,
    own_redis: Callable[..., object],
    tmp_path: Path,
) -> None:
    node = f"redis://{redis_cluster[0].host}:{redis_cluster[0].port}/0"
    # A cluster node without cluster mode: refused at once, naming the setting ...
    plain_to_cluster = dataclasses.replace(stream_settings, redis_url=node, redis_cluster=False)
    with pytest.raises(RedisConfigError, match="MINDSTREAM_REDIS_CLUSTER=true"):
        check_redis(plain_to_cluster)
    # ... and the worker exits at start (status 78) instead of retrying CROSSSLOT for ever.
    with WorkerProcess(plain_to_cluster, tmp_path / "worker.log") as worker:
        worker.start()
        deadline = time.monotonic() + 90
        while worker.running:
            assert time.monotonic() < deadline, worker.log_tail()
            time.sleep(0.1)
        assert worker.returncode == 78, worker.log_tail()
        assert "MINDSTREAM_REDIS_CLUSTER" in worker.log_tail()
    # Cluster mode with a plain server.
    own_redis("start")
    cluster_to_plain = dataclasses.replace(
        stream_settings, redis_url=str(own_redis("url")), redis_cluster=True
    )
    with pytest.raises(RedisConfigError, match="not in cluster mode"):
        check_redis(cluster_to_plain)


def test_script_cache_flushed_on_every_master_is_reloaded_and_written_per_slot(
    redis_cluster: list[ServiceRecord],
) -> None:
    """The monotonic write's NOSCRIPT answer (every master restarted or flushed) loads the
    script on every master and sends the batch again, grouped by slot, with and without a
    WAIT per node; older input is still kept out afterwards."""
    settings = _cluster_settings(Settings(), redis_cluster)
    users = [f"flush{n}" for n in range(300)]

    def flush_every_master() -> None:
        for record in redis_cluster[:MASTERS]:
            _node(record).script_flush()

    async def write_async(seq: int, wait_replicas: int) -> list[bool]:
        client = async_redis_client(settings)
        try:
            records = [_user_record(u, seq) for u in users]
            return await write_records_async(
                client, "s:", records, wait_replicas=wait_replicas, wait_timeout_ms=5000
            )
        finally:
            await client.aclose()

    flush_every_master()
    assert asyncio.run(write_async(2, 1)) == [True] * len(users)
    flush_every_master()
    assert asyncio.run(write_async(3, 0)) == [True] * len(users)
    flush_every_master()
    sync_client = redis_client(settings)
    try:
        assert write_records(sync_client, "s:", [_user_record(u, 1) for u in users]) == [
            False
        ] * len(users)
        assert {r.seq for r in read_many(sync_client, "s:", users) if r} == {3}
    finally:
        sync_client.close()
    per_master = [len(_node(r).keys("s:u:*")) for r in redis_cluster[:MASTERS]]
    assert all(n > 0 for n in per_master) and sum(per_master) == len(users), per_master


def _user_record(user: str, seq: int) -> InterestRecord:
    return InterestRecord(
        user_id=user,
        vectors=np.full((1, 4), seq, dtype=np.float32),
        k=1,
        dim=4,
        model="m1",
        event_ts=seq,
        updated_ms=1,
        n_behaviours=seq,
        seq=seq,
        src=f"clicks/0/{seq}",
        items=("i1",),
    )


def test_uncovered_slots_are_refused(redis_cluster: list[ServiceRecord]) -> None:
    node = _node(redis_cluster[0])
    node.execute_command("CLUSTER", "DELSLOTSRANGE", 0, 99)
    settings = Settings(
        redis_url=f"redis://{redis_cluster[0].host}:{redis_cluster[0].port}/0",
        redis_cluster=True,
    )
    with pytest.raises(RedisConfigError, match="16284 of 16384 slots"):
        check_redis(settings)


def test_a_node_refusing_the_write_script_ends_the_worker(
    redis_cluster: list[ServiceRecord], stream_settings: Settings, tmp_path: Path
) -> None:
    settings = dataclasses.replace(
        _cluster_settings(stream_settings, redis_cluster),
        stream_redis_refused_exit_s=REFUSED_EXIT_S,
    )
    with WorkerProcess(settings, tmp_path / "worker.log") as worker:
        worker.start()
        worker.wait_ready()
        # one master stops offering the script to the (default) user mindstream connects as
        _node(redis_cluster[2]).execute_command("ACL", "SETUSER", "default", "-evalsha")
        publish(settings, click_records(synthetic_clicks(40)))
        deadline = time.monotonic() + 90
        while worker.running:
            assert time.monotonic() < deadline, worker.log_tail()
            time.sleep(0.1)
        assert worker.returncode == 78, worker.log_tail()
        log = worker.log_path.read_text(errors="replace")
    assert "reason='NOPERM'" in log and "retrying cannot fix it" in log


def test_services_up_redis_cluster_starts_a_usable_cluster(tmp_path: Path) -> None:
    """``mindstream services up --redis-cluster`` as a user runs it, then ``down``."""
    data_dir = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if k not in known_env()}
    run = functools.partial(
        subprocess.run, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    cli = [sys.executable, "-m", "mindstream", "services"]
    up = run([*cli, "up", "--redis-cluster", "--data-dir", str(data_dir)])
    try:
        assert up.returncode == 0, up.stderr
        exports = dict(
            line.removeprefix("export ").split("=", 1) for line in up.stdout.splitlines()
        )
        assert exports["MINDSTREAM_REDIS_CLUSTER"] == "true"
        settings = Settings(redis_url=exports["REDIS_URL"], redis_cluster=True)
        check_redis(settings)
        client = redis_client(settings)
        try:
            masters = {client.get_node_from_key(f"k{n}").name for n in range(200)}  # type: ignore[attr-defined]
            assert len(masters) == MASTERS
        finally:
            client.close()
        state = read_state(data_dir)
        assert state is not None
        roles = sorted(
            _node(r).info("replication")["role"]
            for name, r in state.services.items()
            if name.startswith("redis-cluster-")
        )
        assert roles == ["master"] * MASTERS + ["slave"] * MASTERS
        status = run([*cli, "status", "--data-dir", str(data_dir)])
        assert status.returncode == 0 and status.stdout.count("running") == 7, status.stdout
    finally:
        down = run([*cli, "down", "--data-dir", str(data_dir)])
    assert down.returncode == 0 and down.stderr.count(": stopped by") == 7, down.stderr


def test_slots_resharded_mid_stream_are_followed(
    redis_cluster: list[ServiceRecord],
    stream_settings: Settings,
    bundle_dir: Path,
    tmp_path: Path,
    unique_name: Callable[[str], str],
    report: Report,
) -> None:
    """``redis-cli --cluster reshard`` moves 2,000 slots (and their records, key by key, with
    MIGRATE) from one master to another while the stream runs: the worker's writes follow the
    MOVED and ASK redirections and nothing is lost."""
    redis_cli = shutil.which("redis-cli")
    if redis_cli is None:
        missing("redis-cli is not installed (apt-get install redis-tools)")
    settings = _cluster_settings(stream_settings, redis_cluster)
    log = click_log(FAULT_RATE * 10, seed=8)
    source, target = redis_cluster[0], redis_cluster[2]
    ids = [_node(r).execute_command("CLUSTER", "MYID") for r in (source, target)]
    source_id, target_id = (i.decode() if isinstance(i, bytes) else str(i) for i in ids)
    client = redis_client(settings)
    try:
        with WorkerProcess(settings, tmp_path / "worker.log") as worker:
            worker.start()
            worker.wait_ready()
            stream = SustainedStream(settings, log.records, FAULT_RATE).start()
            deadline = time.monotonic() + 60
            while _node(source).dbsize() < 20:  # records to move are there
                assert time.monotonic() < deadline and worker.running, worker.log_tail()
                time.sleep(0.05)
            streaming_at_start = not stream.done
            started = time.monotonic()
            moved = subprocess.run(
                [
                    redis_cli,
                    *("--cluster", "reshard", f"{source.host}:{source.port}"),
                    *("--cluster-from", source_id, "--cluster-to", target_id),
                    *("--cluster-slots", "2000", "--cluster-yes"),
                    *("--cluster-pipeline", "10"),
                ],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            reshard_s = time.monotonic() - started
            streaming_at_end = not stream.done
            assert moved.returncode == 0, moved.stdout[-2000:] + moved.stderr[-2000:]
            positions = stream.join()
            figures = verify(
                "redis_cluster_reshard",
                settings,
                client,
                log,
                positions,
                bundle_dir,
                unique_name,
                worker,
                {
                    "slots_moved": 2000,
                    "reshard_s": round(reshard_s, 1),
                    "stream_running_when_reshard_began": streaming_at_start,
                    "stream_running_when_reshard_ended": streaming_at_end,
                    "worker_starts": worker.starts,
                },
                report,
            )
            assert worker.running and worker.starts == 1, figures
            assert streaming_at_start, figures  # the slots moved while records were written
    finally:
        client.close()
    # the target now serves the moved slots
    slots = _node(target).execute_command("CLUSTER", "SLOTS")
    served = sum(int(r[1]) - int(r[0]) + 1 for r in slots if int(r[2][1]) == target.port)
    assert served >= 16384 // MASTERS + 2000 - 1, served


def _evalsha_calls(nodes: list[ServiceRecord]) -> int:
    """EVALSHA calls the nodes ran since their statistics were last reset."""
    total = 0
    for record in nodes:
        stats = _node(record).info("commandstats")
        total += int(stats.get("cmdstat_evalsha", {}).get("calls", 0))
    return total


def test_a_batch_is_written_by_node_and_a_moving_slot_falls_back_to_per_slot_writes(
    redis_cluster: list[ServiceRecord], caplog: pytest.LogCaptureFixture
) -> None:
    """The worker's write sends each master one call for its share of a batch (not one per
    user); a key whose slot is being migrated, or has moved since the client read the slot
    map, is refused by the old master ("non local key"), and the batch is then written per
    slot, following ASK and MOVED, with nothing lost and older input still kept out."""
    settings = _cluster_settings(Settings(), redis_cluster)
    masters = redis_cluster[:MASTERS]
    users = [f"node{n}" for n in range(300)]
    moving = users[0]
    slot = redis.crc.key_slot(moving.encode())  # the hash tag: the slot of the bare user id

    def owner_of(slot: int) -> ServiceRecord:
        for record in masters:
            for first, last, *_ in _node(record).execute_command("CLUSTER", "SLOTS"):
                if int(first) <= slot <= int(last):
                    return next(r for r in masters if r.port == int(_[0][1]))
        raise AssertionError(f"slot {slot} is not served")

    def node_id(record: ServiceRecord) -> str:
        raw = _node(record).execute_command("CLUSTER", "MYID")
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    async def scenario() -> None:
        client = async_redis_client(settings)
        try:

            async def write(seq: int) -> list[bool]:
                records = [_user_record(u, seq) for u in users]
                return await write_records_async(client, "s:", records)

            assert await write(1) == [True] * len(users)  # loads the script on each master
            for record in masters:
                _node(record).config_resetstat()
            assert await write(1) == [True] * len(users)  # the same input again: rewritten
            # 300 users over 3 masters: one call per master, not one per user (slot)
            assert _evalsha_calls(masters) == MASTERS
            assert "per slot" not in caplog.text

            # the slot of one user starts moving to another master, its key already there
            source = owner_of(slot)
            target = next(r for r in masters if r is not source)
            key = f"s:u:{{{moving}}}"
            _node(target).execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", node_id(source))
            _node(source).execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", node_id(target))
            _node(source).execute_command("MIGRATE", target.host, target.port, key, 0, 5000)
            assert await write(2) == [True] * len(users)
            assert "non local key" in caplog.text and "per slot" in caplog.text
            # the importing master answers for the slot only after ASKING, on one connection
            asking = _node(target).pipeline(transaction=False)
            asking.execute_command("ASKING").hget(key, "seq")
            assert asking.execute()[1] == b"2"
            with pytest.raises(redis.exceptions.AskError):  # the source no longer holds it
                _node(source).exists(key)

            # the move completes; the client's slot map still names the old master
            caplog.clear()
            for record in masters:
                _node(record).execute_command("CLUSTER", "SETSLOT", slot, "NODE", node_id(target))
            assert await write(3) == [True] * len(users)
            assert "per slot" in caplog.text
            assert _node(target).hget(key, "seq") == b"3"
            # older input is still kept out, and the next batch is written by node again
            caplog.clear()
            assert await write(2) == [False] * len(users)
            assert "per slot" not in caplog.text
        finally:
            await client.aclose()

    with caplog.at_level("INFO", logger="stream.record"):
        asyncio.run(scenario())
    got = read_many(redis_client(settings), "s:", users)
    assert [r.seq if r else None for r in got] == [3] * len(users)
