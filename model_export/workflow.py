"""The model stage's jobs end to end: data -> split -> tower -> early-stopped training ->
checkpoint -> test evaluation -> bundle, and evaluating a checkpoint or a bundle later.

The CLI (:mod:`model_export.cli`) is a thin shell over these functions.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model_export.data.splits import COMIREC, LEAVE_LAST_OUT, EvalSet, Split, split
from model_export.data.synthetic import SyntheticConfig, generate
from model_export.dataset import Interactions, PlantedTruth, item_category_labels
from model_export.evaluate import (
    DEFAULT_NS,
    EvaluationReport,
    RetrievalModel,
    evaluate_model,
    evaluate_split,
)
from model_export.exceptions import ModelExportError

logger = logging.getLogger(__name__)

SYNTHETIC = "synthetic"
DATA_FORMATS = ("auto", "movielens", "amazon", "taobao", SYNTHETIC)
# Early stopping and model choice use Recall@50 on validation. With one target per user
# (leave-last-out) it is HitRate@50; with several (ComiRec) it is the metric ComiRec's
# reference code selects on and the one its results are compared by, finer than HitRate,
# which saturates when a user has many targets.
VALID_METRIC = "recall@50"


@dataclass
class DataSpec:
    """Where the interactions come from and how they are split (stored with every checkpoint)."""

    path: str | None = None  # a data file or folder; None means the synthetic generator
    format: str = "auto"  # auto, movielens, amazon, taobao or synthetic
    protocol: str = LEAVE_LAST_OUT  # leave_last_out or comirec
    split_seed: int = 0  # seeds the ComiRec user shuffle
    split_fold: int = 0  # which block of the shuffle is held out (ComiRec cross-validation)
    features: bool = True  # use the data set's item side features
    synthetic: dict[str, Any] = field(default_factory=dict)  # SyntheticConfig overrides

    def __post_init__(self) -> None:
        if self.format not in DATA_FORMATS:
            raise ModelExportError(f"data format {self.format!r}: expected one of {DATA_FORMATS}")
        if self.protocol not in (LEAVE_LAST_OUT, COMIREC):
            raise ModelExportError(
                f"protocol {self.protocol!r}: expected {LEAVE_LAST_OUT} or {COMIREC}"
            )
        if self.split_fold < 0:
            raise ModelExportError(f"split fold must be >= 0; got {self.split_fold}")
        if self.split_fold != 0 and self.protocol != COMIREC:
            raise ModelExportError(
                f"split fold {self.split_fold} needs protocol {COMIREC}: {self.protocol} has "
                "no user split to fold"
            )
        if self.path is None and self.format not in ("auto", SYNTHETIC):
            raise ModelExportError(f"format {self.format} needs a data path")

    @property
    def is_synthetic(self) -> bool:
        return self.path is None or self.format == SYNTHETIC

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DataSpec:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def load_data(spec: DataSpec) -> tuple[Interactions, PlantedTruth | None]:
    """The interactions ``spec`` names (item features dropped unless ``spec.features``)."""
    truth: PlantedTruth | None = None
    if spec.is_synthetic:
        data, truth = generate(SyntheticConfig(**spec.synthetic))
    else:
        from model_export.data import load

        fmt = "auto" if spec.format == "auto" else spec.format
        data = load(str(spec.path), fmt).interactions
    if not spec.features:
        data = dataclasses.replace(data, item_features={}, feature_sizes={})
    logger.info("data %s", data.summary())
    return data, truth


def make_split(data: Interactions, spec: DataSpec) -> Split:
    """``spec``'s split of ``data``; a data set too small to give training examples and
    validation and test users is refused here, before any training."""
    try:
        parts = split(data, spec.protocol, seed=spec.split_seed, fold=spec.split_fold)
    except ValueError as exc:
        raise ModelExportError(f"data set {data.name!r}: split fold: {exc}") from exc
    need = (
        "users with >= 3 behaviours"
        if spec.protocol == LEAVE_LAST_OUT
        else "users (8:1:1 user split; each evaluated user needs >= 2 behaviours)"
    )
    if len(parts.valid) == 0 or len(parts.test) == 0:
        raise ModelExportError(
            f"data set {data.name!r} is too small to split with protocol {spec.protocol}: "
            f"{len(parts.valid)} validation and {len(parts.test)} test users ({data.n_users} "
            f"users in all); it needs more {need}"
        )
    if not any(len(s) >= 2 for s in parts.train.sequences):
        raise ModelExportError(
            f"data set {data.name!r} leaves no training sequence of >= 2 behaviours after the "
            f"{spec.protocol} split"
        )
    logger.info(
        "split protocol=%s train_users=%d valid_users=%d test_users=%d %s",
        parts.protocol,
        parts.train.n_users,
        len(parts.valid),
        len(parts.test),
        parts.counts,
    )
    return parts


def subsample(eval_set: EvalSet, n: int, seed: int) -> EvalSet:
    """At most ``n`` users of ``eval_set`` (a fixed seeded sample; all when n <= 0)."""
    if n <= 0 or len(eval_set) <= n:
        return eval_set
    keep = np.sort(np.random.default_rng(seed).choice(len(eval_set), size=n, replace=False))
    return EvalSet(
        eval_set.users[keep],
        [eval_set.histories[i] for i in keep],
        [eval_set.targets[i] for i in keep],
    )


def tower_retrieval_model(tower: Any, name: str) -> RetrievalModel:
    """A torch tower as the evaluator's model (item table = the tower's pooled vectors)."""
    from model_export.export import item_embedding_matrix
    from model_export.train import TorchUserEncoder

    return RetrievalModel(
        name=name,
        encoder=TorchUserEncoder(tower),
        item_embeddings=item_embedding_matrix(tower),
        max_len=tower.config.max_len,
    )


def bundle_retrieval_model(path: Path | str, name: str | None = None) -> RetrievalModel:
    """A bundle as the evaluator's model, run with onnxruntime (no torch)."""
    from model_export.bundle import load_bundle
    from model_export.onnx_tower import OnnxUserTower

    bundle = load_bundle(path)
    return RetrievalModel(
        name=name or f"{bundle.config['kind']}-onnx",
        encoder=OnnxUserTower(bundle.onnx_path),
        item_embeddings=bundle.item_embeddings,
        max_len=bundle.max_len,
    )


def model_name(config: Any) -> str:
    """The kind (``mind``, ``comirec_sa``, ...), ``_k1`` added for a multi-interest kind with
    K = 1; ``youtube_dnn`` as it is: names used in tables and results."""
    if config.kind == "youtube_dnn":
        return "youtube_dnn"
    return f"{config.kind}_k1" if config.k == 1 else str(config.kind)


@dataclass
class TrainOutcome:
    """What a training job produced."""

    tower: Any  # the trained UserTower (best validated weights)
    data: Interactions
    truth: PlantedTruth | None
    split: Split
    result: Any  # TrainResult
    validation: dict[str, Any]  # the selection metric's name and every validation metric by epoch
    test: EvaluationReport
    checkpoint: Path | None
    bundle: Path | None
    train_config: dict[str, Any] = field(default_factory=dict)  # TrainConfig's fields

    def summary(self) -> dict[str, Any]:
        test = {m.name: m.to_dict() for m in self.test.models}
        for entry in test.values():
            entry.pop("hit_rate_curve", None)
        return {
            "data": self.data.name,
            "protocol": self.split.protocol,
            "model": self.tower.config.to_json(),
            "train": self.result.to_json(),
            "train_config": self.train_config,
            "validation": self.validation,
            "test": test,
            "checkpoint": None if self.checkpoint is None else str(self.checkpoint),
            "bundle": None if self.bundle is None else str(self.bundle),
        }


def train_job(
    spec: DataSpec,
    model_overrides: dict[str, Any],
    train_config: Any,
    *,
    run_dir: Path | None,
    bundle_root: Path | None,
    valid_users: int = 0,
    ns: Sequence[int] = DEFAULT_NS,
) -> TrainOutcome:
    """Train one tower on ``spec``'s training part, early-stopped on validation
    :data:`VALID_METRIC`, then evaluate it on the test part, save a checkpoint in ``run_dir``
    and export a bundle under ``bundle_root`` (either skipped when None)."""
    from model_export.checkpoint import save_checkpoint
    from model_export.export import export_bundle
    from model_export.model import build_tower, config_for
    from model_export.train import train

    data, truth = load_data(spec)
    parts = make_split(data, spec)
    config = config_for(
        data.feature_sizes, data.item_features, n_items=data.n_items, **model_overrides
    )
    tower = build_tower(config, data.item_features)
    name = model_name(config)
    valid = subsample(parts.valid, valid_users, spec.split_seed)
    valid_by_epoch: list[dict[str, float]] = []

    def validate(current: Any) -> float:
        evaluation = evaluate_model(
            tower_retrieval_model(current, name), valid, ns=(20, 50), curve_max_n=50
        )
        valid_by_epoch.append(dict(evaluation.metrics))
        if evaluation.interest_cosine is not None:
            logger.info(
                "valid interest_cosine=%.3f mean_active=%.2f",
                evaluation.interest_cosine,
                evaluation.mean_active_interests or math.nan,
            )
        return evaluation.metrics[VALID_METRIC]

    result = train(tower, parts.train.sequences, train_config, validate=validate)
    report = evaluate_split(parts, [tower_retrieval_model(tower, name)], part="test", ns=ns)
    logger.info("test\n%s", report.to_text())
    validation = {
        "metric": VALID_METRIC,
        "users": len(valid),
        "by_epoch": valid_by_epoch,
        "best": valid_by_epoch[result.best_epoch - 1] if result.best_epoch else {},
    }
    info = {
        "data": spec.to_json(),
        "data_name": data.name,
        "train": dataclasses.asdict(train_config),
        "result": result.to_json(),
        "validation": validation,
        "test": _metrics_of(report, name),
    }
    checkpoint = None
    # The primary side feature as each item's category: the recall service's diversity-aware
    # merge reads it from the bundle.
    categories = item_category_labels(data)
    if run_dir is not None:
        checkpoint = save_checkpoint(
            Path(run_dir), tower, data.item_ids, info, item_categories=categories
        )
    bundle = None
    if bundle_root is not None and tower.exportable:
        bundle = export_bundle(
            tower,
            data.item_ids,
            Path(bundle_root),
            metrics=bundle_metrics(info),
            item_categories=categories,
        )
    elif bundle_root is not None:
        logger.warning("no bundle: a tower with user-profile features cannot be served")
    return TrainOutcome(
        tower,
        data,
        truth,
        parts,
        result,
        validation,
        report,
        checkpoint,
        bundle,
        dataclasses.asdict(train_config),
    )


def evaluate_job(
    *,
    checkpoint: Path | None,
    bundle: Path | None,
    spec: DataSpec | None,
    protocols: Sequence[str],
    out_dir: Path,
    ns: Sequence[int] = DEFAULT_NS,
    exclude_history: bool = False,
) -> dict[str, EvaluationReport]:
    """Evaluate a checkpoint (torch) or a bundle (onnxruntime) on the test part of each
    protocol; write ``<out_dir>/<protocol>/results.{json,txt}`` and ``hit_rate.png``."""
    from model_export.evaluate import write_report

    if (checkpoint is None) == (bundle is None):
        raise ModelExportError("evaluate needs exactly one of a checkpoint or a bundle")
    trained_on: dict[str, Any] = {}
    if checkpoint is not None:
        from model_export.checkpoint import load_checkpoint

        restored = load_checkpoint(checkpoint)
        model = tower_retrieval_model(restored.tower, model_name(restored.config))
        trained_on = dict(restored.info.get("data", {}))
        item_ids = restored.item_ids
    elif bundle is not None:
        from model_export.bundle import load_bundle

        loaded = load_bundle(bundle)
        model = bundle_retrieval_model(loaded.path)
        item_ids = loaded.item_ids
        trained_on = dict(loaded.manifest.get("metrics", {}).get("data_spec") or {})
    if spec is None:
        if not trained_on:
            raise ModelExportError("say which data to evaluate on (--data / --format)")
        spec = DataSpec.from_json(trained_on)
    data, _ = load_data(spec)
    if list(data.item_ids) != list(item_ids):
        raise ModelExportError(
            f"the model's {len(item_ids)} item ids are not the data's {data.n_items} item ids; "
            "evaluate on the data set the model was trained on"
        )
    reports: dict[str, EvaluationReport] = {}
    for protocol in protocols:
        # Leave-last-out has no user split, so a fold only carries over to ComiRec.
        protocol_spec = dataclasses.replace(
            spec, protocol=protocol, split_fold=spec.split_fold if protocol == COMIREC else 0
        )
        if trained_on and (
            trained_on.get("protocol") != protocol
            or trained_on.get("split_seed") != protocol_spec.split_seed
            or trained_on.get("split_fold", 0) != protocol_spec.split_fold
        ):
            logger.warning(
                "model was trained with protocol=%s; its training data overlaps the %s test "
                "targets, so these numbers are optimistic (train one model per protocol)",
                trained_on.get("protocol"),
                protocol,
            )
        parts = make_split(data, protocol_spec)
        report = evaluate_split(parts, [model], ns=ns, exclude_history=exclude_history)
        write_report(report, Path(out_dir) / protocol)
        reports[protocol] = report
    return reports


def bundle_metrics(info: dict[str, Any]) -> dict[str, Any]:
    """The manifest's ``metrics`` for a checkpoint's training info (data, protocol, scores)."""
    best = info.get("result", {}).get("best_score")
    # A checkpoint that records no selection metric was chosen on HitRate@50.
    metric = info.get("validation", {}).get("metric", "hit_rate@50")
    return {
        "data": info.get("data_name"),
        "protocol": info.get("data", {}).get("protocol"),
        "data_spec": info.get("data", {}),
        "valid_" + metric: None if best is None or math.isnan(best) else best,
        "test": info.get("test", {}),
    }


def _metrics_of(report: EvaluationReport, name: str) -> dict[str, Any]:
    for evaluation in report.models:
        if evaluation.name == name:
            return {
                "n_users": evaluation.n_users,
                **evaluation.metrics,
                "interest_cosine": evaluation.interest_cosine,
                "mean_active_interests": evaluation.mean_active_interests,
            }
    raise ModelExportError(f"no evaluation of {name} in the report")


def write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
