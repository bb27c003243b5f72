"""Splits: leave-last-out and the ComiRec user split (properties and determinism)."""

from __future__ import annotations

import numpy as np
import pytest

from model_export.data.splits import (
    comirec_fold_users,
    comirec_n_folds,
    comirec_split,
    leave_last_out,
    split,
)
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


def _old_comirec_slices(n: int, seed: int) -> tuple[np.ndarray, ...]:
    """The user split as it was cut before folds existed, kept here to pin fold 0 to it."""
    order = np.random.default_rng(seed).permutation(n)
    n_valid = int(n * 0.1)
    n_test = int(n * 0.1)
    n_train = n - n_valid - n_test
    return (
        np.sort(order[:n_train]),
        np.sort(order[n_train : n_train + n_valid]),
        np.sort(order[n_train + n_valid :]),
    )


@pytest.mark.parametrize("n", [10, 19, 99, 610, 1090, 1097, 1234])
@pytest.mark.parametrize("seed", [0, 3])
def test_fold_zero_is_the_split_without_folds(n: int, seed: int) -> None:
    got = comirec_fold_users(n, seed=seed, fold=0)
    for part, old in zip(got, _old_comirec_slices(n, seed), strict=True):
        assert np.array_equal(part, old)
    data = _data([5] * n)
    a, b = comirec_split(data, seed=seed), comirec_split(data, seed=seed, fold=0)
    assert a.train.users == b.train.users
    assert a.test.users.tolist() == b.test.users.tolist() == got[2].tolist()
    assert a.valid.users.tolist() == b.valid.users.tolist() == got[1].tolist()


@pytest.mark.parametrize("n", [19, 99, 610, 1097])
def test_folds_test_parts_are_disjoint_and_cover_all_but_the_remainder(n: int) -> None:
    folds = comirec_n_folds(n)
    assert folds == 10
    n_test = int(n * 0.1)
    tests = []
    for f in range(folds):
        train, valid, test = comirec_fold_users(n, seed=1, fold=f)
        # Every fold is a partition of the users with the usual sizes.
        assert (len(train), len(valid), len(test)) == (n - 2 * n_test, n_test, n_test)
        assert np.array_equal(np.sort(np.concatenate([train, valid, test])), np.arange(n))
        tests.append(set(test.tolist()))
    covered = set().union(*tests)
    assert sum(len(t) for t in tests) == len(covered) == folds * n_test
    # The remainder: the first n - F * n_test users of the shuffle are never tested.
    order = np.random.default_rng(1).permutation(n)
    assert set(range(n)) - covered == set(order[: n - folds * n_test].tolist())


def test_fold_count_fits_the_test_blocks() -> None:
    assert comirec_n_folds(1000, (0.5, 0.25, 0.25)) == 4
    # round(1 / 0.35) = 3 blocks of 35 would not fit in 100 users: 2 folds.
    assert comirec_n_folds(100, (0.3, 0.35, 0.35)) == 2
    assert comirec_n_folds(5) == 1  # no test user at all: only fold 0


def test_bad_fold_is_refused() -> None:
    with pytest.raises(ValueError, match=r"fold must be in \[0, 10\).*got 10"):
        comirec_fold_users(100, fold=10)
    with pytest.raises(ValueError, match="got -1"):
        comirec_split(_data([5] * 100), fold=-1)
    with pytest.raises(ValueError, match="leave_last_out has no user split"):
        split(_data([5] * 100), "leave_last_out", fold=1)
    assert split(_data([5] * 100), "comirec", fold=9).protocol == "comirec"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--split-fold=1"], "split fold 1 needs protocol comirec: leave_last_out has no user"),
        (["--protocol=comirec", "--split-fold=-1"], "split fold must be >= 0; got -1"),
        (["--protocol=comirec", "--split-fold=10"], r"fold must be in [0, 10)"),
    ],
)
def test_cli_refuses_a_bad_split_fold_before_training(flags, message, tmp_path, capsys):
    from mindstream.app.cli import main

    code = main(
        ["train", "--no-export", f"--run-dir={tmp_path / 'run'}", "--synthetic-users=200", *flags]
    )
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing was trained


def test_data_spec_records_the_fold() -> None:
    from model_export.exceptions import ModelExportError
    from model_export.workflow import DataSpec

    spec = DataSpec(path="x", protocol="comirec", split_fold=3)
    assert DataSpec.from_json(spec.to_json()) == spec
    # A checkpoint saved before folds existed was trained on fold 0.
    old = {k: v for k, v in spec.to_json().items() if k != "split_fold"}
    assert DataSpec.from_json(old).split_fold == 0
    with pytest.raises(ModelExportError, match="needs protocol comirec"):
        DataSpec(path="x", split_fold=3)
