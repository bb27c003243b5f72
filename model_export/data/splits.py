"""Train/validation/test splits of :class:`Interactions` (pure functions, seeded):
leave-last-out (SASRec / S3-Rec) and the ComiRec user split (Cen et al., KDD 2020).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from model_export.dataset import Interactions

LEAVE_LAST_OUT = "leave_last_out"
COMIREC = "comirec"
PROTOCOLS = (LEAVE_LAST_OUT, COMIREC)


@dataclass(frozen=True)
class EvalSet:
    """Users to evaluate: the behaviours a model may see and the items it should retrieve.

    ``users[j]`` is the position in the source's ``Interactions.users`` of case ``j``;
    ``histories[j]`` holds model indices in time order (the whole history: an evaluator keeps
    the most recent ``max_len``); ``targets[j]`` the held-out items in time order (repeats
    possible in logs with repeat behaviours).
    """

    users: np.ndarray
    histories: list[np.ndarray]
    targets: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.histories)


@dataclass(frozen=True)
class Split:
    """A protocol's training data (same item vocabulary and features as the source) and its
    validation and test cases; ``counts`` says how many users were handled specially and why.
    """

    protocol: str
    train: Interactions
    valid: EvalSet
    test: EvalSet
    counts: dict[str, int] = field(default_factory=dict)


def leave_last_out(data: Interactions, *, min_len: int = 3) -> Split:
    """Per user: the last behaviour is the test target, the second-to-last the validation
    target, and the rest is the training sequence.

    The validation history is ``seq[:-2]``, the test history ``seq[:-1]`` (it includes the
    validation target, as in SASRec/S3-Rec). Users with fewer than ``min_len`` (>= 3)
    behaviours cannot give both targets: their whole sequence goes to training and they are
    not evaluated (counted in ``counts``).
    """
    if min_len < 3:
        raise ValueError("leave-last-out needs min_len >= 3 (history, validation and test)")
    lengths = np.array([len(s) for s in data.sequences], dtype=np.int64)
    evaluated = np.flatnonzero(lengths >= min_len)
    short = int(len(lengths) - len(evaluated))
    cut = np.where(lengths >= min_len, lengths - 2, lengths)
    train = _subset(data, np.arange(data.n_users), cut)
    seqs = [data.sequences[u] for u in evaluated]
    valid = EvalSet(evaluated, [s[:-2] for s in seqs], [s[-2:-1] for s in seqs])
    test = EvalSet(evaluated.copy(), [s[:-1] for s in seqs], [s[-1:] for s in seqs])
    return Split(
        LEAVE_LAST_OUT,
        train,
        valid,
        test,
        {f"users with fewer than {min_len} behaviours (train only)": short},
    )


def comirec_split(
    data: Interactions,
    *,
    seed: int = 0,
    fold: int = 0,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    history_share: float = 0.8,
) -> Split:
    """Split users (not behaviours) by a seeded shuffle into train/validation/test.

    Training users keep their full sequences. For a validation or test user the first
    ``floor(history_share * len)`` behaviours are the history the interests are inferred
    from and the rest are the targets. Validation and test get ``floor(fraction * n_users)``
    users each, training the rest; an evaluation user with no history (one behaviour) is
    left out and counted. Users keep source order within each part.

    ``fold`` picks which users of the seeded shuffle are held out, for cross-validation over
    the user split: see :func:`comirec_fold_users`.
    """
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError("fractions must be three non-negative shares summing to 1")
    if not 0.0 < history_share < 1.0:
        raise ValueError("history_share must be in (0, 1)")
    train_users, valid_users, test_users = comirec_fold_users(
        data.n_users, seed=seed, fold=fold, fractions=fractions
    )
    parts = (valid_users, test_users)
    lengths = np.array([len(s) for s in data.sequences], dtype=np.int64)
    train = _subset(data, train_users, lengths[train_users])

    eval_sets = []
    unusable = 0
    for users in parts:
        keep, histories, targets = [], [], []
        for u in users.tolist():
            seq = data.sequences[u]
            k = int(len(seq) * history_share)
            if k < 1:
                unusable += 1
                continue
            keep.append(u)
            histories.append(seq[:k])
            targets.append(seq[k:])
        eval_sets.append(EvalSet(np.array(keep, dtype=np.int64), histories, targets))
    return Split(
        COMIREC,
        train,
        eval_sets[0],
        eval_sets[1],
        {"evaluation users without history (left out)": unusable},
    )


def comirec_n_folds(n_users: int, fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> int:
    """How many folds the ComiRec user split has: ``round(1 / test fraction)`` (10 for the
    default 8:1:1), fewer when that many disjoint test blocks of ``floor(fraction * n)`` users
    do not fit in ``n_users``; 1 when there is no test block."""
    n_test = int(n_users * fractions[2])
    if n_test == 0:
        return 1
    return max(1, min(round(1.0 / fractions[2]), n_users // n_test))


def comirec_fold_users(
    n_users: int,
    *,
    seed: int = 0,
    fold: int = 0,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted (train, validation, test) user indices of one fold of the ComiRec user split.

    One seeded permutation ``order`` of the users is cut into blocks of ``n_test`` users
    counted from its end: fold ``f`` tests the users ``order[n - (f+1)*n_test : n - f*n_test]``
    and validates on the ``n_valid`` users just before them, wrapping cyclically to the end
    of ``order``; everyone else trains. This is the fold-0 slicing
    (train ``order[:n_train]``, validation the next ``n_valid``, test the last ``n_test``)
    applied to ``order`` rotated by ``f * n_test``, so fold 0 is the split without folds.
    The test parts of folds ``0 .. F-1`` (:func:`comirec_n_folds`) are disjoint; the
    ``n - F * n_test`` users at the start of ``order`` (fewer than ``F`` for the default
    fractions) are never test users: they train in every fold, and validate in a fold whose
    validation block wraps onto them.
    """
    n_folds = comirec_n_folds(n_users, fractions)
    if not 0 <= fold < n_folds:
        raise ValueError(
            f"fold must be in [0, {n_folds}) for {n_users} users with test fraction "
            f"{fractions[2]:g}; got {fold}"
        )
    n_valid = int(n_users * fractions[1])
    n_test = int(n_users * fractions[2])
    n_train = n_users - n_valid - n_test
    order = np.roll(np.random.default_rng(seed).permutation(n_users), fold * n_test)
    return (
        np.sort(order[:n_train]),
        np.sort(order[n_train : n_train + n_valid]),
        np.sort(order[n_train + n_valid :]),
    )


def split(data: Interactions, protocol: str, *, seed: int = 0, fold: int = 0) -> Split:
    """Dispatch to :func:`leave_last_out` or :func:`comirec_split` by name; ``fold`` is the
    ComiRec user-split fold (leave-last-out has no user split and refuses a non-zero fold)."""
    if protocol == LEAVE_LAST_OUT:
        if fold != 0:
            raise ValueError(f"fold {fold}: {LEAVE_LAST_OUT} has no user split to fold")
        return leave_last_out(data)
    if protocol == COMIREC:
        return comirec_split(data, seed=seed, fold=fold)
    raise ValueError(f"unknown split protocol {protocol!r}: expected one of {PROTOCOLS}")


def _subset(data: Interactions, users: np.ndarray, lengths: np.ndarray) -> Interactions:
    """``data`` restricted to ``users``, each sequence cut to its first ``lengths[j]`` items."""
    users_list = users.tolist()
    cuts = lengths.tolist()
    return dataclasses.replace(
        data,
        users=[data.users[u] for u in users_list],
        sequences=[data.sequences[u][:c] for u, c in zip(users_list, cuts, strict=True)],
        timestamps=None
        if data.timestamps is None
        else [data.timestamps[u][:c] for u, c in zip(users_list, cuts, strict=True)],
        user_features={name: values[users] for name, values in data.user_features.items()},
    )
