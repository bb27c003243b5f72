"""The client CPU of the worker's Redis write, one Redis against a Redis Cluster, in one run.

``python -m benchmarks.redis_write`` starts a redis-server and a local Redis Cluster (3 masters,
3 replicas, ``infra.redis_cluster``) on free loopback ports, then writes batches of interest
records with the worker's writer (``stream.record.write_records_async``) to each in turn, round
after round, and prints the process CPU and wall time per batch of each round and their ratio
(cluster / one Redis). Records are the shape the worker writes (K interests of ``--dim``
float32, a 20-item window) for ``--records`` distinct users per batch drawn from ``--users``, so
nearly every record of a batch is a hash slot of its own. The first ``--warmup`` batches of
each client (which load the script and the slot map) are not timed. Both servers are stopped
by their PIDs at the end.

Only the client side is measured: the servers' CPU is not in the figures (``mindstream bench
stream --redis-cluster`` gives the whole worker's and the servers' CPU per event).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from infra import processes
from infra.launch import ServiceRecord, launch
from infra.ports import LOOPBACK
from infra.redis_cluster import start_cluster
from infra.redis_server import REDIS
from mindstream.redis_config import async_redis_client
from mindstream.settings import Settings
from stream.record import InterestRecord, write_records_async

PREFIX = "bench:"


def batches(
    n_batches: int, records: int, users: int, k: int, dim: int, seed: int
) -> list[list[InterestRecord]]:
    """``n_batches`` batches of ``records`` distinct users each, with increasing ``seq``."""
    rng = np.random.default_rng(seed)
    items = tuple(f"i{j}" for j in range(20))
    out = []
    for seq in range(1, n_batches + 1):
        chosen = rng.choice(users, size=records, replace=False)
        out.append(
            [
                InterestRecord(
                    user_id=f"u{user}",
                    vectors=rng.standard_normal((k, dim)).astype(np.float32),
                    k=k,
                    dim=dim,
                    model="bench",
                    event_ts=seq,
                    updated_ms=seq,
                    n_behaviours=len(items),
                    seq=seq,
                    src=f"clicks/0/{seq}",
                    items=items,
                )
                for user in chosen
            ]
        )
    return out


async def _time_writes(
    settings: Settings, work: Sequence[list[InterestRecord]], warmup: int
) -> tuple[float, float]:
    """(CPU ms, wall ms) per batch of this process writing ``work`` after ``warmup`` batches."""
    client = async_redis_client(settings)
    try:
        for batch in work[:warmup]:
            await write_records_async(client, PREFIX, batch)
        timed = work[warmup:]
        wall, cpu = time.perf_counter(), time.process_time()
        for batch in timed:
            await write_records_async(client, PREFIX, batch)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        await client.aclose()  # type: ignore[attr-defined]  # stubs predate redis 5
    return 1000 * cpu / len(timed), 1000 * wall / len(timed)


def run(args: argparse.Namespace, work_dir: Path) -> dict[str, Any]:
    work = batches(
        args.warmup + args.batches, args.records, args.users, args.k, args.dim, args.seed
    )
    started: list[ServiceRecord] = []
    try:
        single = launch(
            REDIS, work_dir / "redis", host=LOOPBACK, timeout_s=30, on_spawn=started.append
        )
        nodes = start_cluster(work_dir / "redis-cluster", on_spawn=started.append)
        one = Settings(redis_url=f"redis://{single.host}:{single.port}/0")
        cluster = Settings(
            redis_url=f"redis://{nodes[0].host}:{nodes[0].port}/0", redis_cluster=True
        )
        rounds = []
        for n in range(args.rounds):
            one_cpu, one_wall = asyncio.run(_time_writes(one, work, args.warmup))
            cl_cpu, cl_wall = asyncio.run(_time_writes(cluster, work, args.warmup))
            rounds.append(
                {
                    "round": n + 1,
                    "one_redis_cpu_ms_per_batch": round(one_cpu, 3),
                    "cluster_cpu_ms_per_batch": round(cl_cpu, 3),
                    "one_redis_wall_ms_per_batch": round(one_wall, 2),
                    "cluster_wall_ms_per_batch": round(cl_wall, 2),
                    "cpu_ratio": round(cl_cpu / one_cpu, 2),
                }
            )
            print(json.dumps(rounds[-1]), flush=True)
    finally:
        for record in started:
            processes.stop(record.process, timeout_s=5.0)
    return {
        "records_per_batch": args.records,
        "batches_per_round": args.batches,
        "k": args.k,
        "dim": args.dim,
        "median_cpu_ratio": statistics.median(r["cpu_ratio"] for r in rounds),
        "rounds": rounds,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.redis_write", description=__doc__)
    p.add_argument("--records", type=int, default=700, help="records per batch (default 700)")
    p.add_argument("--users", type=int, default=10_000, help="users drawn from (default 10,000)")
    p.add_argument("--batches", type=int, default=40, help="timed batches per round (default 40)")
    p.add_argument("--warmup", type=int, default=5, help="untimed batches first (default 5)")
    p.add_argument("--rounds", type=int, default=3, help="rounds, each one then the other")
    p.add_argument("--k", type=int, default=4, help="interests per record (default 4)")
    p.add_argument("--dim", type=int, default=64, help="vector dimension (default 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the summary to this file")
    args = p.parse_args(argv)
    if args.records > args.users or min(args.records, args.batches, args.rounds) < 1:
        p.error("need 1 <= --records <= --users, and at least one batch and one round")
    with tempfile.TemporaryDirectory(prefix="redis-write-") as tmp:
        summary = run(args, Path(tmp))
    print(json.dumps({k: v for k, v in summary.items() if k != "rounds"}))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
