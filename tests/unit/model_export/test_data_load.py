"""The ``load`` dispatcher and format detection."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_export.data import detect_format, load
from model_export.data.assemble import numbered_lines
from model_export.exceptions import DataFormatError


def test_detects_the_shared_data_sets(
    movielens_dir: Path, beauty_dir: Path, taobao_dir: Path
) -> None:
    assert detect_format(movielens_dir) == "movielens"
    assert detect_format(movielens_dir / "ratings.csv") == "movielens"
    assert detect_format(beauty_dir) == "amazon"
    assert detect_format(beauty_dir / "Beauty.txt") == "amazon"
    assert detect_format(taobao_dir) == "taobao"
    assert load(beauty_dir / "Beauty.txt").interactions.n_items == 12_101


def test_detects_by_content(tmp_path: Path) -> None:
    cases = {
        "a.csv": ("userId,movieId,rating,timestamp\n1,2,3.0,4\n", "movielens"),
        "b.tsv": ("1\t2\t3\t4\n", "movielens"),
        "c.csv": ("1,2,3,pv,4\n", "taobao"),
        "d.seq": ("1 2 3\n", "amazon"),
    }
    for name, (text, expected) in cases.items():
        (tmp_path / name).write_text(text)
        assert detect_format(tmp_path / name) == expected
        assert load(tmp_path / name).format == expected
    (tmp_path / "e.csv").write_text("a,b,c\n")
    with pytest.raises(DataFormatError, match="cannot tell the data format"):
        load(tmp_path / "e.csv")


def test_explicit_format_and_options(tmp_path: Path) -> None:
    (tmp_path / "log").write_text("1,2,3,pv,4\n1,3,3,buy,5\n")
    assert load(tmp_path / "log", "taobao", behaviours=["buy"]).interactions.n_interactions == 1
    with pytest.raises(DataFormatError, match="unknown data format"):
        load(tmp_path / "log", "parquet")
    with pytest.raises(DataFormatError, match="no such file"):
        load(tmp_path / "missing")


def test_numbered_lines_skip_empty_lines_but_count_them() -> None:
    raw = ["a,1\r\n", "\r\n", "\n", " \n", "b,2"]
    assert list(numbered_lines(raw)) == [(1, "a,1"), (4, " "), (5, "b,2")]
    assert [n for n, _ in numbered_lines(raw, first_line=2)] == [2, 5, 6]
