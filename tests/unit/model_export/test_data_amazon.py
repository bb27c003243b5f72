"""Amazon (S3-Rec) sequence loader: the real Beauty files and small fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model_export.data import load
from model_export.data.amazon import read_amazon
from model_export.exceptions import DataFormatError


def test_beauty_counts_and_identity_ids(beauty_dir: Path) -> None:
    result = read_amazon(beauty_dir)
    data = result.interactions
    assert (data.n_users, data.n_items, data.n_interactions) == (22_363, 12_101, 198_502)
    assert result.rows == 22_363 and result.bad_lines == 0
    # Beauty's ids are dense integers from 1, so model index == producer id.
    assert data.item_ids == [str(i) for i in range(1, 12_102)]
    assert data.timestamps is None
    with (beauty_dir / "Beauty.txt").open() as f:
        first = f.readline().split()
    assert data.users[0] == first[0]
    assert data.sequences[0].tolist() == [int(x) for x in first[1:]]


def test_beauty_attributes(beauty_dir: Path) -> None:
    result = read_amazon(beauty_dir)
    data = result.interactions
    raw = json.loads((beauty_dir / "Beauty_item2attributes.json").read_text())
    attrs = data.item_features["attribute"]
    assert attrs.shape == (12_102, 6)  # the longest list has 6: the cap of 8 cuts nothing
    assert "attributes beyond max_attributes" not in result.counts
    assert data.feature_sizes["attribute"] == 638
    vocab = result.feature_vocab["attribute"]
    for item in ("4", "165", "12101"):
        row = attrs[int(item)]
        assert [vocab[a - 1] for a in row if a] == [str(v) for v in raw[item]]
    assert not attrs[0].any()


def _fixture(tmp_path: Path, lines: str, attributes: dict | None = None) -> Path:
    folder = tmp_path / "amz"
    folder.mkdir()
    (folder / "Toys.txt").write_text(lines)
    if attributes is not None:
        (folder / "Toys_item2attributes.json").write_text(json.dumps(attributes))
    return folder


def test_fixture_order_attributes_and_cap(tmp_path: Path) -> None:
    folder = _fixture(
        tmp_path, "u1 3 1 2\nu2 2 2\n", {"1": [9, 7, 8], "2": [7], "3": [], "99": [5]}
    )
    result = read_amazon(folder, max_attributes=2)
    data = result.interactions
    assert data.name == "Toys"
    assert data.item_ids == ["1", "2", "3"]
    assert [s.tolist() for s in data.sequences] == [[3, 1, 2], [2, 2]]
    # item 1 keeps its JSON order, cut to two (9, 7); 8 (cut) and 5 (unknown item) get no id
    assert result.feature_vocab["attribute"] == ["7", "9"]
    assert data.item_features["attribute"].tolist() == [[0, 0], [2, 1], [1, 0], [0, 0]]
    assert result.counts["attributes beyond max_attributes"] == 1


def test_without_attributes(tmp_path: Path) -> None:
    folder = _fixture(tmp_path, "a x y\n")
    data = load(folder).interactions
    assert data.item_ids == ["x", "y"] and not data.item_features
    (folder / "README.txt").write_text("notes\n")
    with pytest.raises(DataFormatError, match=r"expected one <name>\.txt"):
        read_amazon(folder)


def test_folder_with_a_readme_picks_the_file_with_attributes(tmp_path: Path) -> None:
    folder = _fixture(tmp_path, "u1 1 2\n", {"1": [3]})
    (folder / "README.txt").write_text("notes\n")
    result = load(folder)
    assert result.source.endswith("Toys.txt") and result.interactions.n_interactions == 2


def test_malformed_and_duplicate_users(tmp_path: Path) -> None:
    folder = _fixture(tmp_path, "u1 1 2\nu2\nu1 3\nu3 4\n")
    with pytest.raises(DataFormatError, match=r"Toys\.txt:2: expected a user id followed"):
        read_amazon(folder)
    result = read_amazon(folder, skip_bad=True)
    assert result.bad_lines == 2
    assert "already on line 1" in result.bad_line_examples[1]
    assert result.interactions.users == ["u1", "u3"]


def test_bad_attribute_file(tmp_path: Path) -> None:
    folder = _fixture(tmp_path, "u1 1\n")
    (folder / "Toys_item2attributes.json").write_text('{"1": [1, 2],\n "2": oops}')
    with pytest.raises(DataFormatError, match=r"item2attributes\.json:2: not valid JSON"):
        read_amazon(folder)
    (folder / "Toys_item2attributes.json").write_text('{"1": {"a": 1}}')
    with pytest.raises(DataFormatError, match="expected a list of attribute ids"):
        read_amazon(folder)


def test_sequences_are_int64(tmp_path: Path) -> None:
    data = read_amazon(_fixture(tmp_path, "u1 5 6\n")).interactions
    assert all(s.dtype == np.int64 for s in data.sequences)
