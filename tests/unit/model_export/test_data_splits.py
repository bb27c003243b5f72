"""Splits: leave-last-out and the ComiRec user split (properties and determinism)."""

from __future__ import annotations

import numpy as np
import pytest

from model_export.data.splits import comirec_split, leave_last_out, split
from model_export.dataset import Interactions


def _data(lengths: list[int], seed: int = 0) -> Interactions:
    rng = np.random.default_rng(seed)
    seqs = [rng.integers(1, 50, size=n).astype(np.int64) for n in lengths]
    return Interactions(
        name="toy",
        item_ids=[f"i{j}" for j in range(1, 50)],
        users=[f"u{u}" for u in range(len(lengths))],
        sequences=seqs,
        timestamps=[np.arange(n, dtype=np.int64) * 1000 for n in lengths],
        user_features={"age": np.arange(len(lengths), dtype=np.int64)},
        user_feature_sizes={"age": len(lengths)},
    )


def test_leave_last_out_properties() -> None:
    data = _data([1, 2, 3, 4, 10, 25])
    s = leave_last_out(data)
    assert s.counts == {"users with fewer than 3 behaviours (train only)": 2}
    assert s.test.users.tolist() == s.valid.users.tolist() == [2, 3, 4, 5]
    for j, u in enumerate(s.test.users.tolist()):
        seq = data.sequences[u]
        # the test target is the last event and is not part of its history; same for valid
        assert np.array_equal(np.concatenate([s.test.histories[j], s.test.targets[j]]), seq)
        assert len(s.test.targets[j]) == 1 and len(s.test.histories[j]) == len(seq) - 1
        assert np.array_equal(np.concatenate([s.valid.histories[j], s.valid.targets[j]]), seq[:-1])
        assert np.array_equal(s.train.sequences[u], seq[:-2])  # neither target is trained on
    assert s.train.users == data.users
    assert np.array_equal(s.train.sequences[0], data.sequences[0])  # short users: all train
    assert s.train.timestamps is not None and len(s.train.timestamps[5]) == 23


def test_leave_last_out_min_len() -> None:
    with pytest.raises(ValueError):
        leave_last_out(_data([5]), min_len=2)
    s = leave_last_out(_data([3, 4, 5]), min_len=5)
    assert s.test.users.tolist() == [2]


def test_comirec_sizes_disjointness_and_history_share() -> None:
    data = _data([int(n) for n in np.random.default_rng(1).integers(1, 30, size=1000)])
    s = comirec_split(data, seed=3)
    train_users = {data.users.index(u) for u in s.train.users}
    valid_users = set(s.valid.users.tolist())
    test_users = set(s.test.users.tolist())
    left_out = s.counts["evaluation users without history (left out)"]
    assert len(train_users) == 800
    assert len(valid_users) + len(test_users) + left_out == 200
    assert left_out == sum(
        len(q) == 1 for u, q in enumerate(data.sequences) if u not in train_users
    )
    assert left_out > 0  # the one-behaviour case is really exercised
    assert not (train_users & valid_users) and not (train_users & test_users)
    assert not (valid_users & test_users)
    for u in train_users:  # training users keep their full sequences
        assert np.array_equal(
            s.train.sequences[s.train.users.index(data.users[u])], data.sequences[u]
        )
    for es in (s.valid, s.test):
        for j, u in enumerate(es.users.tolist()):
            seq = data.sequences[u]
            assert len(es.histories[j]) == int(0.8 * len(seq)) >= 1
            assert np.array_equal(np.concatenate([es.histories[j], es.targets[j]]), seq)
    assert s.train.user_features["age"].tolist() == sorted(train_users)


def test_comirec_exact_thirds_when_all_usable() -> None:
    data = _data([10] * 1234)
    s = comirec_split(data, seed=0)
    assert (s.train.n_users, len(s.valid), len(s.test)) == (1234 - 246, 123, 123)
    assert s.counts["evaluation users without history (left out)"] == 0


def test_comirec_is_deterministic_by_seed() -> None:
    data = _data([10] * 200)
    a, b, c = comirec_split(data, seed=5), comirec_split(data, seed=5), comirec_split(data, seed=6)
    assert a.test.users.tolist() == b.test.users.tolist()
    assert a.train.users == b.train.users
    assert a.test.users.tolist() != c.test.users.tolist()


def test_dispatch() -> None:
    data = _data([5, 6])
    assert split(data, "leave_last_out").protocol == "leave_last_out"
    assert split(data, "comirec", seed=1).protocol == "comirec"
    with pytest.raises(ValueError, match="unknown split protocol"):
        split(data, "random")
