"""The stream worker of two source trees against each other, on the same services in one run.

``python -m benchmarks.stream_ab --trees old=/path/to/checkout,new=. --bundle <bundle>`` starts
one local Apache Kafka and Redis (``mindstream bench stream``'s services), publishes one
backlog, and lets workers run from each tree in turn (the tree first on ``PYTHONPATH`` and the
worker's working directory), A/B then B/A, so that the neighbours' load drifts over both alike:

* ``--rounds`` drains of the backlog, each by a worker of its own consumer group and Redis
  prefix (the same events, the same work);
* ``--rate-rounds`` runs of ``--rate`` events/s offered for ``--duration`` s to a fresh
  topic, as ``mindstream bench stream``'s sustained phase (freshness from the worker's
  histogram).

Each run prints one JSON line (worker, broker and Redis CPU ms per event, the load average);
the end, each tree's CPU per event. A tree is a checkout of this repository (``git worktree add
--detach <dir> <commit>``); the workers import ``stream`` from it, the rest runs from here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness import publish_batches
from benchmarks.stream_bench import (
    clicks,
    drain_worker,
    services,
    sustained,
)
from infra.ports import free_port
from mindstream.settings import Settings
from mindstream.topics import ensure_topics

PARTITIONS = 8


def parse_trees(value: str) -> list[tuple[str, Path]]:
    """``name=path,name=path`` as (name, absolute path) pairs; names unique, paths checkouts."""
    trees: list[tuple[str, Path]] = []
    for part in value.split(","):
        name, sep, path = part.strip().partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--trees {value!r}: expected name=path[,name=path...]")
        if name in {n for n, _ in trees}:
            raise ValueError(f"--trees {value!r}: {name!r} named twice")
        trees.append((name, Path(path).resolve()))
    if len(trees) < 2:
        raise ValueError(f"--trees {value!r}: name at least two trees to compare")
    return trees


def alternate(trees: Sequence[tuple[str, Path]], rounds: int) -> list[tuple[int, str, Path]]:
    """(round, name, path) in run order: the trees in order, then reversed, and so on."""
    out = []
    for r in range(rounds):
        for name, path in trees if r % 2 == 0 else list(reversed(trees)):
            out.append((r, name, path))
    return out


def _use_tree(tree: Path) -> None:
    # python -m puts the working directory first on sys.path, before PYTHONPATH
    os.environ["PYTHONPATH"] = str(tree)
    os.chdir(tree)


def run(args: argparse.Namespace, base: Settings) -> list[dict[str, Any]]:
    trees = parse_trees(args.trees)
    work = Path(args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    bundle = str(Path(args.bundle).resolve())
    here = Path.cwd()
    results: list[dict[str, Any]] = []

    def record(label: str, figures: dict[str, Any], load: tuple[float, ...]) -> None:
        row = {
            "run": label,
            "load_average_before": [round(x, 2) for x in load],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            **figures,
        }
        results.append(row)
        print(json.dumps(row), flush=True)

    with services("local", "kafka", base, Path(base.data_dir) / "bench-services") as (s, cpu):
        from model_export.bundle import load_bundle

        items = load_bundle(bundle).item_ids
        tag = uuid.uuid4().hex[:8]
        s = dataclasses.replace(
            s,
            clicks_topic=f"ab-clicks-{tag}",
            dlq_topic=f"ab-dlq-{tag}",
            topic_partitions=PARTITIONS,
            bundle_path=bundle,
            stream_watch_interval_s=0.0,
        )
        ensure_topics(s, {s.clicks_topic: PARTITIONS})
        now_ms = int(time.time() * 1000)
        publish_batches(s, clicks(args.events, args.users, items, seed=1, now_ms=now_ms))
        try:
            for r, name, tree in alternate(trees, args.rounds):
                label = f"{name} drain {r}"
                run_settings = _own(s, tag, f"{name}-d{r}", work)
                load = os.getloadavg()
                _use_tree(tree)
                record(
                    label,
                    drain_worker(run_settings, args.events, work, cpu, log_name=f"{label}.log"),
                    load,
                )
            for r, name, tree in alternate(trees, args.rate_rounds):
                label = f"{name} {args.rate}/s {r}"
                run_settings = dataclasses.replace(
                    _own(s, tag, f"{name}-r{r}", work),
                    clicks_topic=f"ab-rate-{tag}-{name}-{r}",
                )
                ensure_topics(run_settings, {run_settings.clicks_topic: PARTITIONS})
                offered = clicks(
                    int(args.rate * args.duration),
                    args.users,
                    items,
                    seed=2,
                    now_ms=int(time.time() * 1000),
                )
                load = os.getloadavg()
                _use_tree(tree)
                figures = sustained(
                    run_settings, offered, args.rate, 0.02, work, 1, cpu, args.sample_s
                )
                windows = figures.pop("windows")
                figures["worker_core_share"] = [w.get("worker_core_share") for w in windows]
                record(label, figures, load)
        finally:
            os.chdir(here)
    for name, _ in trees:
        for kind in ("drain", f"{args.rate}/s"):
            values = [
                row["worker_cpu_ms_per_event"]
                for row in results
                if row["run"].startswith(f"{name} {kind} ")
            ]
            if values:
                mean = sum(values) / len(values)
                print(f"{name} {kind}: worker CPU ms/event {values} mean {mean:.4f}")
    return results


def _own(settings: Settings, tag: str, label: str, work: Path) -> Settings:
    """A run's own consumer group, Redis prefix, web port and state folder."""
    return dataclasses.replace(
        settings,
        app_id=f"ab-{tag}-{label}",
        redis_prefix=f"ab:{tag}:{label}:",
        worker_web_port=free_port(),
        data_dir=str(work / f"state-{tag}-{label}"),
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.stream_ab", description=__doc__)
    p.add_argument("--trees", required=True, help="name=path,name=path: the checkouts to compare")
    p.add_argument("--bundle", required=True, type=Path, help="the bundle every worker serves")
    p.add_argument("--events", type=int, default=200_000, help="backlog size (default 200000)")
    p.add_argument("--users", type=int, default=20_000, help="distinct users (default 20000)")
    p.add_argument("--rounds", type=int, default=2, help="backlog drains per tree (default 2)")
    p.add_argument("--rate", type=int, default=5000, help="offered events/s (default 5000)")
    p.add_argument("--duration", type=float, default=120.0, help="offer for s (default 120)")
    p.add_argument("--rate-rounds", type=int, default=0, help="rate runs per tree (default 0)")
    p.add_argument("--sample-s", type=float, default=10.0, help="window of the core shares")
    p.add_argument("--work-dir", default="var/stream-ab", help="logs and worker state")
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = p.parse_args(argv)
    results = run(args, Settings.from_env())
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
