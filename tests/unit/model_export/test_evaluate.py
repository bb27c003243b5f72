"""End-to-end evaluation: splits -> retrieval -> metrics -> report, with trivial encoders."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from model_export.data.amazon import read_amazon
from model_export.data.splits import EvalSet, comirec_split, leave_last_out
from model_export.data.synthetic import SyntheticConfig, generate
from model_export.dataset import Interactions, PlantedTruth
from model_export.evaluate import (
    RetrievalModel,
    evaluate_popularity,
    evaluate_split,
    popularity_ranking,
    write_report,
)


class MeanEncoder:
    """One interest: the mean embedding of the (non-pad) history."""

    def __init__(self, table: np.ndarray) -> None:
        self.table = np.vstack([np.zeros((1, table.shape[1]), np.float32), table])

    def __call__(self, item_seq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        summed = self.table[item_seq].sum(axis=1)
        counts = np.maximum((item_seq > 0).sum(axis=1, keepdims=True), 1)
        return (summed / counts)[:, None, :].astype(np.float32), np.ones((len(item_seq), 1), bool)


class ClusterEncoder:
    """Up to K interests: the mean embedding of the history items of each of its K most
    frequent planted clusters (an oracle for the planted structure).
    """

    def __init__(self, table: np.ndarray, item_cluster: np.ndarray, k: int) -> None:
        self.table = np.vstack([np.zeros((1, table.shape[1]), np.float32), table])
        self.item_cluster = item_cluster
        self.k = k

    def __call__(self, item_seq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        batch = len(item_seq)
        interests = np.zeros((batch, self.k, self.table.shape[1]), np.float32)
        mask = np.zeros((batch, self.k), bool)
        for b, row in enumerate(item_seq):
            items = row[row > 0]
            clusters, counts = np.unique(self.item_cluster[items], return_counts=True)
            for j, c in enumerate(clusters[np.argsort(-counts, kind="stable")][: self.k]):
                interests[b, j] = self.table[items[self.item_cluster[items] == c]].mean(axis=0)
                mask[b, j] = True
        return interests, mask


Planted = tuple[Interactions, PlantedTruth, np.ndarray]


@pytest.fixture(scope="module")
def planted() -> Planted:
    data, truth = generate(
        SyntheticConfig(n_users=600, n_items=1000, n_clusters=20, max_interests=4, seed=11)
    )
    rng = np.random.default_rng(0)
    # 20 cluster directions in 8 dimensions cannot all be orthogonal: a single averaged vector
    # then also points at clusters the user never touched, which is what multi-interest fixes.
    directions = rng.normal(size=(20, 8))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    table = directions[truth.item_cluster[1:]] + 0.1 * rng.normal(size=(1000, 8))
    return data, truth, table.astype(np.float32)


class CollapsedEncoder(MeanEncoder):
    """K copies of the mean: the interest collapse the cosine diagnostic must flag."""

    def __call__(self, item_seq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, _ = super().__call__(item_seq)
        return np.repeat(mean, 3, axis=1), np.ones((len(item_seq), 3), bool)


def _reference_metrics(model: RetrievalModel, cases: EvalSet, n: int) -> dict[str, float]:
    """From scratch: score every item with every active interest, keep each item's best score,
    take the top n, and compare with the targets as Python sets.
    """
    hits, recalls = [], []
    for history, targets in zip(cases.histories, cases.targets, strict=True):
        seq = np.zeros((1, model.max_len), np.int64)
        recent = history[-model.max_len :]
        seq[0, : len(recent)] = recent
        interests, mask = model.encoder(seq)
        best = (interests[0][mask[0]] @ model.item_embeddings.T).max(axis=0)
        top = set((np.argsort(-best, kind="stable")[:n] + 1).tolist())
        wanted = set(targets.tolist())
        hits.append(bool(top & wanted))
        recalls.append(len(top & wanted) / len(wanted))
    return {f"hit_rate@{n}": float(np.mean(hits)), f"recall@{n}": float(np.mean(recalls))}


def test_end_to_end_matches_a_from_scratch_reference(planted: Planted, tmp_path: Path) -> None:
    data, truth, table = planted
    split = comirec_split(data, seed=1)
    noise = np.random.default_rng(5).normal(size=table.shape).astype(np.float32)
    models = [
        RetrievalModel("clusters", ClusterEncoder(table, truth.item_cluster, 4), table, 30),
        RetrievalModel("mean", MeanEncoder(table), table, max_len=30),
        RetrievalModel("random", MeanEncoder(noise), noise, max_len=30),
        RetrievalModel("collapsed", CollapsedEncoder(table), table, max_len=30),
    ]
    report = evaluate_split(split, models, part="test", ns=(20, 50), curve_max_n=100)
    by_name = {m.name: m for m in report.models}
    assert list(by_name) == ["clusters", "mean", "random", "collapsed", "popularity"]
    for name in ("clusters", "mean"):
        for n in (20, 50):
            want = _reference_metrics(models[0 if name == "clusters" else 1], split.test, n)
            for key, value in want.items():
                assert by_name[name].metrics[key] == pytest.approx(value), (name, key)
    # the planted structure is informative: far better than unrelated vectors
    assert by_name["clusters"].metrics["recall@50"] > 3 * by_name["random"].metrics["recall@50"]
    # interest-collapse diagnostic: distinct clusters near-orthogonal, copies exactly parallel
    clusters = by_name["clusters"]
    assert clusters.interest_cosine is not None and abs(clusters.interest_cosine) < 0.3
    assert clusters.users_with_several_interests > 0
    assert clusters.mean_active_interests is not None
    assert 1.0 < clusters.mean_active_interests <= 4.0
    assert by_name["collapsed"].interest_cosine == pytest.approx(1.0, abs=1e-5)
    assert by_name["mean"].interest_cosine is None  # one interest: nothing to compare
    for m in report.models:
        assert m.n_users == len(split.test) and len(m.hit_rate_curve) == 100
        assert m.hit_rate_curve[19] == pytest.approx(m.metrics["hit_rate@20"])

    paths = write_report(report, tmp_path / "eval")
    loaded = json.loads(paths["json"].read_text())
    assert loaded["protocol"] == "comirec" and set(loaded["models"]) == set(by_name)
    assert loaded["models"]["clusters"]["metrics"] == by_name["clusters"].metrics
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = paths["text"].read_text()
    assert "clusters" in text and "Recall@50" in text


def test_exclude_history_changes_what_is_retrieved(planted: Planted) -> None:
    data, truth, table = planted
    split = leave_last_out(data)
    model = RetrievalModel("clusters", ClusterEncoder(table, truth.item_cluster, 4), table, 50)
    kept = evaluate_split(split, [model], popularity=False, ns=(20,), curve_max_n=20)
    dropped = evaluate_split(
        split, [model], popularity=False, ns=(20,), curve_max_n=20, exclude_history=True
    )
    # the generator repeats popular items, so a target is often already in the history
    assert kept.models[0].metrics != dropped.models[0].metrics
    assert kept.exclude_history is False and dropped.exclude_history is True


def test_popularity_by_hand() -> None:
    train = Interactions(
        name="toy",
        item_ids=["a", "b", "c", "d", "e"],
        users=["u1", "u2"],
        sequences=[np.array([2, 2, 4, 5]), np.array([4, 2, 1])],
    )
    # counts: a=1, b=3, c=0, d=2, e=1 -> b, d, then a and e (tie: lower index), then c
    assert popularity_ranking(train).tolist() == [2, 4, 1, 5, 3]
    cases = EvalSet(
        np.array([0, 1]), [np.array([2]), np.array([3])], [np.array([1]), np.array([4])]
    )
    plain = evaluate_popularity(train, cases, ns=(2, 3), curve_max_n=5)
    # user 0 target a (rank 3), user 1 target d (rank 2)
    assert plain.metrics["hit_rate@2"] == 0.5 and plain.metrics["hit_rate@3"] == 1.0
    excluded = evaluate_popularity(train, cases, ns=(2,), curve_max_n=5, exclude_history=True)
    one_by_one = evaluate_popularity(
        train, cases, ns=(2,), curve_max_n=5, exclude_history=True, batch_size=1
    )
    assert one_by_one.metrics == excluded.metrics
    # user 0 no longer gets b: its list is d, a, ... so a is at rank 2
    assert excluded.metrics["hit_rate@2"] == 1.0
    assert excluded.hit_rate_curve[:2] == [0.0, 1.0]


@pytest.mark.data
def test_beauty_leave_last_out_is_fast_and_popularity_matches_numpy(beauty_dir: Path) -> None:
    data = read_amazon(beauty_dir).interactions
    split = leave_last_out(data)
    table = np.random.default_rng(0).normal(size=(data.n_items, 32)).astype(np.float32)
    began = time.perf_counter()
    report = evaluate_split(split, [RetrievalModel("mean", MeanEncoder(table), table, 50)])
    assert time.perf_counter() - began < 30
    pop = report.models[-1]
    assert pop.n_users == len(split.test) == 22_363
    # independent reference: the top-N most frequent training items, same list for everyone
    counts = np.bincount(np.concatenate(split.train.sequences), minlength=data.n_items + 1)
    counts[0] = -1
    order = np.lexsort((np.arange(len(counts)), -counts))
    targets = np.concatenate(split.test.targets)
    for n in (20, 50, 100):
        assert pop.metrics[f"hit_rate@{n}"] == pytest.approx(np.isin(targets, order[:n]).mean())
