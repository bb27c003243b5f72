"""Fixtures of the recall unit tests: small bundles written with the real bundle writer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from model_export.bundle import Bundle, load_bundle, write_bundle

# Recall never runs the user tower, so the ONNX file of these bundles is a placeholder.
PLACEHOLDER_ONNX = b"not an onnx model: recall never runs the tower"


def bundle_from(
    root: Path, embeddings: np.ndarray, *, k: int = 4, make_current: bool = True
) -> Bundle:
    """Write ``embeddings`` as a bundle under ``root`` (item ids ``i0``, ``i1``...) and load it."""
    n, dim = embeddings.shape
    path = write_bundle(
        root,
        onnx_model=PLACEHOLDER_ONNX,
        item_embeddings=embeddings,
        item_ids=[f"i{i}" for i in range(n)],
        model={"kind": "mind", "dim": dim, "k": k, "max_len": 20, "routing_iterations": 3},
        make_current=make_current,
    )
    return load_bundle(path)


@pytest.fixture
def make_bundle(tmp_path: Path) -> Callable[..., Bundle]:
    def make(embeddings: np.ndarray, **kwargs) -> Bundle:
        return bundle_from(tmp_path / "bundles", embeddings, **kwargs)

    return make
