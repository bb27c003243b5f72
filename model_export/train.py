"""Train a user tower with sampled softmax on next-item prediction, with early stopping.

Each training position t >= 1 of a user's sequence is one example: the history is the
previous <= max_len items (right-padded), the label is item t. MIND scores the label against
one user vector made by label-aware attention over the interests; YouTube-DNN has one vector.
The loss is a sampled softmax over the label and negatives shared by the batch (see
:mod:`model_export.sampler`), or a full softmax over the catalogue with ``negatives=0``.
An optional interest-diversity penalty (``diversity_penalty``, :func:`orthogonality_penalty`
on the attention maps or the unit interests) is added to that loss; the logged training loss
includes it.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from model_export.exceptions import ModelExportError
from model_export.model import MASKED_LOGIT, UserTower, unit
from model_export.sampler import PopularityNegativeSampler, item_counts

logger = logging.getLogger(__name__)

INTEREST_SCORING = ("label_aware", "max")


@dataclass
class TrainConfig:
    epochs: int = 30  # most passes over the training positions
    batch_size: int = 256  # examples per step
    lr: float = 1e-3  # Adam learning rate
    weight_decay: float = 0.0  # Adam L2 penalty
    negatives: int = 1000  # negatives shared by a batch; 0 = full softmax over every item
    temperature: float = 1.0  # logits are (user . item) / temperature
    logq: bool = True  # subtract log q(item) of the sampler from every candidate logit
    sampler_alpha: float = 0.75  # negatives drawn with q(i) ∝ (training count + 1) ** alpha
    positions_per_user: int = 0  # 0 = every position each epoch, else a fresh random subset
    patience: int = 3  # validations without improvement before stopping; 0 = never early
    log_every: int = 200  # steps between progress lines
    max_steps: int = 0  # stop after this many steps (0 = no limit); for tests and benches
    threads: int = 0  # torch intra-op threads (0 = torch's default)
    seed: int = 0  # seeds torch, the batch order and the negatives
    # How a multi-interest user scores the label and the negatives: "label_aware" = one vector
    # from label-aware attention (the paper); "max" = each item's best score over the active
    # interests, the score the serving merge ranks by.
    interest_scoring: str = "label_aware"
    # Weight C of the interest-diversity penalty added to the loss (0 = none): ComiRec-SA's
    # attention maps A, or MIND's and ComiRec-DR's unit interests, pushed towards orthonormal
    # rows (see :func:`orthogonality_penalty`). Training only; the tower is unchanged.
    diversity_penalty: float = 0.0
    # ComiRec-SA only: penalise the attention maps scaled to unit length (their squared pairwise
    # cosines: only overlap between heads costs, a head may stay spread) instead of Lin et
    # al.'s raw maps, whose diagonal also pushes every head onto a single behaviour.
    diversity_cosine: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.epochs < 0 or self.negatives < 0:
            raise ModelExportError("batch_size must be >= 1, epochs and negatives >= 0")
        if not self.temperature > 0 or not self.lr > 0:
            raise ModelExportError("temperature and lr must be > 0")
        if self.interest_scoring not in INTEREST_SCORING:
            raise ModelExportError(
                f"interest_scoring {self.interest_scoring!r}: expected one of {INTEREST_SCORING}"
            )
        if not self.diversity_penalty >= 0 or math.isinf(self.diversity_penalty):
            raise ModelExportError(
                f"diversity_penalty must be a finite number >= 0; got {self.diversity_penalty}"
            )
        if self.diversity_cosine and not self.diversity_penalty > 0:
            raise ModelExportError("diversity_cosine needs a diversity_penalty > 0")


@dataclass
class TrainResult:
    """What a run did: steps, time, the validation curve and the best validation score."""

    steps: int = 0
    samples: int = 0
    seconds: float = 0.0
    epochs: int = 0
    best_epoch: int = 0
    best_score: float = math.nan
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["samples_per_second"] = self.samples_per_second
        return data


class TrainingPositions:
    """Every (user, t >= 1) of the training sequences, batched into padded histories."""

    def __init__(self, sequences: Sequence[np.ndarray], max_len: int) -> None:
        lengths = np.array([len(s) for s in sequences], dtype=np.int64)
        self.max_len = max_len
        self.flat = (
            np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences])
            if len(sequences)
            else np.zeros(0, dtype=np.int64)
        )
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        per_user = np.maximum(lengths - 1, 0)  # labels at positions 1..n-1
        self.user = np.repeat(np.arange(len(lengths)), per_user)
        # Position of each label inside its sequence: 1, 2, ..., n-1 for every user in turn.
        first_label = np.repeat(np.cumsum(per_user) - per_user, per_user)
        position = np.arange(len(self.user)) - first_label + 1
        self.start_at = starts[self.user]  # flat index of the sequence's first item
        self.label_at = self.start_at + position  # flat index of the label

    def __len__(self) -> int:
        return len(self.label_at)

    def epoch_order(self, rng: np.random.Generator, per_user: int = 0) -> np.ndarray:
        """Example ids for one epoch, shuffled; at most ``per_user`` per user when > 0."""
        if per_user <= 0:
            return rng.permutation(len(self))
        keys = rng.random(len(self))
        order = np.lexsort((keys, self.user))
        group_start = np.searchsorted(self.user[order], self.user[order], side="left")
        rank = np.arange(len(order)) - group_start
        chosen = order[rank < per_user]
        return chosen[rng.permutation(len(chosen))]

    def batch(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(histories int64 [B, W] right-padded, labels int64 [B]); W = longest in the batch."""
        label_at = self.label_at[ids]
        h = np.minimum(label_at - self.start_at[ids], self.max_len)
        width = max(1, int(h.max())) if len(h) else 1
        cols = np.arange(width)
        at = (label_at - h)[:, None] + cols[None, :]
        valid = cols[None, :] < h[:, None]
        histories = np.where(valid, self.flat[np.where(valid, at, 0)], 0)
        return histories.astype(np.int64), self.flat[label_at]


def sampled_softmax_loss(
    user: torch.Tensor,
    labels: torch.Tensor,
    label_vectors: torch.Tensor,
    negatives: torch.Tensor,
    negative_vectors: torch.Tensor,
    *,
    temperature: float,
    log_q: torch.Tensor | None,
) -> torch.Tensor:
    """Cross-entropy of the label against shared negatives; accidental hits masked out.

    ``log_q`` ([n_items + 1], the sampler's log probabilities) turns on the logQ correction,
    applied to the label's logit and the negatives' alike.
    """
    positive = (user * label_vectors).sum(-1) / temperature
    negative = user @ negative_vectors.T / temperature
    if log_q is not None:
        positive = positive - log_q[labels]
        negative = negative - log_q[negatives].unsqueeze(0)
    hit = negatives.unsqueeze(0) == labels.unsqueeze(1)
    negative = torch.where(hit, torch.full_like(negative, MASKED_LOGIT), negative)
    logits = torch.cat([positive.unsqueeze(1), negative], dim=1)
    return F.cross_entropy(logits, torch.zeros_like(labels))


def best_interest_scores(
    interests: torch.Tensor, mask: torch.Tensor, vectors: torch.Tensor
) -> torch.Tensor:
    """[B, N]: each of ``vectors`` [N, d] scored by each user's best active interest
    (``interests`` [B, K, d], ``mask`` [B, K]); the score the serving merge ranks by."""
    scores = torch.einsum("bkd,nd->bkn", interests, vectors)
    scores = torch.where(mask.unsqueeze(-1), scores, torch.full_like(scores, MASKED_LOGIT))
    return scores.max(dim=1).values


def max_scoring_loss(
    interests: torch.Tensor,
    mask: torch.Tensor,
    labels: torch.Tensor,
    label_vectors: torch.Tensor,
    negatives: torch.Tensor | None,
    negative_vectors: torch.Tensor,
    *,
    temperature: float,
    log_q: torch.Tensor | None,
) -> torch.Tensor:
    """Softmax loss where label and negatives alike are scored by the best active interest.

    With ``negatives`` None, ``negative_vectors`` are the whole catalogue (rows 1..n_items)
    and the loss is the full softmax; otherwise the sampled one with accidental hits masked.
    """
    positive = (
        torch.einsum("bkd,bd->bk", interests, label_vectors)
        .masked_fill(~mask, MASKED_LOGIT)
        .max(dim=1)
        .values
        / temperature
    )
    negative = best_interest_scores(interests, mask, negative_vectors) / temperature
    if negatives is None:
        return F.cross_entropy(negative, labels - 1)
    if log_q is not None:
        positive = positive - log_q[labels]
        negative = negative - log_q[negatives].unsqueeze(0)
    hit = negatives.unsqueeze(0) == labels.unsqueeze(1)
    negative = torch.where(hit, torch.full_like(negative, MASKED_LOGIT), negative)
    logits = torch.cat([positive.unsqueeze(1), negative], dim=1)
    return F.cross_entropy(logits, torch.zeros_like(labels))


def orthogonality_penalty(rows: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``||M (R R^T - I)||_F^2`` per user, averaged over the batch: the penalty of Lin et al.,
    "A Structured Self-attentive Sentence Embedding" (ICLR 2017), on ``rows`` [B, K, n] with
    only the active rows (``mask`` [B, K]) taking part, so an inactive interest of a short
    history is never pushed anywhere.

    On attention maps (rows summing to 1) it is 0 only when each active head attends to one
    behaviour of its own; on unit-norm interest vectors the diagonal is exactly 0 and it is the
    sum of squared pairwise cosines.
    """
    gram = torch.matmul(rows, rows.transpose(1, 2))  # [B, K, K]
    eye = torch.eye(rows.shape[1], dtype=rows.dtype)
    pairs = mask.unsqueeze(2) & mask.unsqueeze(1)
    off = torch.where(pairs, gram - eye, torch.zeros_like(gram))
    return off.pow(2).sum(dim=(1, 2)).mean()


def diversity_rows(
    interests: torch.Tensor, attention: torch.Tensor | None, *, cosine: bool = False
) -> torch.Tensor:
    """What :func:`orthogonality_penalty` regularises: ComiRec-SA's attention maps [B, K, L]
    (the penalty of the paper that introduced them; scaled to unit length when ``cosine``),
    else the unit interest vectors [B, K, d] (MIND, ComiRec-DR: routing has no attention
    matrix to constrain, so the interests themselves are pushed apart)."""
    if attention is not None:
        return unit(attention) if cosine else attention
    return unit(interests)


def check_diversity_penalty(kind: str, interests: int, *, cosine: bool = False) -> None:
    """A diversity penalty needs several interests to push apart, and its cosine form
    attention maps; refuse it otherwise."""
    if kind == "youtube_dnn" or interests < 2:
        raise ModelExportError(
            f"a diversity penalty needs a multi-interest kind with K >= 2; got kind {kind!r} "
            f"with K = {interests}"
        )
    if cosine and kind != "comirec_sa":
        raise ModelExportError(
            f"the cosine form of the diversity penalty is for comirec_sa's attention maps; "
            f"kind {kind!r} is penalised on its unit interests already"
        )


def full_softmax_loss(
    user: torch.Tensor, labels: torch.Tensor, all_items: torch.Tensor, *, temperature: float
) -> torch.Tensor:
    """Cross-entropy over the whole catalogue (``all_items`` rows 0..n_items; 0 is excluded)."""
    logits = user @ all_items[1:].T / temperature
    return F.cross_entropy(logits, labels - 1)


def seed_everything(seed: int, threads: int = 0) -> None:
    """Seed torch and make it deterministic."""
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if threads > 0:
        torch.set_num_threads(threads)


@contextmanager
def flushed_subnormals() -> Iterator[None]:
    """Flush subnormal floats to zero while training (they slow CPU math ~10x).

    The switch is process-wide processor state, so it is turned off again afterwards: left on,
    it breaks every later user of subnormal floats in the process (hypothesis, numpy code).
    """
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


Validator = Callable[[UserTower], float]


@flushed_subnormals()  # a fresh context around every call (contextmanager's decorator form)
def train(
    tower: UserTower,
    sequences: Sequence[np.ndarray],
    config: TrainConfig,
    *,
    validate: Validator | None = None,
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train ``tower`` in place on ``sequences`` (model indices); keep the best validated state.

    ``validate(tower)`` (called in eval mode after each epoch) returns the early-stopping score,
    higher is better; without it the last epoch's weights are kept.
    """
    seed_everything(config.seed, config.threads)
    rng = np.random.default_rng(config.seed)
    n_items = tower.config.n_items
    if config.diversity_penalty > 0:
        check_diversity_penalty(
            tower.config.kind, tower.config.n_interests, cosine=config.diversity_cosine
        )
    positions = TrainingPositions(sequences, tower.config.max_len)
    if len(positions) == 0:
        raise ModelExportError("no training examples: every sequence is shorter than 2 items")
    sampler = None
    log_q = None
    if config.negatives > 0:
        sampler = PopularityNegativeSampler(
            item_counts(sequences, n_items), config.negatives, alpha=config.sampler_alpha, rng=rng
        )
        if config.logq:
            log_q = torch.from_numpy(sampler.log_q)
    optimizer = torch.optim.Adam(tower.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    result = TrainResult()
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs = 0
    started = time.perf_counter()
    window_loss, window_steps, window_samples, window_start = 0.0, 0, 0, started
    logger.info(
        "training examples=%d users=%d items=%d config=%s",
        len(positions),
        len(sequences),
        n_items,
        asdict(config),
    )
    for epoch in range(1, config.epochs + 1):
        tower.train()
        epoch_loss, epoch_steps = 0.0, 0
        order = positions.epoch_order(rng, config.positions_per_user)
        for lo in range(0, len(order), config.batch_size):
            histories, labels_np = positions.batch(order[lo : lo + config.batch_size])
            seq = torch.from_numpy(histories)
            labels = torch.from_numpy(labels_np)
            interests, mask, attention = tower.extract(seq)
            if config.interest_scoring == "max":
                negatives_t = None if sampler is None else torch.from_numpy(sampler.sample())
                if negatives_t is None:
                    label_vectors = tower.item_vectors(labels)
                    negative_vectors = tower.item_vectors()[1:]
                else:
                    vectors = tower.item_vectors(torch.cat([labels, negatives_t]))
                    label_vectors = vectors[: len(labels)]
                    negative_vectors = vectors[len(labels) :]
                loss = max_scoring_loss(
                    interests,
                    mask,
                    labels,
                    label_vectors,
                    negatives_t,
                    negative_vectors,
                    temperature=config.temperature,
                    log_q=log_q,
                )
            elif sampler is None:
                all_items = tower.item_vectors()
                label_vectors = all_items[labels]
                user = tower.user_vector(interests, mask, label_vectors)
                loss = full_softmax_loss(user, labels, all_items, temperature=config.temperature)
            else:
                negatives = torch.from_numpy(sampler.sample())
                vectors = tower.item_vectors(torch.cat([labels, negatives]))
                label_vectors, negative_vectors = vectors[: len(labels)], vectors[len(labels) :]
                user = tower.user_vector(interests, mask, label_vectors)
                loss = sampled_softmax_loss(
                    user,
                    labels,
                    label_vectors,
                    negatives,
                    negative_vectors,
                    temperature=config.temperature,
                    log_q=log_q,
                )
            if config.diversity_penalty > 0:
                rows = diversity_rows(interests, attention, cosine=config.diversity_cosine)
                loss = loss + config.diversity_penalty * orthogonality_penalty(rows, mask)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            result.steps += 1
            result.samples += len(labels)
            step_loss = float(loss.detach())
            window_loss += step_loss
            epoch_loss += step_loss
            epoch_steps += 1
            window_steps += 1
            window_samples += len(labels)
            if config.log_every and result.steps % config.log_every == 0:
                now = time.perf_counter()
                logger.info(
                    "step=%d epoch=%d loss=%.4f samples_per_s=%.0f elapsed_s=%.1f",
                    result.steps,
                    epoch,
                    window_loss / window_steps,
                    window_samples / max(now - window_start, 1e-9),
                    now - started,
                )
                window_loss, window_steps, window_samples, window_start = 0.0, 0, 0, now
            if config.max_steps and result.steps >= config.max_steps:
                break
        result.epochs = epoch
        result.seconds = time.perf_counter() - started
        record: dict[str, Any] = {
            "epoch": epoch,
            "steps": result.steps,
            "elapsed_s": round(result.seconds, 2),
            # Mean training loss of the epoch: the train side of the train/validation curves.
            "train_loss": round(epoch_loss / max(epoch_steps, 1), 5),
        }
        if validate is not None:
            tower.eval()
            score = float(validate(tower))
            record["valid"] = score
            if not score <= result.best_score:  # also true while best_score is NaN
                result.best_score, result.best_epoch = score, epoch
                best_state = copy.deepcopy(tower.state_dict())
                bad_epochs = 0
            else:
                bad_epochs += 1
        result.history.append(record)
        logger.info("epoch %s", " ".join(f"{k}={v}" for k, v in record.items()))
        if on_epoch is not None:
            on_epoch(epoch, record)
        if config.max_steps and result.steps >= config.max_steps:
            break
        if validate is not None and config.patience and bad_epochs >= config.patience:
            result.stopped_early = True
            logger.info(
                "early stop epoch=%d best_epoch=%d best=%.4f",
                epoch,
                result.best_epoch,
                result.best_score,
            )
            break
    if best_state is not None:
        tower.load_state_dict(best_state)
    tower.eval()
    result.seconds = time.perf_counter() - started
    return result


class TorchUserEncoder:
    """A torch tower as a :class:`~model_export.retrieval.UserEncoder` (numpy in, numpy out)."""

    def __init__(self, tower: UserTower) -> None:
        self.tower = tower

    def __call__(self, item_seq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.tower.eval()
        with torch.no_grad():
            interests, mask = self.tower(torch.from_numpy(np.asarray(item_seq, dtype=np.int64)))
        return interests.numpy(), mask.numpy()
