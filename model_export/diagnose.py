"""Why several interests do or do not retrieve better than one: a diagnosis of trained towers.

For each checkpoint, on the test part of a split (the whole history visible, as at serving):
HitRate@N per history-length bucket; each interest's share of the merged top N and of its hits
(interests ranked by their share, per user); the oracle HitRate of the best single interest
(any one interest's own top N holds a target), which bounds what a better merge could gain;
and, for routing towers, how many behaviours each capsule owns and how far routing moved from
its initial logits; the training curves (train loss, validation HitRate@50) from the
checkpoint. Checkpoints given the same name are seeds of one model: each is reported, and
the paired bootstrap over users (``--bootstrap-against``) compares each user's hit averaged over
a model's seeds, on HitRate and on Recall (several targets per user on the ComiRec protocol).
A checkpoint is only evaluated on the split it was trained with (protocol, split seed and
fold), so its training users never count as test users. ``--json`` keeps each user's hit and
recall, so the folds of one ComiRec user split can be pooled into one paired bootstrap over
(nearly) every user (:func:`pool_folds`; ``python -m model_export.experiments pool-folds``).
The pure parts are free functions over numpy arrays.

``python -m model_export.diagnose --data PATH --checkpoint mind=runs/a --checkpoint k1=runs/b``
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model_export.dataset import primary_category
from model_export.metrics import relevance
from model_export.retrieval import NO_ID

logger = logging.getLogger(__name__)

# Raw history lengths; with K = 4 the log2 rule gives K' = 2, 3 and 4 from 4, 8 and 16 on.
LENGTH_EDGES = (4, 8, 16, 32, 64)


def length_bucket_labels(edges: Sequence[int] = LENGTH_EDGES) -> list[str]:
    """``["<4", "4-7", ..., ">=64"]`` for the bucket edges."""
    labels = [f"<{edges[0]}"]
    labels += [f"{lo}-{hi - 1}" for lo, hi in itertools.pairwise(edges)]
    return [*labels, f">={edges[-1]}"]


def length_buckets(lengths: np.ndarray, edges: Sequence[int] = LENGTH_EDGES) -> np.ndarray:
    """int64 bucket index of each history length (0 = shorter than ``edges[0]``)."""
    return np.searchsorted(np.asarray(edges), np.asarray(lengths), side="right").astype(np.int64)


def hit_rate_by_bucket(
    hits: np.ndarray, buckets: np.ndarray, n_buckets: int
) -> list[dict[str, Any]]:
    """Users and HitRate per bucket (``hits`` bool [U]; ``None`` for an empty bucket)."""
    out = []
    for b in range(n_buckets):
        chosen = buckets == b
        out.append(
            {
                "users": int(chosen.sum()),
                "hit_rate": float(hits[chosen].mean()) if chosen.any() else None,
            }
        )
    return out


def interest_owner(
    interests: np.ndarray, mask: np.ndarray, item_vectors: np.ndarray, items: np.ndarray
) -> np.ndarray:
    """int64 [U, N]: the active interest that scores each listed item best (-1 = empty slot).

    ``interests`` [U, K, d], ``mask`` [U, K], ``item_vectors`` [n_items + 1, d] indexed by
    model index, ``items`` [U, N] model indices (``NO_ID`` or 0 = empty).
    """
    vectors = item_vectors[np.where(items > 0, items, 0)]  # [U, N, d]
    scores = np.einsum("und,ukd->unk", vectors, interests)
    scores = np.where(mask[:, None, :], scores, -np.inf)
    owner = scores.argmax(-1).astype(np.int64)
    return np.where(items > 0, owner, -1)


def shares_by_rank(
    owner: np.ndarray, rel: np.ndarray, active: np.ndarray, k: int
) -> dict[str, list[float]]:
    """Mean share of the merged list and of its hits held by each user's 1st, 2nd, ...
    interest, interests ranked per user by their share of the list; over users with >= 2
    active interests (hit shares over those that have a hit)."""
    several = active >= 2
    counts = np.stack([(owner == j).sum(1) for j in range(k)], axis=1)  # [U, K]
    hit_counts = np.stack([((owner == j) & rel).sum(1) for j in range(k)], axis=1)
    order = np.argsort(-counts, axis=1, kind="stable")
    ranked = np.take_along_axis(counts, order, axis=1).astype(np.float64)
    ranked_hits = np.take_along_axis(hit_counts, order, axis=1).astype(np.float64)
    listed = ranked.sum(1, keepdims=True)
    hit_total = ranked_hits.sum(1, keepdims=True)
    with_hits = several & (hit_total[:, 0] > 0)
    list_share = ranked[several] / np.maximum(listed[several], 1)
    hit_share = ranked_hits[with_hits] / hit_total[with_hits]
    return {
        "list": [float(v) for v in list_share.mean(0)] if several.any() else [],
        "hits": [float(v) for v in hit_share.mean(0)] if with_hits.any() else [],
    }


MERGES = ("best_score", "round_robin", "unit_interest")


def merge_scores(scores: np.ndarray, interests: np.ndarray, merge: str) -> np.ndarray:
    """Per-interest list scores [U, K, N] rewritten for a merge rule before the best-score merge:
    ``best_score`` as they are; ``round_robin`` minus the rank, so the merge takes each
    interest's 1st item, then each one's 2nd, ... (a quota of n / K' each); ``unit_interest``
    divided by the interest's norm, so a long interest vector cannot crowd out the others."""
    if merge == "best_score":
        return scores
    if merge == "round_robin":
        rank = np.arange(scores.shape[-1], dtype=np.float32)
        return np.broadcast_to(-rank, scores.shape).copy()
    if merge == "unit_interest":
        norms = np.linalg.norm(interests, axis=-1, keepdims=True)
        with np.errstate(over="ignore"):  # empty slots hold -FLT_MAX; they become -inf
            return scores / np.maximum(norms, 1e-12)
    raise ValueError(f"merge {merge!r}: expected one of {MERGES}")


def oracle_single_interest(per_interest: np.ndarray, targets: Sequence[np.ndarray]) -> np.ndarray:
    """bool [U]: some single interest's own top-N list (``per_interest`` [U, K, N], ``NO_ID``
    for empty and inactive slots) holds a target."""
    users, k, n = per_interest.shape
    rel, _ = relevance(per_interest.reshape(users, k * n), targets)
    return np.asarray(rel.reshape(users, k, n).any(axis=(1, 2)), dtype=bool)


def capsule_ownership(weights: np.ndarray, seq_mask: np.ndarray, active: np.ndarray) -> list[float]:
    """Mean share of a user's behaviours owned (largest routing weight) by its 1st, 2nd, ...
    capsule, ranked per user by ownership; over users whose K' equals the most interests."""
    k = weights.shape[-1]
    full = active == k
    owner = weights.argmax(-1)  # [U, L]
    counts = np.stack([((owner == j) & seq_mask).sum(1) for j in range(k)], axis=1)
    ranked = -np.sort(-counts, axis=1).astype(np.float64)
    shares = ranked[full] / np.maximum(ranked[full].sum(1, keepdims=True), 1)
    return [float(v) for v in shares.mean(0)] if full.any() else []


def routing_movement(
    initial: np.ndarray, final: np.ndarray, weights: np.ndarray, seq_mask: np.ndarray
) -> dict[str, float]:
    """How far routing moved: share of behaviours whose top capsule differs from the initial
    logits' top capsule, mean absolute logit change and mean largest routing weight."""
    first = initial.argmax(-1)
    last = final.argmax(-1)
    return {
        "top_capsule_changed": float((first != last)[seq_mask].mean()),
        "mean_abs_logit_change": float(np.abs(final - initial)[seq_mask].mean()),
        "mean_initial_abs_logit": float(np.abs(initial)[seq_mask].mean()),
        "mean_largest_weight": float(weights.max(-1)[seq_mask].mean()),
    }


def aggregation_sweep(
    pool_ids: np.ndarray,
    pool_scores: np.ndarray,
    targets: Sequence[np.ndarray],
    categories: np.ndarray,
    n: int,
    lambdas: Sequence[float],
) -> dict[str, dict[str, float]]:
    """HitRate@n and mean category diversity@n of ComiRec's controllable aggregation
    (:func:`recall.merge.controllable_aggregate`) at each λ, from each user's merged candidate
    pool (``pool_ids`` [U, M] model indices, ``NO_ID`` = empty, best score first)."""
    from recall.merge import Candidate, category_diversity, controllable_aggregate

    out: dict[str, dict[str, float]] = {}
    for lam in lambdas:
        lists = np.full((len(pool_ids), n), NO_ID, dtype=np.int64)
        diversity = np.zeros(len(pool_ids))
        for u in range(len(pool_ids)):
            keep = pool_ids[u] != NO_ID
            pool = [
                Candidate(int(row), float(score), 0)
                for row, score in zip(pool_ids[u][keep], pool_scores[u][keep], strict=True)
            ]
            rows = [c.row for c in controllable_aggregate(pool, categories, n, lam)]
            lists[u, : len(rows)] = rows
            diversity[u] = category_diversity(rows, categories)
        rel, _ = relevance(lists, targets)
        out[f"{lam:g}"] = {
            f"hit_rate@{n}": float(rel.any(axis=1).mean()),
            f"diversity@{n}": float(diversity.mean()),
        }
    return out


def diagnose_tower(
    tower: Any,
    histories: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    n: int = 50,
    *,
    categories: np.ndarray | None = None,
    lambdas: Sequence[float] = (),
) -> dict[str, Any]:
    """Every diagnostic above for one torch tower on one evaluation set; with ``categories``
    and ``lambdas`` also the controllable-aggregation sweep."""
    import torch

    from model_export.retrieval import exact_index, merge_by_best_score, pad_histories

    tower.eval()
    max_len = tower.config.max_len
    with torch.no_grad():
        all_items = tower.item_vectors().numpy().astype(np.float32)
    index = exact_index(all_items[1:])
    lengths = np.array([len(h) for h in histories], dtype=np.int64)
    buckets = length_buckets(lengths)
    labels = length_bucket_labels()
    parts: dict[str, list[np.ndarray]] = {
        key: [] for key in ("merged", "per_interest", "owner", "active", "norms", *MERGES)
    }
    parts["pool"], parts["pool_scores"] = [], []
    routing: dict[str, list[np.ndarray]] = {"w": [], "init": [], "final": [], "seq": []}
    for start in range(0, len(histories), 512):
        seq_np = pad_histories(histories[start : start + 512], max_len)
        seq = torch.from_numpy(seq_np)
        with torch.no_grad():
            interests_t, mask_t = tower(seq)
            if tower.routing is not None:
                trace = tower.routing.route(seq, tower.items(seq), seq > 0)
                routing["w"].append(trace.weights.numpy())
                routing["init"].append(trace.initial_logits.numpy())
                routing["final"].append(trace.final_logits.numpy())
                routing["seq"].append(seq_np > 0)
        interests, mask = interests_t.numpy(), mask_t.numpy()
        b, k, d = interests.shape
        dist, found = index.search(np.ascontiguousarray(interests.reshape(b * k, d)), n)
        ids = np.where(found >= 0, found + 1, NO_ID).reshape(b, k, n)
        ids = np.where(mask[:, :, None], ids, NO_ID)
        merged, _ = merge_by_best_score(ids, dist.reshape(b, k, n), n, active=mask)
        for rule in MERGES:
            scores = merge_scores(dist.reshape(b, k, n), interests, rule)
            parts[rule].append(merge_by_best_score(ids, scores, n, active=mask)[0])
        norms = np.linalg.norm(interests, axis=-1)
        parts["norms"].append(-np.sort(-np.where(mask, norms, 0.0), axis=1))
        parts["merged"].append(merged)
        if categories is not None and lambdas:
            pool, pool_scores = merge_by_best_score(ids, dist.reshape(b, k, n), k * n, active=mask)
            parts["pool"].append(pool)
            parts["pool_scores"].append(pool_scores)
        parts["per_interest"].append(ids)
        parts["owner"].append(interest_owner(interests, mask, all_items, merged))
        parts["active"].append(mask.sum(1))
    merged = np.concatenate(parts["merged"])
    owner = np.concatenate(parts["owner"])
    active = np.concatenate(parts["active"])
    rel, n_targets = relevance(merged, targets)
    hits = np.asarray(rel.any(axis=1), dtype=bool)
    recall = rel.sum(axis=1) / np.maximum(n_targets, 1)
    oracle = oracle_single_interest(np.concatenate(parts["per_interest"]), targets)
    k = tower.config.n_interests
    out: dict[str, Any] = {
        "_hits": hits,  # per user, for the paired bootstrap; not written to JSON
        "_recall": recall,  # the same for Recall@N
        "users": len(histories),
        f"hit_rate@{n}": float(hits.mean()),
        f"recall@{n}": float(recall.mean()),
        f"oracle_single_interest_hit_rate@{n}": float(oracle.mean()),
        "mean_active_interests": float(active.mean()),
        "by_length": dict(zip(labels, hit_rate_by_bucket(hits, buckets, len(labels)), strict=True)),
        "oracle_by_length": dict(
            zip(labels, hit_rate_by_bucket(oracle, buckets, len(labels)), strict=True)
        ),
        "shares_by_interest_rank": shares_by_rank(owner, rel, active, k),
        f"hit_rate@{n}_by_merge": {
            rule: float(relevance(np.concatenate(parts[rule]), targets)[0].any(1).mean())
            for rule in MERGES
        },
        "interest_norms_sorted": [
            float(v) for v in np.concatenate(parts["norms"])[active == k].mean(0)
        ]
        if (active == k).any()
        else [],
    }
    if parts["pool"] and categories is not None:
        out["aggregation"] = aggregation_sweep(
            np.concatenate(parts["pool"]),
            np.concatenate(parts["pool_scores"]),
            targets,
            categories,
            n,
            lambdas,
        )
    if routing["w"]:
        width = max_len
        w, init, final, seq_mask = (
            np.concatenate([_pad_to(x, width) for x in routing[key]])
            for key in ("w", "init", "final", "seq")
        )
        out["capsule_ownership"] = capsule_ownership(w, seq_mask, active)
        out["routing"] = routing_movement(init, final, w, seq_mask)
    return out


def mean_hits_by_name(named_hits: Sequence[tuple[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per name, each user's hit averaged over the checkpoints of that name (the seeds of one
    model): float [U] in [0, 1], in the order the names first appear."""
    groups: dict[str, list[np.ndarray]] = {}
    for name, hits in named_hits:
        groups.setdefault(name, []).append(np.asarray(hits, dtype=np.float64))
    out = {}
    for name, runs in groups.items():
        if len({r.shape for r in runs}) != 1:
            raise ValueError(f"{name}: checkpoints evaluated on different users")
        out[name] = np.mean(runs, axis=0)
    return out


def paired_bootstrap(
    hits: np.ndarray, baseline: np.ndarray, *, samples: int = 10_000, seed: int = 0
) -> dict[str, float]:
    """Paired bootstrap over users of the difference ``hits - baseline`` ([U] each, the same
    users; a per-user hit (bool) or recall, or its mean over seeds): the observed difference, a 95%
    interval, and the one-sided p-value (share of resamples where the difference is <= 0)."""
    a = np.asarray(hits, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError(f"hits {a.shape} and baseline {b.shape} must be the same users")
    diff = a - b
    rng = np.random.default_rng(seed)
    means = np.array([diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(samples)])
    return {
        "difference": float(diff.mean()),
        "relative": float(diff.mean() / b.mean()) if b.mean() > 0 else float("nan"),
        "ci95_low": float(np.quantile(means, 0.025)),
        "ci95_high": float(np.quantile(means, 0.975)),
        "p_value": float((means <= 0).mean()),
    }


def pool_folds(
    reports: Sequence[dict[str, Any]], against: str, *, samples: int = 10_000, seed: int = 0
) -> dict[str, Any]:
    """Pool diagnose reports (``--json`` with ``per_user``) of the folds of one ComiRec user
    split: each user is an evaluated user in exactly one fold, so the union of the folds' users
    is one evaluation set, and :func:`paired_bootstrap` runs over it against the model named
    ``against``. Returns the pooled HitRate/Recall of each model, the bootstrap of each other
    model on both, and one row per fold (its users, each model's metrics and best validation
    score). Reports of different data, protocol, part, cut-off or split seed, a fold given
    twice, a user in two folds or a model missing from a fold are refused."""
    if not reports:
        raise ValueError("no fold reports to pool")
    shared = ("data", "protocol", "part", "n", "split_seed")
    first = reports[0]
    for report in reports:
        if "per_user" not in report:
            raise ValueError(f"fold {report.get('split_fold')}: the report has no per-user results")
        differ = [key for key in shared if report.get(key) != first.get(key)]
        if differ:
            raise ValueError(f"fold reports differ in {differ}: they are not folds of one split")
    folds = [int(r.get("split_fold", 0)) for r in reports]
    if len(set(folds)) != len(folds):
        raise ValueError(f"a fold is given twice: {sorted(folds)}")
    names = list(first["per_user"]["hits"])
    if against not in names:
        raise ValueError(f"against {against!r}: not a model of the reports ({names})")
    seen: set[int] = set()
    for fold, report in zip(folds, reports, strict=True):
        if list(report["per_user"]["hits"]) != names:
            raise ValueError(
                f"fold {fold} has models {list(report['per_user']['hits'])}, not {names}"
            )
        users = set(report["per_user"]["users"])
        if users & seen:
            raise ValueError(f"fold {fold} shares {len(users & seen)} users with another fold")
        seen |= users
    pooled = {
        key: {
            name: np.concatenate(
                [np.asarray(r["per_user"][key][name], dtype=np.float64) for r in reports]
            )
            for name in names
        }
        for key in ("hits", "recall")
    }
    n = first["n"]
    out: dict[str, Any] = {
        key: first.get(key) for key in ("data", "protocol", "part", "n", "split_seed")
    }
    out.update({"folds": sorted(folds), "users": len(seen), "against": against, "models": {}})
    for name in names:
        entry: dict[str, Any] = {
            f"hit_rate@{n}": float(pooled["hits"][name].mean()),
            f"recall@{n}": float(pooled["recall"][name].mean()),
        }
        if name != against:
            entry["paired_bootstrap"] = paired_bootstrap(
                pooled["hits"][name], pooled["hits"][against], samples=samples, seed=seed
            )
            entry[f"paired_bootstrap_recall@{n}"] = paired_bootstrap(
                pooled["recall"][name], pooled["recall"][against], samples=samples, seed=seed
            )
        out["models"][name] = entry
    rows = []
    for fold, report in sorted(zip(folds, reports, strict=True), key=lambda pair: pair[0]):
        row: dict[str, Any] = {"fold": fold, "users": len(report["per_user"]["users"])}
        for name in names:
            # Checkpoints sharing a name are labelled NAME/1, NAME/2, ... in the report.
            valid = [
                m.get("valid_best")
                for label, m in report.get("models", {}).items()
                if label == name or label.startswith(name + "/")
            ]
            known = [float(v) for v in valid if v is not None]
            row[name] = {
                f"hit_rate@{n}": float(np.mean(report["per_user"]["hits"][name])),
                f"recall@{n}": float(np.mean(report["per_user"]["recall"][name])),
                "valid_best": float(np.mean(known)) if known else None,
            }
        rows.append(row)
    out["by_fold"] = rows
    for name in names:
        valid = [r[name]["valid_best"] for r in rows if r[name]["valid_best"] is not None]
        out["models"][name]["valid_best_mean_over_folds"] = float(np.mean(valid)) if valid else None
    return out


def pooled_text(pooled: dict[str, Any]) -> str:
    """A Markdown summary of :func:`pool_folds`: one row per fold, the pooled row, and each
    model's paired bootstrap against the baseline."""
    n = pooled["n"]
    names = list(pooled["models"])
    head = " | ".join(f"{name} valid R@{n} | {name} R@{n} | {name} HR@{n}" for name in names)
    lines = [
        f"{pooled['data']} {pooled['protocol']} {pooled['part']} part, split seed "
        f"{pooled['split_seed']}, folds {pooled['folds']}: {pooled['users']} users",
        "",
        f"| fold | users | {head} |",
        "|---|---|" + "---|" * (3 * len(names)),
    ]

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    for row in pooled["by_fold"]:
        cells = " | ".join(
            f"{cell(row[name]['valid_best'])} | {cell(row[name][f'recall@{n}'])} | "
            f"{cell(row[name][f'hit_rate@{n}'])}"
            for name in names
        )
        lines.append(f"| {row['fold']} | {row['users']} | {cells} |")
    cells = " | ".join(
        f"{cell(pooled['models'][name]['valid_best_mean_over_folds'])} | "
        f"{cell(pooled['models'][name][f'recall@{n}'])} | "
        f"{cell(pooled['models'][name][f'hit_rate@{n}'])}"
        for name in names
    )
    lines += [f"| pooled | {pooled['users']} | {cells} |", ""]
    for name in names:
        entry = pooled["models"][name]
        for metric, key in (
            (f"Recall@{n}", f"paired_bootstrap_recall@{n}"),
            (f"HR@{n}", "paired_bootstrap"),
        ):
            if key in entry:
                boot = entry[key]
                lines.append(
                    f"{name} vs {pooled['against']} {metric}: {boot['difference']:+.4f} "
                    f"({boot['relative']:+.1%}), 95% CI [{boot['ci95_low']:+.4f}, "
                    f"{boot['ci95_high']:+.4f}], one-sided p = {boot['p_value']:.4f}"
                )
    return "\n".join(lines)


def training_curves(info: dict[str, Any]) -> list[dict[str, Any]]:
    """(epoch, train loss, validation HitRate@50) rows from a checkpoint's training info."""
    history = info.get("result", {}).get("history", [])
    return [
        {"epoch": r.get("epoch"), "train_loss": r.get("train_loss"), "valid": r.get("valid")}
        for r in history
    ]


def to_text(report: dict[str, Any], n: int = 50) -> str:
    """A readable summary of :func:`diagnose_tower` results, one block per model."""
    lines = []
    for name, r in report["models"].items():
        lines.append(
            f"{name}: HR@{n} {r[f'hit_rate@{n}']:.4f}  Recall@{n} {r[f'recall@{n}']:.4f}  "
            f"oracle single interest "
            f"{r[f'oracle_single_interest_hit_rate@{n}']:.4f}  K' {r['mean_active_interests']:.2f}"
        )
        lines.append(
            "  by length: "
            + "  ".join(
                f"{label} ({b['users']}) {b['hit_rate']:.3f}"
                for label, b in r["by_length"].items()
                if b["hit_rate"] is not None
            )
        )
        lines.append(
            "  merges: "
            + "  ".join(f"{rule} {v:.4f}" for rule, v in r[f"hit_rate@{n}_by_merge"].items())
            + "  interest norms (K'=K users, sorted): "
            + _row(r["interest_norms_sorted"])
        )
        shares = r["shares_by_interest_rank"]
        if shares["list"]:
            lines.append("  list share by interest rank: " + _row(shares["list"]))
            lines.append("  hit share by interest rank:  " + _row(shares["hits"]))
        if "routing" in r:
            lines.append("  behaviours owned per capsule: " + _row(r["capsule_ownership"]))
            lines.append(
                "  routing: " + json.dumps({k: round(v, 3) for k, v in r["routing"].items()})
            )
        if "aggregation" in r:
            lines.append(
                "  controllable aggregation (λ: HR / diversity): "
                + "  ".join(
                    f"{lam}: {v[f'hit_rate@{n}']:.4f} / {v[f'diversity@{n}']:.3f}"
                    for lam, v in r["aggregation"].items()
                )
            )
        curve = r.get("curves", [])
        if curve:
            lines.append(
                "  epochs (loss / valid): "
                + "  ".join(
                    f"{c['epoch']}: {c['train_loss'] if c['train_loss'] is not None else '-'}"
                    f" / {c['valid']:.4f}"
                    for c in curve
                    if c.get("valid") is not None
                )
            )
    for name, m in report.get("mean_over_checkpoints", {}).items():
        lines.append(
            f"{name} over {m['checkpoints']} checkpoint(s): HR@{n} {m[f'hit_rate@{n}']:.4f}  "
            f"Recall@{n} {m[f'recall@{n}']:.4f}"
        )
        for metric, key in (
            (f"HR@{n}", "paired_bootstrap"),
            (f"Recall@{n}", f"paired_bootstrap_recall@{n}"),
        ):
            if key in m:
                boot = m[key]
                lines.append(
                    f"  {metric} vs {report['bootstrap_against']}: {boot['difference']:+.4f} "
                    f"({boot['relative']:+.1%}), 95% CI [{boot['ci95_low']:+.4f}, "
                    f"{boot['ci95_high']:+.4f}], one-sided p {boot['p_value']:.4f}"
                )
    return "\n".join(lines)


def _row(values: Sequence[float]) -> str:
    return " ".join(f"{v:.3f}" for v in values)


def _pad_to(x: np.ndarray, width: int) -> np.ndarray:
    if x.shape[1] == width:
        return x
    pad = [(0, 0)] * x.ndim
    pad[1] = (0, width - x.shape[1])
    return np.pad(x, pad)


def main(argv: Sequence[str] | None = None) -> int:
    from model_export.checkpoint import load_checkpoint
    from model_export.data.splits import LEAVE_LAST_OUT, PROTOCOLS
    from model_export.exceptions import ModelExportError
    from model_export.workflow import DataSpec, load_data, make_split

    parser = argparse.ArgumentParser(prog="python -m model_export.diagnose", description=__doc__)
    parser.add_argument("--data", required=True, help="the data set the checkpoints learned")
    parser.add_argument("--format", default="auto")
    parser.add_argument("--protocol", choices=PROTOCOLS, default=LEAVE_LAST_OUT)
    parser.add_argument("--split-seed", type=int, default=0, help="ComiRec user-shuffle seed")
    parser.add_argument(
        "--split-fold", type=int, default=0, help="ComiRec fold (the one the checkpoints used)"
    )
    parser.add_argument("--checkpoint", action="append", required=True, help="NAME=PATH")
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--part", choices=("test", "valid"), default="test")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    parser.add_argument(
        "--bootstrap-against",
        default=None,
        help="NAME of a --checkpoint: paired bootstrap over users of each other model's HR "
        "(checkpoints given the same NAME are seeds of one model: each user's hit is averaged)",
    )
    parser.add_argument(
        "--lambdas",
        default="",
        help="controllable-aggregation factors to sweep, e.g. 0,0.5,0.9 (needs side features)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    pairs = []
    for item in args.checkpoint:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            parser.error(f"--checkpoint {item!r}: expected NAME=PATH")
        pairs.append((name, Path(path)))
    try:
        lambdas = [float(x) for x in args.lambdas.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--lambdas {args.lambdas!r}: expected numbers separated by commas")
    outside = [lam for lam in lambdas if not 0.0 <= lam <= 1.0]  # NaN is outside too
    if outside:
        parser.error(f"--lambdas: the diversity factor λ must be in [0, 1]; got {outside}")
    if args.bootstrap_against is not None and args.bootstrap_against not in dict(pairs):
        parser.error(f"--bootstrap-against {args.bootstrap_against}: no such --checkpoint")
    try:
        spec = DataSpec(
            path=str(Path(args.data).resolve()),
            format=args.format,
            protocol=args.protocol,
            split_seed=args.split_seed,
            split_fold=args.split_fold,
        )
    except ModelExportError as exc:
        parser.error(f"--split-fold: {exc}")
    data, _ = load_data(spec)
    parts = make_split(data, spec)
    eval_set = parts.test if args.part == "test" else parts.valid
    report: dict[str, Any] = {
        "data": data.name,
        "protocol": args.protocol,
        "split_seed": spec.split_seed,
        "split_fold": spec.split_fold,
        "part": args.part,
        "n": args.n,
        "models": {},
    }
    counts = {name: sum(n == name for n, _ in pairs) for name, _ in pairs}
    seen: dict[str, int] = {}
    labels = []
    for name, _ in pairs:
        seen[name] = seen.get(name, 0) + 1
        labels.append(name if counts[name] == 1 else f"{name}/{seen[name]}")
    for (_, path), label in zip(pairs, labels, strict=True):
        restored = load_checkpoint(path)
        if list(restored.item_ids) != list(data.item_ids):
            parser.error(f"{path} was not trained on {args.data}")
        trained_on = restored.info.get("data", {})
        if "protocol" in trained_on and (
            trained_on["protocol"] != spec.protocol
            or (
                spec.protocol != LEAVE_LAST_OUT
                and (
                    trained_on.get("split_seed") != spec.split_seed
                    or trained_on.get("split_fold", 0) != spec.split_fold
                )
            )
        ):
            parser.error(
                f"{path} was trained on the {trained_on['protocol']} split (split seed "
                f"{trained_on.get('split_seed')}, fold {trained_on.get('split_fold', 0)}); "
                f"diagnose it with --protocol {trained_on['protocol']} --split-seed "
                f"{trained_on.get('split_seed')} --split-fold {trained_on.get('split_fold', 0)}: "
                "on another split its training users would be scored as test users"
            )
        result = diagnose_tower(
            restored.tower,
            eval_set.histories,
            eval_set.targets,
            args.n,
            categories=primary_category(data.item_features),
            lambdas=lambdas,
        )
        result["curves"] = training_curves(restored.info)
        result["valid_best"] = restored.info.get("result", {}).get("best_score")
        report["models"][label] = result
    per_user = {
        key: mean_hits_by_name(
            [
                (name, report["models"][label].pop(f"_{key}"))
                for (name, _), label in zip(pairs, labels, strict=True)
            ]
        )
        for key in ("hits", "recall")
    }
    # Per user (the data set's user index), so folds of one split can be pooled later.
    report["per_user"] = {
        "users": [int(u) for u in eval_set.users],
        **{
            key: {name: values.tolist() for name, values in per_user[key].items()}
            for key in ("hits", "recall")
        },
    }
    report["mean_over_checkpoints"] = {
        name: {
            "checkpoints": counts[name],
            f"hit_rate@{args.n}": float(per_user["hits"][name].mean()),
            f"recall@{args.n}": float(per_user["recall"][name].mean()),
        }
        for name in per_user["hits"]
    }
    if args.bootstrap_against is not None:
        report["bootstrap_against"] = args.bootstrap_against
        for name, entry in report["mean_over_checkpoints"].items():
            if name == args.bootstrap_against:
                continue
            # HitRate as "paired_bootstrap"; Recall@N (the ComiRec protocol's metric) beside it.
            entry["paired_bootstrap"] = paired_bootstrap(
                per_user["hits"][name], per_user["hits"][args.bootstrap_against]
            )
            entry[f"paired_bootstrap_recall@{args.n}"] = paired_bootstrap(
                per_user["recall"][name], per_user["recall"][args.bootstrap_against]
            )
    print(to_text(report, args.n))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
