"""Offline evaluation: full-corpus multi-interest retrieval of a split's held-out items, with
HitRate/Recall/NDCG at N, the HitRate@N curve, an interest-collapse diagnostic and a
most-popular baseline; results as a JSON-ready dict, a text table and a PNG plot.

Each active interest retrieves its top N by exact inner product; the lists merge by best score
(:func:`model_export.retrieval.merge_by_best_score`) and the merged top N is scored against the
targets. History items are not excluded by default, as in ComiRec (``exclude_history=True``
removes every item of the user's whole history before the cut).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model_export.data.splits import EvalSet, Split
from model_export.dataset import Interactions
from model_export.metrics import hit_rate_curve, ranking_metrics, relevance
from model_export.retrieval import NO_ID, UserEncoder, merge_by_best_score, retrieve

logger = logging.getLogger(__name__)

DEFAULT_NS = (20, 50, 100)
CURVE_MAX_N = 200  # the HitRate@N curve (and the plot) covers N = 1..CURVE_MAX_N
POPULARITY = "popularity"


@dataclass(frozen=True)
class RetrievalModel:
    """A model under evaluation: its user encoder, item table ``[n_items, d]`` (row i-1 =
    model index i) and the longest history its encoder takes.
    """

    name: str
    encoder: UserEncoder
    item_embeddings: np.ndarray
    max_len: int


@dataclass(frozen=True)
class ModelEvaluation:
    """One model's results on one evaluation set."""

    name: str
    n_users: int
    metrics: dict[str, float]
    hit_rate_curve: list[float]  # entry N-1 is HitRate@N
    seconds: float
    # Mean over users with >= 2 active interests of their interests' mean pairwise cosine.
    interest_cosine: float | None = None
    users_with_several_interests: int = 0
    mean_active_interests: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n_users": self.n_users,
            "metrics": dict(self.metrics),
            "hit_rate_curve": list(self.hit_rate_curve),
            "seconds": round(self.seconds, 3),
            "interest_cosine": self.interest_cosine,
            "users_with_several_interests": self.users_with_several_interests,
            "mean_active_interests": self.mean_active_interests,
        }


@dataclass(frozen=True)
class EvaluationReport:
    """Every model's results on one split part, plus what was evaluated and how."""

    dataset: str
    protocol: str
    part: str
    ns: tuple[int, ...]
    exclude_history: bool
    models: list[ModelEvaluation] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "protocol": self.protocol,
            "part": self.part,
            "ns": list(self.ns),
            "exclude_history": self.exclude_history,
            "models": {m.name: m.to_dict() for m in self.models},
        }

    def to_text(self) -> str:
        """A fixed-width table: one row per model, HitRate/Recall/NDCG at each N."""
        users = self.models[0].n_users if self.models else 0
        title = (
            f"{self.dataset} · {self.protocol} · {self.part} · {users} users · history "
            f"{'excluded' if self.exclude_history else 'not excluded'}"
        )
        heads = [f"{m}@{n}" for n in self.ns for m in ("HR", "Recall", "NDCG")]
        width = max([5, *(len(m.name) for m in self.models)])
        lines = [
            title,
            f"{'model':<{width}}  " + "  ".join(f"{h:>9}" for h in heads) + "    cos     K'",
        ]
        for m in self.models:
            values = [
                m.metrics[f"{key}@{n}"] for n in self.ns for key in ("hit_rate", "recall", "ndcg")
            ]
            cos = "     -" if m.interest_cosine is None else f"{m.interest_cosine:6.3f}"
            k = "     -" if m.mean_active_interests is None else f"{m.mean_active_interests:6.2f}"
            lines.append(
                f"{m.name:<{width}}  " + "  ".join(f"{v:9.4f}" for v in values) + f"  {cos} {k}"
            )
        return "\n".join(lines)


def evaluate_model(
    model: RetrievalModel,
    eval_set: EvalSet,
    *,
    ns: Sequence[int] = DEFAULT_NS,
    curve_max_n: int = CURVE_MAX_N,
    batch_size: int = 1024,
    exclude_history: bool = False,
) -> ModelEvaluation:
    """Retrieve for every user of ``eval_set`` and score the merged lists against its targets."""
    began = time.perf_counter()
    depth = max(max(ns), curve_max_n)
    found = retrieve(
        model.encoder,
        model.item_embeddings,
        eval_set.histories,
        max_len=model.max_len,
        n=depth,
        batch_size=batch_size,
        exclude=eval_set.histories if exclude_history else None,
    )
    several = ~np.isnan(found.interest_cosine)
    evaluation = _score(
        model.name,
        found.items,
        eval_set,
        ns,
        curve_max_n,
        began,
        interest_cosine=float(found.interest_cosine[several].mean()) if several.any() else None,
        users_with_several_interests=int(several.sum()),
        mean_active_interests=float(found.active_interests.mean()) if len(eval_set) else None,
    )
    logger.info(
        "evaluated model=%s users=%d seconds=%.2f %s",
        model.name,
        evaluation.n_users,
        evaluation.seconds,
        " ".join(f"{k}={v:.4f}" for k, v in evaluation.metrics.items()),
    )
    return evaluation


def popularity_ranking(train: Interactions) -> np.ndarray:
    """Every model index, most behaviours in ``train`` first (ties: lower index first)."""
    counts = np.bincount(
        np.concatenate([*train.sequences, np.zeros(0, dtype=np.int64)]),
        minlength=train.n_items + 1,
    )[1:]
    return np.lexsort((np.arange(train.n_items), -counts)).astype(np.int64) + 1


def evaluate_popularity(
    train: Interactions,
    eval_set: EvalSet,
    *,
    ns: Sequence[int] = DEFAULT_NS,
    curve_max_n: int = CURVE_MAX_N,
    batch_size: int = 1024,
    exclude_history: bool = False,
) -> ModelEvaluation:
    """The baseline that recommends the most frequent training items to everyone."""
    began = time.perf_counter()
    depth = max(max(ns), curve_max_n)
    ranking = popularity_ranking(train)
    items = np.zeros((len(eval_set), depth), dtype=np.int64)
    for start in range(0, len(eval_set), batch_size):
        stop = min(start + batch_size, len(eval_set))
        exclude = eval_set.histories[start:stop] if exclude_history else None
        extra = max((len(np.unique(h)) for h in exclude), default=0) if exclude else 0
        head = ranking[: depth + extra]
        # The same ranked list for everyone, merged through the one merge so exclusion matches.
        shape = (stop - start, 1, len(head))
        scores = np.broadcast_to(-np.arange(len(head), dtype=np.float32), shape)
        merged, _ = merge_by_best_score(
            np.broadcast_to(head, shape), scores, depth, exclude=exclude
        )
        items[start:stop] = np.where(merged == NO_ID, 0, merged)
    return _score(POPULARITY, items, eval_set, ns, curve_max_n, began)


def evaluate_split(
    split: Split,
    models: Sequence[RetrievalModel],
    *,
    part: str = "test",
    popularity: bool = True,
    ns: Sequence[int] = DEFAULT_NS,
    curve_max_n: int = CURVE_MAX_N,
    batch_size: int = 1024,
    exclude_history: bool = False,
) -> EvaluationReport:
    """Evaluate ``models`` (and the popularity baseline) on ``split``'s ``test`` or ``valid``."""
    if part not in ("test", "valid"):
        raise ValueError(f"part must be 'test' or 'valid', got {part!r}")
    eval_set = split.test if part == "test" else split.valid
    results = [
        evaluate_model(
            m,
            eval_set,
            ns=ns,
            curve_max_n=curve_max_n,
            batch_size=batch_size,
            exclude_history=exclude_history,
        )
        for m in models
    ]
    if popularity:
        results.append(
            evaluate_popularity(
                split.train,
                eval_set,
                ns=ns,
                curve_max_n=curve_max_n,
                batch_size=batch_size,
                exclude_history=exclude_history,
            )
        )
    return EvaluationReport(
        split.train.name, split.protocol, part, tuple(ns), exclude_history, results
    )


def write_report(report: EvaluationReport, out_dir: str | Path) -> dict[str, Path]:
    """Write ``results.json``, ``results.txt`` and ``hit_rate.png`` into ``out_dir``."""
    from model_export.plot import plot_hit_rate  # matplotlib only when a plot is wanted

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / "results.json",
        "text": out / "results.txt",
        "plot": out / "hit_rate.png",
    }
    paths["json"].write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    paths["text"].write_text(report.to_text() + "\n", encoding="utf-8")
    plot_hit_rate(
        {m.name: m.hit_rate_curve for m in report.models},
        paths["plot"],
        title=f"{report.dataset} · {report.protocol} · {report.part}",
    )
    return paths


def _score(
    name: str,
    items: np.ndarray,
    eval_set: EvalSet,
    ns: Sequence[int],
    curve_max_n: int,
    began: float,
    **diagnostics: Any,
) -> ModelEvaluation:
    rel, n_targets = relevance(items, eval_set.targets)
    return ModelEvaluation(
        name=name,
        n_users=len(eval_set),
        metrics=ranking_metrics(rel, n_targets, ns),
        hit_rate_curve=[float(v) for v in hit_rate_curve(rel[:, :curve_max_n])],
        seconds=time.perf_counter() - began,
        **diagnostics,
    )
