"""``mindstream bench recall-ab``: this tree's recall service against another checkout's, served
side by side and sent alternating requests, so both meet the same host.

On a shared VM the host's speed moves at the scale of seconds (a fixed pure-Python loop took
80-165 ms within five minutes on the development VM), so two runs of ``bench recall`` minutes
apart compare the host as much as the code. Here both services load the same synthetic
catalogue (each builds or reuses its own index), read the same users from one Redis, and every
client alternates between them request by request; each round reports each service's CPU
milliseconds per request (from ``/proc``) and its latencies, and the summary the per-round
ratios of this tree's CPU to the other's. Every response is checked as ``bench recall`` checks
it. The other checkout runs with its own folder first on ``PYTHONPATH`` and this interpreter.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import statistics
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from benchmarks.recall_bench import (
    HttpConnection,
    bench_users,
    bench_work_dir,
    catalogue_bundle,
    check_candidates,
    cpu_seconds,
    percentiles_ms,
    redis_for_bench,
    service_process,
    wait_healthy,
    write_users,
)
from mindstream.settings import Settings


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mindstream bench recall-ab", description=__doc__)
    p.add_argument("--other", required=True, help="the other checkout's folder (e.g. a worktree)")
    p.add_argument("--size", type=int, default=1_000_000, help="catalogue items (default 1M)")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--n", type=int, default=50)
    p.add_argument("--window", type=int, default=20)
    p.add_argument("--users", type=int, default=5000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--requests", type=int, default=4000, help="requests per round, both sides")
    p.add_argument("--concurrency", type=int, default=8, help="clients, each alternating sides")
    p.add_argument("--workers", type=int, default=1, help="serving processes per side")
    p.add_argument("--work-dir", default=None, help="catalogues and Redis (default var/bench)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    return p


def main(argv: Sequence[str], settings: Settings) -> int:
    args = build_parser().parse_args(list(argv)[1:])
    other = Path(args.other).resolve()
    if not (other / "recall" / "__main__.py").is_file():
        raise SystemExit(f"--other {other}: not a checkout of this project (no recall/__main__.py)")
    work_dir = bench_work_dir(args.work_dir, settings)
    from mindstream.redis_config import redis_client
    from recall.server import new_event_loop

    bundle = catalogue_bundle(work_dir, args.size, args.dim, args.k)
    records = bench_users(bundle, args.users, args.k, args.window, seed=args.size)
    with redis_for_bench(None, work_dir) as redis_url:
        # The bench's own redis-server is a single node.
        service_settings = dataclasses.replace(
            settings,
            redis_url=redis_url,
            redis_cluster=False,
            redis_prefix=f"bench:recall-ab:{uuid.uuid4().hex[:8]}:",
        )
        client = redis_client(service_settings)
        try:
            write_users(client, service_settings.redis_prefix, records)
        finally:
            client.close()
        # Only what the bench must set: each side's own defaults (and the caller's
        # MINDSTREAM_* variables) decide the rest, so the other side runs as it would.
        env = {
            "MINDSTREAM_REDIS_CLUSTER": "0",
            "MINDSTREAM_REDIS_PREFIX": service_settings.redis_prefix,
            "MINDSTREAM_BUNDLE": str(bundle.path),
            "MINDSTREAM_RECALL_WATCH_INTERVAL_S": "0",
            "MINDSTREAM_RECALL_MAX_N": str(max(settings.recall_max_n, args.n)),
            "MINDSTREAM_RECALL_WORKERS": str(args.workers),
        }
        with (
            service_process(service_settings, env=env) as (this_base, _, this_pids),
            service_process(service_settings, checkout=other, env=env) as (
                other_base,
                _,
                other_pids,
            ),
            asyncio.Runner(loop_factory=new_event_loop) as runner,
        ):
            sides = {"this": (this_base, this_pids), "other": (other_base, other_pids)}
            rounds = runner.run(_rounds(sides, [r.user_id for r in records], args))
    result = {"args": vars(args), "other": str(other), "rounds": rounds, **summary(rounds)}
    print_result(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


async def _rounds(
    sides: dict[str, tuple[str, list[int]]], user_ids: list[str], args: argparse.Namespace
) -> list[dict[str, Any]]:
    names = list(sides)
    for base, _ in sides.values():
        await wait_healthy(base)
    connections = {
        name: [await HttpConnection.open(base) for _ in range(args.concurrency)]
        for name, (base, _) in sides.items()
    }
    paths = [f"/v1/users/{u}/candidates?n={args.n}" for u in user_ids]
    try:
        rounds = []
        for number in range(args.rounds + 1):  # round 0 warms both up and is not reported
            latencies: dict[str, list[float]] = {name: [] for name in names}
            counter = iter(range(args.requests))
            before = {name: cpu_seconds(pids) for name, (_, pids) in sides.items()}
            await asyncio.gather(
                *(
                    _client(c, counter, names, connections, paths, user_ids, latencies, args.n)
                    for c in range(args.concurrency)
                )
            )
            if number == 0:
                continue
            row: dict[str, Any] = {}
            for name, (_, pids) in sides.items():
                served = len(latencies[name])
                row[name] = {
                    **percentiles_ms(latencies[name]),
                    "requests": served,
                    "service_cpu_ms_per_call": round(
                        (cpu_seconds(pids) - before[name]) * 1000 / served, 3
                    ),
                }
            rounds.append(row)
        return rounds
    finally:
        for side in connections.values():
            for connection in side:
                with contextlib.suppress(OSError):
                    await connection.close()


async def _client(
    c: int,
    counter: Iterator[int],
    names: list[str],
    connections: dict[str, list[HttpConnection]],
    paths: list[str],
    user_ids: list[str],
    latencies: dict[str, list[float]],
    n: int,
) -> None:
    """Client ``c``: the next request number from ``counter``, to one side then the other
    (even clients start with the first side, odd ones with the second)."""
    for sent, i in enumerate(counter):
        name = names[(sent + c) % 2]
        started = time.perf_counter()
        status, body = await connections[name][c].get(paths[i % len(paths)])
        latencies[name].append(time.perf_counter() - started)
        if status != 200:
            raise RuntimeError(f"{name}: GET {paths[i % len(paths)]}: {status} {body[:300]!r}")
        check_candidates(body, user_ids[i % len(user_ids)], n)


def summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds, and this side's CPU per request over the other's, round by round."""
    # CPU time is counted in clock ticks (10 ms): a round too short to register any is skipped.
    ratios = [
        r["this"]["service_cpu_ms_per_call"] / r["other"]["service_cpu_ms_per_call"]
        for r in rounds
        if r["other"]["service_cpu_ms_per_call"] > 0
    ]
    return {
        "cpu_ratio_per_round": [round(x, 3) for x in ratios],
        "cpu_ratio_median": round(statistics.median(ratios), 3) if ratios else None,
        "median": {
            name: {
                key: round(statistics.median(r[name][key] for r in rounds), 3)
                for key in ("service_cpu_ms_per_call", "p50_ms", "p99_ms")
            }
            for name in ("this", "other")
        },
    }


def print_result(result: dict[str, Any]) -> None:
    print(f"this tree against {result['other']}, {len(result['rounds'])} rounds")
    print(f"{'round':>5} {'side':<6} {'CPU ms/request':>14} {'p50 ms':>8} {'p99 ms':>8}")
    for number, row in enumerate(result["rounds"], 1):
        for name in ("this", "other"):
            v = row[name]
            print(
                f"{number:>5} {name:<6} {v['service_cpu_ms_per_call']:>14} "
                f"{v['p50_ms']:>8.3f} {v['p99_ms']:>8.3f}"
            )
    print(
        f"CPU per request, this / other: median {result['cpu_ratio_median']} "
        f"(rounds: {', '.join(map(str, result['cpu_ratio_per_round']))})"
    )
