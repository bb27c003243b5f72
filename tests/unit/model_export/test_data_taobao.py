"""Taobao UserBehavior loader and event replay: the real 10k sample and small fixtures."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from model_export.data import load
from model_export.data.taobao import iter_events, read_taobao
from model_export.exceptions import DataFormatError


def test_sample_counts(taobao_dir: Path) -> None:
    result = read_taobao(taobao_dir)
    data = result.interactions
    assert result.rows == 10_000 and result.bad_lines == 0
    assert (data.n_users, data.n_items, data.n_interactions) == (114, 7_623, 10_000)
    assert data.feature_sizes["category"] == 1_096 + 1
    assert data.item_features["category"].shape == (7_624, 1)
    assert (data.item_features["category"][1:, 0] >= 1).all()
    assert data.timestamps is not None
    assert all((t[1:] >= t[:-1]).all() for t in data.timestamps)


def test_sample_behaviour_filter_matches_the_file(taobao_dir: Path) -> None:
    with (taobao_dir / "UserBehavior.csv").open(newline="") as f:
        behaviours = Counter(row[3] for row in csv.reader(f))
    kept = read_taobao(taobao_dir, behaviours=["buy", "cart"])
    assert kept.interactions.n_interactions == behaviours["buy"] + behaviours["cart"]
    assert kept.counts["behaviours filtered out"] == behaviours["pv"] + behaviours["fav"]
    with pytest.raises(ValueError, match="unknown behaviours"):
        read_taobao(taobao_dir, behaviours=["click"])


def test_sample_events_in_time_order(taobao_dir: Path) -> None:
    events = list(iter_events(taobao_dir))
    assert len(events) == 10_000
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
    assert set(events[0]) == {"user_id", "item_id", "ts", "event", "category"}
    assert {e["event"] for e in events} <= {"click", "cart", "fav", "buy"}


LOG = """1,100,7,pv,50
1,101,8,pv,40
2,100,7,buy,40
1,102,8,cart,50
1,100,9,fav,60
"""


def test_fixture_order_category_and_conflicts(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text(LOG)
    result = load(path)
    data = result.interactions
    assert result.format == "taobao"
    assert data.item_ids == ["100", "101", "102"]
    # user 1: 101 @40, then the tie at 50 in file order (100, 102), then 100 @60
    assert [data.item_ids[i - 1] for i in data.sequences[0]] == ["101", "100", "102", "100"]
    assert data.timestamps is not None and data.timestamps[0].tolist() == [
        40_000,
        50_000,
        50_000,
        60_000,
    ]
    vocab = result.feature_vocab["category"]
    assert [vocab[c - 1] for c in data.item_features["category"][1:, 0]] == ["7", "8", "8"]
    assert result.counts["rows whose category disagrees with the item's first"] == 1
    assert data.item_labels == ["category 7", "category 8", "category 8"]
    events = list(iter_events(path, behaviours=["pv", "cart"]))
    assert [(e["item_id"], e["event"]) for e in events] == [
        ("101", "click"),
        ("100", "click"),
        ("102", "cart"),
    ]


def test_malformed_lines(tmp_path: Path) -> None:
    path = tmp_path / "UserBehavior.csv"
    path.write_text(LOG + "3,100,7,view,70\n3,100,7\n")
    with pytest.raises(DataFormatError, match=r"UserBehavior\.csv:6: expected user,item"):
        read_taobao(tmp_path)
    result = read_taobao(tmp_path, skip_bad=True)
    assert result.bad_lines == 2 and result.rows == 7
    assert result.interactions.n_interactions == 5
