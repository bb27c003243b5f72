"""Fixtures of the model stage's unit tests: where the shared data sets are."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# tests/unit/model_export/conftest.py -> the repository root is three folders up; the shared
# data sets live beside the repository (../shared/data), never inside it.
SHARED_DATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"


def _shared(name: str) -> Path:
    root = Path(os.environ.get("MINDSTREAM_SHARED_DATA", SHARED_DATA)).resolve()
    if not root.is_dir():
        pytest.skip("../shared/data not found (set MINDSTREAM_SHARED_DATA to its location)")
    path = root / name
    if not path.exists():
        pytest.skip(f"../shared/data/{name} not found")
    return path


@pytest.fixture(scope="session")
def movielens_dir() -> Path:
    """MovieLens latest-small (ratings.csv, movies.csv); skips when absent."""
    return _shared("ml-latest-small")


@pytest.fixture(scope="session")
def beauty_dir() -> Path:
    """Amazon Beauty as prepared for S3-Rec; skips when absent."""
    return _shared("amazon-beauty")


@pytest.fixture(scope="session")
def taobao_dir() -> Path:
    """The first 10,000 rows of a Taobao UserBehavior log; skips when absent."""
    return _shared("taobao-userbehavior-10k")
