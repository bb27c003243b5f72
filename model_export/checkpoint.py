"""Training checkpoints: a folder with the weights, the configs, the item ids and, when the
data had them, the items' category labels (``item_categories``, as in a bundle).

``weights.pt`` is a plain state_dict read back with ``torch.load(weights_only=True)``, so a
checkpoint from elsewhere cannot run code on load; everything else is JSON or text.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from model_export.bundle import (
    ITEM_CATEGORIES,
    check_item_categories,
    read_category_lines,
    write_category_lines,
)
from model_export.exceptions import ModelExportError
from model_export.model import MindConfig, UserTower, build_tower

logger = logging.getLogger(__name__)

WEIGHTS = "weights.pt"
CONFIG = "config.json"
ITEM_IDS = "item_ids"
CHECKPOINT_FORMAT = "mindstream-checkpoint/1"


@dataclass(frozen=True)
class Checkpoint:
    """A tower restored from disk with what is needed to export or evaluate it."""

    tower: UserTower
    item_ids: list[str]
    info: dict[str, Any]  # training config, data set, metrics: whatever the trainer stored
    item_categories: list[str] | None = None  # one label per item ("" = none), when known

    @property
    def config(self) -> MindConfig:
        return self.tower.config


def save_checkpoint(
    path: Path,
    tower: UserTower,
    item_ids: Sequence[str],
    info: Mapping[str, Any] | None = None,
    *,
    item_categories: Sequence[str] | None = None,
) -> Path:
    """Write ``tower`` to the folder ``path`` (replaced atomically if it exists), with the
    items' category labels when given (a bundle exported from it carries them)."""
    if len(item_ids) != tower.config.n_items:
        raise ModelExportError(
            f"{len(item_ids)} item ids for a model of {tower.config.n_items} items"
        )
    if item_categories is not None:
        check_item_categories(item_categories, len(item_ids))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in tower.state_dict().items()}
        torch.save(state, tmp / WEIGHTS)
        payload = {
            "format": CHECKPOINT_FORMAT,
            "model": tower.config.to_json(),
            "info": json.loads(json.dumps(dict(info or {}))),
        }
        (tmp / CONFIG).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
        (tmp / ITEM_IDS).write_text("".join(f"{i}\n" for i in item_ids), encoding="utf-8")
        if item_categories is not None:
            write_category_lines(tmp / ITEM_CATEGORIES, item_categories)
        os.chmod(tmp, 0o755)  # noqa: S103
        if path.exists():
            old = path.with_name(f".{path.name}-old-{os.getpid()}")
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("checkpoint saved path=%s", path)
    return path


def load_checkpoint(path: Path | str) -> Checkpoint:
    """Restore a checkpoint folder written by :func:`save_checkpoint`."""
    path = Path(path)
    if not (path / CONFIG).is_file() or not (path / WEIGHTS).is_file():
        raise ModelExportError(
            f"{path} is not a checkpoint: expected {CONFIG} and {WEIGHTS} (written by "
            "`mindstream train`)"
        )
    try:
        payload = json.loads((path / CONFIG).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelExportError(f"{path / CONFIG}: not valid JSON ({exc})") from exc
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise ModelExportError(
            f"{path / CONFIG}: format {payload.get('format')!r}, expected {CHECKPOINT_FORMAT!r}"
        )
    config = MindConfig.from_json(payload["model"])
    tower = build_tower(config)
    try:
        state = torch.load(path / WEIGHTS, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise ModelExportError(
            f"{path / WEIGHTS}: refused, not a plain state_dict of tensors ({exc})"
        ) from exc
    try:
        tower.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelExportError(f"{path}: weights do not match the config ({exc})") from exc
    tower.eval()
    item_ids = (path / ITEM_IDS).read_text(encoding="utf-8").splitlines()
    if len(item_ids) != config.n_items:
        raise ModelExportError(f"{path}: {len(item_ids)} item ids, config says {config.n_items}")
    item_categories = None
    if (path / ITEM_CATEGORIES).is_file():
        item_categories = read_category_lines(path / ITEM_CATEGORIES, len(item_ids))
    return Checkpoint(
        tower=tower,
        item_ids=item_ids,
        info=dict(payload.get("info", {})),
        item_categories=item_categories,
    )
