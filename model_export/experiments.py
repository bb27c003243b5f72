"""The model comparison: MIND (K=4), ComiRec-SA/DR, YouTube-DNN and MIND K=1 on a real data
set, both split protocols, a small equal tuning grid per model and several seeds.

``python -m model_export.experiments run --data PATH --out results/beauty`` trains every
(protocol, model, lr, seed) of the plan that has no result file yet: one small JSON per run
in ``<out>/trials/`` (not ``runs/``, which git ignores), so a run can be resumed or sharded
with ``--shard i/n``. ``... summarize --out results/beauty`` aggregates them into
``summary.json`` and prints a Markdown table; ``by-length`` and ``routing`` analyse
checkpoints. ``... seeds --trials results/long_histories/trials`` groups the result files of
``mindstream train --results`` (named ``<data>-<model>[-<protocol>][-seed<N>].json``) by data
set, split protocol (read from the file, never mixed) and model and prints mean ± std over the
seeds, the time to the best validation epoch and samples/s. ``... pool-folds --against NAME
FOLD.json ...`` pools ``python -m model_export.diagnose --json`` reports of the folds of one
ComiRec user split (``--split-fold``) into one paired bootstrap over all their users.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MODELS: dict[str, dict[str, Any]] = {
    "mind": {"kind": "mind", "k": 4},
    "youtube_dnn": {"kind": "youtube_dnn", "k": 1},
    "mind_k1": {"kind": "mind", "k": 1},
    "comirec_sa": {"kind": "comirec_sa", "k": 4, "head_hidden": -1},
    "comirec_sa_k1": {"kind": "comirec_sa", "k": 1, "head_hidden": -1},
    "comirec_dr": {"kind": "comirec_dr", "k": 4, "head_hidden": -1},
}
MULTI_INTEREST = ("mind", "comirec_sa", "comirec_dr")
METRICS = ("hit_rate@50", "recall@50", "ndcg@50", "hit_rate@20", "recall@20")


@dataclass(frozen=True)
class RunPlan:
    protocol: str
    model: str
    lr: float
    seed: int
    p: float = 1.0  # label-aware attention exponent (MIND with K > 1 only)
    detach: bool = True  # routing_detach (MIND models only)
    scoring: str = "label_aware"  # TrainConfig.interest_scoring (models with K > 1 only)

    @property
    def name(self) -> str:
        suffix = f"-p{self.p:g}" if self.p != 1.0 and self.model == "mind" else ""
        if not self.detach and self.model in ("mind", "mind_k1"):
            suffix += "-nodetach"
        if self.scoring != "label_aware" and self.model in MULTI_INTEREST:
            suffix += f"-{self.scoring}"
        return f"{self.protocol}-{self.model}{suffix}-lr{self.lr:g}-seed{self.seed}"


def plan(
    protocols: Sequence[str],
    models: Sequence[str],
    lrs: Sequence[float],
    seeds: Sequence[int],
    p: float = 1.0,
    detach: bool = True,
    scoring: str = "label_aware",
) -> list[RunPlan]:
    return [
        RunPlan(
            *combo,
            p=p if combo[1] == "mind" else 1.0,
            detach=detach,
            scoring=scoring if combo[1] in MULTI_INTEREST else "label_aware",
        )
        for combo in itertools.product(protocols, models, lrs, seeds)
    ]


def run_one(run: RunPlan, args: argparse.Namespace) -> dict[str, Any]:
    from model_export.train import TrainConfig
    from model_export.workflow import train_job

    spec = _data_spec(args.data, args.format, run.protocol)
    overrides = {
        **MODELS[run.model],
        "dim": args.dim,
        "max_len": args.max_len,
        "pow_p": run.p,
        "routing_detach": run.detach,
        "seed": run.seed,
    }
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=run.lr,
        negatives=args.negatives,
        patience=args.patience,
        log_every=args.log_every,
        threads=args.threads,
        seed=run.seed,
        interest_scoring=run.scoring,
    )
    outcome = train_job(
        spec,
        overrides,
        config,
        run_dir=None if args.checkpoints is None else Path(args.checkpoints) / run.name,
        bundle_root=None,
        valid_users=args.valid_users,
        ns=(20, 50, 100),
    )
    summary = outcome.summary()
    summary["plan"] = {
        "protocol": run.protocol,
        "model": run.model,
        "variant": run.name.split("-lr")[0].split("-", 1)[1],
        "lr": run.lr,
        "p": run.p,
        "routing_detach": run.detach,
        "interest_scoring": run.scoring,
        "seed": run.seed,
    }
    summary["command_options"] = {
        k: str(v) if isinstance(v, Path) else v
        for k, v in vars(args).items()
        if k not in ("handler", "command")
    }
    return summary


def summarize(out: Path) -> dict[str, Any]:
    """Mean ± std over seeds of each (protocol, model, lr); the best lr per model by validation."""
    runs = [json.loads(p.read_text()) for p in sorted((out / "trials").glob("*.json"))]
    groups: dict[tuple[str, str, float], list[dict[str, Any]]] = {}
    for r in runs:
        key = (r["plan"]["protocol"], r["plan"]["variant"], r["plan"]["lr"])
        groups.setdefault(key, []).append(r)
    rows = []
    for (protocol, variant, lr), members in sorted(groups.items()):
        model = members[0]["plan"]["model"]
        tests = [m["test"][model]["metrics"] for m in members]
        popularity = members[0]["test"].get("popularity", {}).get("metrics", {})
        row: dict[str, Any] = {
            "protocol": protocol,
            "model": variant,
            "lr": lr,
            "seeds": sorted(m["plan"]["seed"] for m in members),
            "valid_hit_rate@50": _stats([m["train"]["best_score"] for m in members]),
            "epochs": _stats([m["train"]["best_epoch"] for m in members]),
            "train_seconds": _stats([m["train"]["seconds"] for m in members]),
            "interest_cosine": _stats(
                [
                    m["test"][model]["interest_cosine"]
                    for m in members
                    if m["test"][model]["interest_cosine"] is not None
                ]
            ),
            "popularity": {k: popularity.get(k) for k in METRICS},
        }
        for metric in METRICS:
            row[metric] = _stats([t[metric] for t in tests])
        rows.append(row)
    best: dict[str, dict[str, float]] = {}
    for row in rows:
        slot = best.setdefault(row["protocol"], {})
        current = next(
            (
                r
                for r in rows
                if r["protocol"] == row["protocol"]
                and r["model"] == row["model"]
                and r["lr"] == slot.get(row["model"])
            ),
            None,
        )
        if (
            current is None
            or row["valid_hit_rate@50"]["mean"] > current["valid_hit_rate@50"]["mean"]
        ):
            slot[row["model"]] = row["lr"]
    summary = {"rows": rows, "best_lr_by_validation": best}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def markdown(summary: dict[str, Any]) -> str:
    lines = [
        "| protocol | model | lr | seeds | valid HR@50 | test HR@50 | test Recall@50 | "
        "test NDCG@50 | interest cos | best epoch | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in summary["rows"]:
        chosen = summary["best_lr_by_validation"].get(row["protocol"], {}).get(row["model"])
        mark = " **(chosen)**" if chosen == row["lr"] else ""
        lines.append(
            f"| {row['protocol']} | {row['model']}{mark} | {row['lr']:g} | "
            f"{','.join(map(str, row['seeds']))} | {_fmt(row['valid_hit_rate@50'])} | "
            f"{_fmt(row['hit_rate@50'])} | {_fmt(row['recall@50'])} | {_fmt(row['ndcg@50'])} | "
            f"{_fmt(row['interest_cosine'], 3)} | {_fmt(row['epochs'], 1)} | "
            f"{_fmt(row['train_seconds'], 0)} |"
        )
    return "\n".join(lines)


SEED_METRICS = (
    "recall@50",
    "recall@20",
    "hit_rate@50",
    "hit_rate@20",
    "ndcg@50",
    "ndcg@20",
)
TIME_TARGET_S = 600.0  # training to the best validation epoch, --threads 1
# The split protocol names a result file may end with (before ``-seed<N>``).
PROTOCOL_SUFFIXES = {"comirec": "comirec", "leave-last-out": "leave_last_out"}
DEFAULT_VALID_METRIC = "hit_rate@50"  # what a result that records no selection metric chose on


def seed_group(filename: str) -> tuple[str, str]:
    """``(data, model)`` of a ``mindstream train --results`` file name
    ``<data>-<model>[-<protocol>][-fold<N>][-seed<N>].json``; ``<data>`` is ``lastfm`` or
    ``ml-latest-small`` style (the model part never contains the data set's name); a
    protocol suffix (``-comirec``, ``-leave-last-out``) is not part of the model. A
    ``-fold<N>`` suffix (a fold of the ComiRec user split, ``--split-fold``) stays in the model
    as `` fold<N>``: other folds test other users, so their runs are not seeds of one row."""
    stem, _ = _strip_number(filename.removesuffix(".json"), "-seed")
    stem, fold = _strip_number(stem, "-fold")
    for suffix in PROTOCOL_SUFFIXES:
        stem = stem.removesuffix("-" + suffix)
    label = "" if fold is None else f" fold{fold}"
    for data in ("ml-latest-small", "amazon-beauty", "lastfm", "taobao"):
        if stem.startswith(data + "-"):
            return data, stem[len(data) + 1 :] + label
    data, _, model = stem.partition("-")
    return data, model + label


def _strip_number(stem: str, marker: str) -> tuple[str, int | None]:
    """``stem`` without a trailing ``<marker><N>``, and N (None when there is none)."""
    head, sep, number = stem.rpartition(marker)
    if sep and number.isdigit():
        return head, int(number)
    return stem, None


def run_protocol(filename: str, run: dict[str, Any]) -> str:
    """The split protocol a result ran under (from the result itself); a file name that
    names another protocol is refused, so a misnamed file cannot join the wrong group."""
    protocol = str(run.get("protocol", "leave_last_out"))
    stem, _ = _strip_number(filename.removesuffix(".json"), "-seed")
    stem, _ = _strip_number(stem, "-fold")
    for suffix, named in PROTOCOL_SUFFIXES.items():
        if stem.endswith("-" + suffix) and named != protocol:
            raise ValueError(f"{filename} is named {named} but ran protocol {protocol}")
    return protocol


def seed_summary(runs: Sequence[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Mean ± std over seeds per (data, protocol, model) of ``(file name, train --results
    JSON)`` pairs: the validation score the run chose its epoch on, test metrics, interest
    cosine, K', best epoch, seconds to the end of the best validation epoch (and whether every
    seed met :data:`TIME_TARGET_S`), samples/s. Runs of different protocols never share a
    row, nor runs that chose on different validation metrics."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for filename, run in runs:
        data, model = seed_group(filename)
        groups.setdefault((data, run_protocol(filename, run), model), []).append(run)
    rows = []
    for (data, protocol, model), members in sorted(groups.items()):
        tests = [_tower_result(m) for m in members]
        to_best = [
            m["train"]["history"][m["train"]["best_epoch"] - 1]["elapsed_s"] for m in members
        ]
        chosen_on = {m.get("validation", {}).get("metric", DEFAULT_VALID_METRIC) for m in members}
        if len(chosen_on) != 1:
            raise ValueError(
                f"{data} {protocol} {model}: seeds chose on different validation metrics "
                f"{sorted(chosen_on)}"
            )
        row: dict[str, Any] = {
            "data": data,
            "protocol": protocol,
            "model": model,
            "kind": members[0]["model"]["kind"],
            "k": members[0]["model"]["k"],
            "seeds": sorted(m["model"]["seed"] for m in members),
            "valid_metric": chosen_on.pop(),
            "valid_score": _stats([m["train"]["best_score"] for m in members]),
            "best_epoch": _stats([m["train"]["best_epoch"] for m in members]),
            "seconds_to_best_epoch": _stats(to_best),
            "within_time_target": all(t <= TIME_TARGET_S for t in to_best),
            "samples_per_second": _stats([m["train"]["samples_per_second"] for m in members]),
            "interest_cosine": _stats(
                [t["interest_cosine"] for t in tests if t["interest_cosine"] is not None]
            ),
            "mean_active_interests": _stats([t["mean_active_interests"] for t in tests]),
        }
        for metric in SEED_METRICS:
            row[metric] = _stats([t["metrics"][metric] for t in tests])
        rows.append(row)
    return rows


def _tower_result(run: dict[str, Any]) -> dict[str, Any]:
    towers = [v for k, v in run["test"].items() if k != "popularity"]
    if len(towers) != 1:
        raise ValueError(f"expected one trained model in the test results, got {list(run['test'])}")
    return dict(towers[0])


VALID_LABELS = {"hit_rate@50": "HR@50", "recall@50": "Recall@50"}


def seed_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """One table per protocol (their metrics differ: several targets per user on ComiRec)."""
    out: list[str] = []
    for protocol in sorted({r["protocol"] for r in rows}):
        out += [
            f"protocol: {protocol}",
            "",
            "| data | model | n | valid (metric) | test Recall@50 | test Recall@20 | "
            "test HR@50 | test HR@20 | test NDCG@50 | test NDCG@20 | interest cos | K' | "
            "best epoch | s to best epoch | samples/s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in (r for r in rows if r["protocol"] == protocol):
            label = VALID_LABELS.get(r["valid_metric"], r["valid_metric"])
            out.append(
                f"| {r['data']} | {r['model']} | {len(r['seeds'])} | "
                f"{_fmt(r['valid_score'])} ({label}) | {_fmt(r['recall@50'])} | "
                f"{_fmt(r['recall@20'])} | {_fmt(r['hit_rate@50'])} | {_fmt(r['hit_rate@20'])} | "
                f"{_fmt(r['ndcg@50'])} | {_fmt(r['ndcg@20'])} | {_fmt(r['interest_cosine'], 2)} | "
                f"{_fmt(r['mean_active_interests'], 2)} | {_fmt(r['best_epoch'], 1)} | "
                f"{_fmt(r['seconds_to_best_epoch'], 0)}"
                f"{'' if r['within_time_target'] else ' (> 600)'} "
                f"| {_fmt(r['samples_per_second'], 0)} |"
            )
        out.append("")
    return "\n".join(out).rstrip("\n")


LENGTH_BUCKETS = ((1, 3), (4, 7), (8, 15), (16, 10**9))  # K' = 1, 2, 3, 4 with K = 4


def by_history_length(
    checkpoints: dict[str, Path], data: str, fmt: str, protocol: str, n: int = 50
) -> dict[str, Any]:
    """Test HitRate@n and Recall@n of each checkpoint per history-length bucket (the buckets
    where MIND's dynamic K gives 1, 2, 3 and 4 interests)."""
    import numpy as np

    from model_export.checkpoint import load_checkpoint
    from model_export.metrics import relevance
    from model_export.retrieval import retrieve
    from model_export.workflow import load_data, make_split, tower_retrieval_model

    spec = _data_spec(data, fmt, protocol)
    interactions, _ = load_data(spec)
    parts = make_split(interactions, spec)
    lengths = np.array([min(len(h), 50) for h in parts.test.histories])
    out: dict[str, Any] = {"protocol": protocol, "n": n, "buckets": {}}
    for lo, hi in LENGTH_BUCKETS:
        label = f"{lo}-{hi}" if hi < 10**9 else f">={lo}"
        out["buckets"][label] = {"users": int(((lengths >= lo) & (lengths <= hi)).sum())}
    for name, path in checkpoints.items():
        model = tower_retrieval_model(load_checkpoint(path).tower, name)
        found = retrieve(
            model.encoder,
            model.item_embeddings,
            parts.test.histories,
            max_len=model.max_len,
            n=n,
        )
        rel, n_targets = relevance(found.items, parts.test.targets)
        hits = rel.sum(axis=1)
        for lo, hi in LENGTH_BUCKETS:
            label = f"{lo}-{hi}" if hi < 10**9 else f">={lo}"
            chosen = (lengths >= lo) & (lengths <= hi)
            out["buckets"][label][name] = {
                f"hit_rate@{n}": float((hits[chosen] > 0).mean()) if chosen.any() else None,
                f"recall@{n}": float((hits[chosen] / n_targets[chosen]).mean())
                if chosen.any()
                else None,
            }
    return out


def routing_diagnostics(
    checkpoint: Path, data: str, fmt: str, protocol: str, min_len: int = 16, users: int = 2000
) -> dict[str, float]:
    """How much B2I routing moves away from its fixed random initial logits, for test users
    with at least ``min_len`` behaviours: the share of behaviours whose top capsule changed,
    the mean largest routing weight, and capsule / interest cosines."""
    import torch

    from model_export.checkpoint import load_checkpoint
    from model_export.model import MASKED_LOGIT, interest_count, squash
    from model_export.retrieval import pad_histories
    from model_export.workflow import load_data, make_split

    tower = load_checkpoint(checkpoint).tower
    routing = tower.routing
    if routing is None:
        raise SystemExit("routing diagnostics need a MIND checkpoint")
    spec = _data_spec(data, fmt, protocol)
    interactions, _ = load_data(spec)
    histories = [h for h in make_split(interactions, spec).test.histories if len(h) >= min_len]
    seq = torch.from_numpy(pad_histories(histories[:users], tower.config.max_len))
    with torch.no_grad():
        mask = seq > 0
        u_hat = routing.bilinear(tower.items(seq))
        active = interest_count(mask.sum(-1), routing.k)
        capsule_mask = torch.arange(routing.k)[None] < active[:, None]
        allowed = capsule_mask.unsqueeze(1)
        init = routing.routing_init[seq]
        logits = init
        for it in range(routing.iterations):
            masked = torch.where(allowed, logits, torch.full_like(logits, MASKED_LOGIT))
            weights = torch.softmax(masked, -1) * mask.unsqueeze(-1)
            capsules = squash(weights.transpose(1, 2) @ u_hat)
            if it < routing.iterations - 1:
                logits = logits + u_hat @ capsules.transpose(1, 2)
        first = torch.where(allowed, init, torch.full_like(init, MASKED_LOGIT)).argmax(-1)
        changed = (first != masked.argmax(-1))[mask].float().mean()
        interests, _ = tower(seq)
        pair = (
            capsule_mask.unsqueeze(-1) & capsule_mask.unsqueeze(-2) & ~torch.eye(routing.k).bool()
        )

        def mean_cos(x: torch.Tensor) -> float:
            unit = torch.nn.functional.normalize(x, dim=-1)
            return float((unit @ unit.transpose(1, 2))[pair].mean())

        return {
            "users": len(seq),
            "share_top_capsule_changed_from_init": float(changed),
            "mean_largest_routing_weight": float(weights.max(-1).values[mask].mean()),
            "mean_u_hat_norm": float(u_hat[mask].norm(dim=-1).mean()),
            "capsule_cosine": mean_cos(capsules),
            "interest_cosine": mean_cos(interests),
        }


def _data_spec(data: str, fmt: str, protocol: str) -> Any:
    """``data`` is a path, or ``synthetic`` for the generator's default planted log."""
    from model_export.workflow import SYNTHETIC, DataSpec

    if data == SYNTHETIC:
        return DataSpec(path=None, format=SYNTHETIC, protocol=protocol)
    # One split per protocol (split seed 0): seeds vary the model, not the data.
    return DataSpec(path=str(Path(data).resolve()), format=fmt, protocol=protocol, split_seed=0)


def _stats(values: Sequence[float]) -> dict[str, Any]:
    values = [float(v) for v in values]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
        "values": values,
    }


def _fmt(stats: dict[str, Any], digits: int = 4) -> str:
    if stats.get("mean") is None:
        return "-"
    if stats["n"] > 1:
        return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"
    return f"{stats['mean']:.{digits}f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_export.experiments")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("--data", required=True, help="a data path, or `synthetic`")
    run.add_argument("--format", default="auto")
    run.add_argument("--out", type=Path, required=True)
    run.add_argument("--protocols", default="leave_last_out,comirec")
    run.add_argument("--models", default="mind,youtube_dnn,mind_k1")
    run.add_argument("--lrs", default="0.001,0.003")
    run.add_argument("--seeds", default="0,1,2")
    run.add_argument("--p", type=float, default=1.0, help="label-aware p for MIND (K > 1)")
    run.add_argument(
        "--no-detach", action="store_true", help="MIND: gradients through every routing step"
    )
    run.add_argument(
        "--interest-scoring",
        choices=("label_aware", "max"),
        default="label_aware",
        help="how multi-interest models score label and negatives in training",
    )
    run.add_argument("--dim", type=int, default=64)
    run.add_argument("--max-len", type=int, default=50)
    run.add_argument("--epochs", type=int, default=40)
    run.add_argument("--batch-size", type=int, default=256)
    run.add_argument("--negatives", type=int, default=1000)
    run.add_argument("--patience", type=int, default=3)
    run.add_argument("--valid-users", type=int, default=0)
    run.add_argument("--threads", type=int, default=1)
    run.add_argument("--log-every", type=int, default=500)
    run.add_argument("--checkpoints", default=None, help="save each run's checkpoint here")
    run.add_argument("--shard", default="0/1", help="i/n: run every n-th plan entry from i")
    summary = sub.add_parser("summarize")
    summary.add_argument("--out", type=Path, required=True)
    seeds = sub.add_parser("seeds", help="mean ± std over seeds of `mindstream train` results")
    seeds.add_argument("--trials", type=Path, required=True, help="folder of --results files")
    seeds.add_argument("--json", type=Path, default=None)
    lengths = sub.add_parser("by-length", help="per history-length bucket, from checkpoints")
    lengths.add_argument("--data", required=True)
    lengths.add_argument("--format", default="auto")
    lengths.add_argument("--protocol", default="leave_last_out")
    lengths.add_argument("--checkpoint", action="append", default=[], help="NAME=PATH")
    lengths.add_argument("--json", type=Path, default=None)
    pool = sub.add_parser(
        "pool-folds", help="one paired bootstrap over the folds' users, from diagnose --json files"
    )
    pool.add_argument("reports", nargs="+", type=Path, help="one diagnose --json per fold")
    pool.add_argument("--against", required=True, help="the baseline model's NAME")
    pool.add_argument("--samples", type=int, default=10_000, help="bootstrap resamples")
    pool.add_argument("--json", type=Path, default=None)
    routing = sub.add_parser("routing", help="how far routing moves from its initial logits")
    routing.add_argument("--data", required=True)
    routing.add_argument("--format", default="auto")
    routing.add_argument("--protocol", default="leave_last_out")
    routing.add_argument("--checkpoint", type=Path, required=True)
    routing.add_argument("--min-len", type=int, default=16)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.command == "summarize":
        print(markdown(summarize(args.out)))
        return 0
    if args.command == "seeds":
        files = sorted(args.trials.glob("*.json"))
        rows = seed_summary([(p.name, json.loads(p.read_text())) for p in files])
        print(seed_markdown(rows))
        if args.json is not None:
            args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
        return 0
    if args.command == "pool-folds":
        from model_export.diagnose import pool_folds, pooled_text

        reports = [json.loads(p.read_text(encoding="utf-8")) for p in args.reports]
        try:
            pooled = pool_folds(reports, args.against, samples=args.samples)
        except ValueError as exc:
            parser.error(f"pool-folds: {exc}")
        print(pooled_text(pooled))
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(pooled, indent=2) + "\n", encoding="utf-8")
        return 0
    if args.command == "routing":
        stats = routing_diagnostics(
            args.checkpoint, args.data, args.format, args.protocol, min_len=args.min_len
        )
        print(json.dumps(stats, indent=2))
        return 0
    if args.command == "by-length":
        checkpoints = dict(item.split("=", 1) for item in args.checkpoint)
        report = by_history_length(
            {k: Path(v) for k, v in checkpoints.items()}, args.data, args.format, args.protocol
        )
        text = json.dumps(report, indent=2)
        print(text)
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(text + "\n", encoding="utf-8")
        return 0
    index, count = (int(x) for x in args.shard.split("/"))
    runs = plan(
        args.protocols.split(","),
        args.models.split(","),
        [float(x) for x in args.lrs.split(",")],
        [int(x) for x in args.seeds.split(",")],
        args.p,
        not args.no_detach,
        args.interest_scoring,
    )[index::count]
    (args.out / "trials").mkdir(parents=True, exist_ok=True)
    for entry in runs:
        target = args.out / "trials" / f"{entry.name}.json"
        if target.exists():
            logger.info("skip %s (done)", entry.name)
            continue
        logger.info("run %s", entry.name)
        result = run_one(entry, args)
        target.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
