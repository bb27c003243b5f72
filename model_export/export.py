"""Export a trained user tower to the serving contract: ONNX graph plus a bundle.

The graph has one input, ``item_seq`` int64 [batch, seq] (right-padded model indices, 0 =
padding; any seq >= 1, the caller passes at most ``max_len`` newest behaviours) and two
outputs, ``interests`` float32 [batch, k, dim] and ``interest_mask`` bool [batch, k]. The
item embeddings in the bundle are the tower's own pooled item vectors (rows for 1..n_items).
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model_export.bundle import TOWER_INPUT, TOWER_OUTPUTS, write_bundle
from model_export.exceptions import ModelExportError
from model_export.model import UserTower

logger = logging.getLogger(__name__)

OPSET = 17


def export_onnx(tower: UserTower, *, opset: int = OPSET, exporter: str = "legacy") -> bytes:
    """The tower as an ONNX model with dynamic batch and seq axes.

    ``exporter="legacy"`` (the TorchScript exporter, ~0.3 s) is the default; ``"dynamo"``
    (torch.export + onnxscript, several seconds) gives the same numbers; both are tested.
    """
    if not tower.exportable:
        raise ModelExportError(
            "this tower uses user-profile features, which the serving contract (item_seq only) "
            "cannot feed; train without user features to export"
        )
    if exporter not in ("legacy", "dynamo"):
        raise ModelExportError(f"exporter {exporter!r}: expected legacy or dynamo")
    was_training = tower.training
    tower.eval()
    # Length 9 > 8 behaviours puts 3 capsules to work; the trace does not depend on it.
    example = torch.tensor([[1] * 9 + [0], [1] + [0] * 9], dtype=torch.int64)
    example = example.clamp(max=tower.config.n_items)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=DeprecationWarning)
            warnings.simplefilter("ignore", category=FutureWarning)
            if exporter == "dynamo":
                return _export_dynamo(tower, example, opset)
            buffer = io.BytesIO()
            torch.onnx.export(
                tower,
                (example,),
                buffer,  # type: ignore[arg-type]  # a file object works; the stub says path
                dynamo=False,
                input_names=[TOWER_INPUT],
                output_names=list(TOWER_OUTPUTS),
                dynamic_axes={
                    TOWER_INPUT: {0: "batch", 1: "seq"},
                    TOWER_OUTPUTS[0]: {0: "batch"},
                    TOWER_OUTPUTS[1]: {0: "batch"},
                },
                opset_version=opset,
                do_constant_folding=True,
            )
            return buffer.getvalue()
    finally:
        tower.train(was_training)


def _export_dynamo(tower: UserTower, example: torch.Tensor, opset: int) -> bytes:
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    program = torch.onnx.export(
        tower,
        (example,),
        dynamo=True,
        input_names=[TOWER_INPUT],
        output_names=list(TOWER_OUTPUTS),
        dynamic_shapes={"item_seq": {0: batch, 1: seq}},
        opset_version=max(opset, 18),  # the dynamo exporter's lowest supported opset
    )
    if program is None:
        raise ModelExportError("the dynamo exporter returned no program")
    return bytes(program.model_proto.SerializeToString())


def item_embedding_matrix(tower: UserTower) -> np.ndarray:
    """float32 [n_items, dim]: row i - 1 is the pooled vector of model index i."""
    with torch.no_grad():
        vectors = tower.item_vectors()[1:]
    return np.ascontiguousarray(vectors.cpu().numpy(), dtype=np.float32)


def bundle_model_config(tower: UserTower) -> dict[str, Any]:
    """The manifest's ``model`` section: the serving keys plus the full tower config."""
    config = tower.config
    return {
        "kind": config.kind,
        "dim": config.dim,
        "k": config.n_interests,
        "max_len": config.max_len,
        "routing_iterations": config.routing_iterations if tower.routing is not None else 0,
        "dynamic_k": config.dynamic_k,
        "n_items": config.n_items,
        "opset": OPSET,
        "config": config.to_json(),
    }


def export_bundle(
    tower: UserTower,
    item_ids: Sequence[str],
    out_root: Path,
    *,
    metrics: Mapping[str, Any] | None = None,
    make_current: bool = True,
    item_categories: Sequence[str] | None = None,
) -> Path:
    """Export ``tower`` and write a bundle under ``out_root``; returns the bundle folder (with
    the items' category labels when ``item_categories`` is given)."""
    if len(item_ids) != tower.config.n_items:
        raise ModelExportError(
            f"{len(item_ids)} item ids for a model of {tower.config.n_items} items"
        )
    onnx_model = export_onnx(tower)
    path = write_bundle(
        Path(out_root),
        onnx_model=onnx_model,
        item_embeddings=item_embedding_matrix(tower),
        item_ids=list(item_ids),
        model=bundle_model_config(tower),
        metrics=metrics,
        make_current=make_current,
        item_categories=item_categories,
    )
    logger.info("exported bundle path=%s onnx_bytes=%d", path, len(onnx_model))
    return path


def build_tiny_bundle(
    out_root: Path,
    *,
    n_items: int = 200,
    n_users: int = 300,
    n_clusters: int = 10,
    dim: int = 16,
    k: int = 4,
    max_len: int = 20,
    train_steps: int = 60,
    seed: int = 0,
    make_current: bool = True,
) -> Path:
    """A real bundle in a few seconds, for other stages' tests and demos.

    Generates the synthetic planted-interest log (items ``i1..iN``, users ``u1..uM``,
    category ``c{cluster}``; same seed, same data), trains a small MIND for ``train_steps``
    steps (0 = untrained weights) and exports it under ``out_root``.
    """
    from model_export.data.synthetic import SyntheticConfig, generate
    from model_export.model import build_tower, config_for
    from model_export.train import TrainConfig, train

    data, _ = generate(
        SyntheticConfig(
            n_users=n_users,
            n_items=n_items,
            n_clusters=min(n_clusters, n_items),
            max_interests=min(4, n_clusters, n_items),
            seed=seed,
        )
    )
    config = config_for(
        data.feature_sizes,
        data.item_features,
        n_items=data.n_items,
        dim=dim,
        k=k,
        max_len=max_len,
        seed=seed,
    )
    tower = build_tower(config, data.item_features)
    if train_steps > 0:
        train(
            tower,
            data.sequences,
            TrainConfig(
                epochs=1000,
                batch_size=128,
                lr=3e-3,
                negatives=min(100, n_items),
                max_steps=train_steps,
                log_every=0,
                seed=seed,
            ),
        )
    return export_bundle(
        tower,
        data.item_ids,
        out_root,
        metrics={"data": data.name, "note": "tiny test bundle"},
        make_current=make_current,
    )
