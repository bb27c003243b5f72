"""Data loaders (one module per source), the synthetic generator and the splits.

``load(path)`` reads any supported source into a :class:`LoadResult` whose ``interactions``
is the :class:`~model_export.dataset.Interactions` contract; ``format`` names the source when
the path alone does not tell.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from model_export.data.amazon import ATTRIBUTES_SUFFIX, read_amazon
from model_export.data.assemble import LoadResult
from model_export.data.movielens import RATINGS_CSV, RATINGS_HEADER, U_DATA, read_movielens
from model_export.data.taobao import BEHAVIOURS, read_taobao
from model_export.data.taobao import FILE_NAME as TAOBAO_FILE
from model_export.exceptions import DataFormatError

__all__ = ["FORMATS", "LoadResult", "detect_format", "load"]

FORMATS = ("movielens", "amazon", "taobao")


def load(path: str | Path, format: str = "auto", **options: Any) -> LoadResult:
    """Load ``path`` as ``format`` (``auto``, ``movielens``, ``amazon`` or ``taobao``).

    ``options`` go to the source's reader: ``skip_bad`` and ``name`` for all;
    ``min_rating`` (movielens); ``attributes``, ``max_attributes`` (amazon); ``behaviours``
    (taobao). Raises :class:`DataFormatError` when the path is missing or not in the format.
    """
    path = Path(path)
    if not path.exists():
        raise DataFormatError(f"{path}: no such file or directory")
    chosen = detect_format(path) if format == "auto" else format
    if chosen == "movielens":
        return read_movielens(path, **options)
    if chosen == "amazon":
        return read_amazon(path, **options)
    if chosen == "taobao":
        return read_taobao(path, **options)
    raise DataFormatError(f"unknown data format {format!r}: expected auto or one of {FORMATS}")


def detect_format(path: str | Path) -> str:
    """Which supported source ``path`` (a file or a folder) holds, from names, then content."""
    path = Path(path)
    if path.is_dir():
        if (path / RATINGS_CSV).is_file() or (path / U_DATA).is_file():
            return "movielens"
        if (path / TAOBAO_FILE).is_file():
            return "taobao"
        if any(path.glob(f"*{ATTRIBUTES_SUFFIX}")) or len(list(path.glob("*.txt"))) == 1:
            return "amazon"
        raise DataFormatError(
            f"{path}: cannot tell the data format from the folder's files; pass format= one "
            f"of {FORMATS}"
        )
    if path.name in (RATINGS_CSV, U_DATA):
        return "movielens"
    if path.name == TAOBAO_FILE:
        return "taobao"
    with path.open(encoding="utf-8", errors="replace") as handle:
        first = handle.readline().strip()
    fields = first.split(",")
    if fields == RATINGS_HEADER:
        return "movielens"
    if len(fields) == 5 and fields[3] in BEHAVIOURS:
        return "taobao"
    if len(first.split("\t")) == 4:
        return "movielens"
    tokens = first.split()
    if len(tokens) >= 2 and "," not in first:
        return "amazon"
    raise DataFormatError(
        f"{path}:1: cannot tell the data format from {first[:80]!r}; pass format= one of {FORMATS}"
    )
