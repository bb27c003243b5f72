"""Fixtures of the recall unit tests: small bundles written with the real bundle writer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from benchmarks.catalogue import write_catalogue_bundle
from model_export.bundle import Bundle, load_bundle


@pytest.fixture
def make_bundle(tmp_path: Path) -> Callable[..., Bundle]:
    """``make_bundle(embeddings, k=4)``: a loaded catalogue-only bundle of ``embeddings``."""

    def make(embeddings: np.ndarray, **kwargs) -> Bundle:
        return load_bundle(write_catalogue_bundle(tmp_path / "bundles", embeddings, **kwargs))

    return make
