"""Benchmarks of the model stage: training throughput (``mindstream bench train``) and the
exported user tower's onnxruntime CPU throughput (``mindstream bench tower``).

Both print the machine they ran on; ``--json PATH`` also writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": _cpu_model() or platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    try:
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
    except ModuleNotFoundError:
        info["onnxruntime"] = None
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ModuleNotFoundError:
        info["torch"] = None
    return info


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def bench_tower(
    *,
    n_items: int,
    dim: int,
    k: int,
    seq_len: int,
    batches: Sequence[int],
    threads: int,
    seconds: float,
    seed: int = 0,
) -> dict[str, Any]:
    """Users/s of the exported MIND tower in onnxruntime (CPU) at each batch size, full rows."""
    from model_export.export import export_onnx
    from model_export.model import MindConfig, build_tower
    from model_export.onnx_tower import OnnxUserTower

    tower = build_tower(MindConfig(n_items=n_items, dim=dim, k=k, max_len=seq_len, seed=seed))
    runtime = OnnxUserTower(export_onnx(tower), threads=threads)
    rng = np.random.default_rng(seed)
    rows = []
    for batch in batches:
        seq = rng.integers(1, n_items + 1, size=(batch, seq_len)).astype(np.int64)
        for _ in range(3):
            runtime(seq)  # warm-up
        calls = 0
        latencies = []
        started = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            runtime(seq)
            latencies.append(time.perf_counter() - t0)
            calls += 1
            if time.perf_counter() - started >= seconds and calls >= 5:
                break
        elapsed = time.perf_counter() - started
        rows.append(
            {
                "batch": batch,
                "users_per_s": calls * batch / elapsed,
                # Robust to other jobs on a shared machine: the median call's rate.
                "users_per_s_at_p50": batch / float(np.percentile(latencies, 50)),
                "p50_ms": float(np.percentile(latencies, 50) * 1e3),
                "p99_ms": float(np.percentile(latencies, 99) * 1e3),
                "calls": calls,
            }
        )
    return {
        "benchmark": "tower",
        "model": {"n_items": n_items, "dim": dim, "k": k, "seq_len": seq_len},
        "provider": runtime.session.get_providers()[0],
        "threads": threads or "onnxruntime default",
        "results": rows,
        "machine": machine(),
    }


def bench_train(
    *,
    kinds: Sequence[str],
    data: str | None,
    fmt: str,
    dim: int,
    k: int,
    max_len: int,
    batch_size: int,
    negatives: int,
    steps: int,
    threads: int,
    synthetic_users: int = 2000,
    synthetic_items: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Training samples/s for ``steps`` steps of each model kind on the given data."""
    from model_export.model import build_tower, config_for
    from model_export.train import TrainConfig, train
    from model_export.workflow import DataSpec, load_data

    spec = DataSpec(
        path=data,
        format=fmt if data else "synthetic",
        synthetic={"n_users": synthetic_users, "n_items": synthetic_items},
    )
    interactions, _ = load_data(spec)
    rows = []
    for kind in kinds:
        config = config_for(
            interactions.feature_sizes,
            interactions.item_features,
            n_items=interactions.n_items,
            kind="mind" if kind == "mind_k1" else kind,
            dim=dim,
            k=1 if kind == "mind_k1" else k,
            max_len=max_len,
            seed=seed,
        )
        tower = build_tower(config, interactions.item_features)
        result = train(
            tower,
            interactions.sequences,
            TrainConfig(
                epochs=10_000,
                batch_size=batch_size,
                negatives=negatives,
                max_steps=steps,
                log_every=0,
                threads=threads,
                seed=seed,
            ),
        )
        rows.append(
            {
                "kind": kind,
                "steps": result.steps,
                "samples": result.samples,
                "seconds": result.seconds,
                "samples_per_s": result.samples_per_second,
            }
        )
    return {
        "benchmark": "train",
        "data": interactions.name,
        "model": {
            "dim": dim,
            "k": k,
            "max_len": max_len,
            "item_features": sorted(interactions.item_features),
        },
        "batch_size": batch_size,
        "negatives": negatives,
        "results": rows,
        "machine": machine(),
    }


def _parser(target: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"mindstream bench {target}")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--seq-len", "--max-len", dest="seq_len", type=int, default=50)
    parser.add_argument("--threads", type=int, default=0, help="0 = library default")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    if target == "tower":
        parser.add_argument("--n-items", type=int, default=10_000)
        parser.add_argument("--batches", default="1,32,256")
        parser.add_argument("--seconds", type=float, default=3.0, help="per batch size")
    else:
        parser.add_argument("--data", default=None, help="data path (default: synthetic)")
        parser.add_argument("--format", default="auto")
        parser.add_argument("--kinds", default="mind,youtube_dnn,mind_k1")
        parser.add_argument("--batch-size", type=int, default=256)
        parser.add_argument("--negatives", type=int, default=1000)
        parser.add_argument("--steps", type=int, default=200)
        parser.add_argument("--synthetic-users", type=int, default=2000)
        parser.add_argument("--synthetic-items", type=int, default=1000)
    return parser


def main(argv: Sequence[str], settings: Any = None) -> int:
    """``argv[0]`` is the target (``tower`` or ``train``), the rest its options."""
    target, rest = argv[0], list(argv[1:])
    args = _parser(target).parse_args(rest)
    if target == "tower":
        report = bench_tower(
            n_items=args.n_items,
            dim=args.dim,
            k=args.k,
            seq_len=args.seq_len,
            batches=[int(b) for b in args.batches.split(",")],
            threads=args.threads,
            seconds=args.seconds,
        )
        print(
            f"user tower (onnxruntime {report['machine']['onnxruntime']}, "
            f"{report['provider']}, threads={report['threads']}): L={args.seq_len} "
            f"d={args.dim} K={args.k} items={args.n_items}"
        )
        for row in report["results"]:
            print(
                f"  batch {row['batch']:>4}: {row['users_per_s']:>9.0f} users/s "
                f"({row['users_per_s_at_p50']:.0f} at the median call)  "
                f"p50 {row['p50_ms']:.3f} ms  p99 {row['p99_ms']:.3f} ms"
            )
    elif target == "train":
        report = bench_train(
            kinds=[k for k in args.kinds.split(",") if k],
            data=args.data,
            fmt=args.format,
            dim=args.dim,
            k=args.k,
            max_len=args.seq_len,
            batch_size=args.batch_size,
            negatives=args.negatives,
            steps=args.steps,
            threads=args.threads,
            synthetic_users=args.synthetic_users,
            synthetic_items=args.synthetic_items,
        )
        print(
            f"training on {report['data']}: batch {args.batch_size}, {args.negatives} "
            f"negatives, d={args.dim} K={args.k} max_len={args.seq_len}"
        )
        for row in report["results"]:
            print(
                f"  {row['kind']:<12} {row['samples_per_s']:>9.0f} samples/s "
                f"({row['steps']} steps in {row['seconds']:.1f} s)"
            )
    else:
        raise SystemExit(f"unknown benchmark {target!r}: expected tower or train")
    info = report["machine"]
    print(
        f"machine: {info['platform']}, {info['processor']}, {info['cpu_count']} cores "
        f"({info['cpus_usable']} usable), load {info['load_average_1m']:.2f}, "
        f"python {info['python']}, torch {info['torch']}, onnxruntime {info['onnxruntime']}"
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0
