"""MIND and its baselines in torch: the user tower exported to serving, plus the training heads.

Implements Li et al., "Multi-Interest Network with Dynamic Routing for Recommendation at Tmall"
(CIKM 2019): item id and side-feature embeddings average-pooled into one item vector;
behaviour-to-interest (B2I) dynamic routing with one shared bilinear map, fixed Gaussian
initial routing logits, softmax over interests, squash; a dynamic interest count
K'u = max(1, min(K, floor(log2 n))); optional user-profile embeddings concatenated to each
capsule before two ReLU layers; label-aware attention for training. Baselines in the same
code: a YouTube-DNN style single vector (Covington et al., RecSys 2016: mean-pooled behaviours
and an MLP) and MIND with K = 1 (``MindConfig(k=1)``).

Everything in the tower is written so the exported ONNX graph is exact and deterministic: the
routing loop is unrolled, masks use finite values (never -inf), the squash avoids 0/0, and the
initial routing logits are a stored buffer (one row per item, so a user's interests depend on
the multiset of behaviours only, not on where they sit in the window).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model_export.exceptions import ModelExportError

KINDS = ("mind", "youtube_dnn")
# Finite stand-in for -inf in masked logits: exp(-1e9 - max) underflows to exactly 0 in float32
# and stays finite in every exporter and runtime.
MASKED_LOGIT = -1e9


@dataclass
class MindConfig:
    kind: str = "mind"  # "mind" (B2I routing) or "youtube_dnn" (mean pooling + MLP, one vector)
    n_items: int = 0  # catalogue size; model indices 1..n_items, 0 is padding
    dim: int = 64  # width d of item embeddings and of interests
    k: int = 4  # most interests per user K (youtube_dnn always has 1)
    routing_iterations: int = 3  # B2I routing iterations, unrolled in the graph
    routing_init_std: float = 1.0  # sigma of the fixed Gaussian initial routing logits
    routing_detach: bool = True  # no gradient through the agreement of early iterations
    dynamic_k: bool = True  # K'u = max(1, min(K, floor(log2 n))) active interests, else K
    max_len: int = 50  # behaviours per user the tower is fed (the caller keeps the newest)
    head_hidden: int = 0  # hidden width of the two-layer ReLU head; 0 = 4 * dim, -1 = no head
    pow_p: float = 1.0  # label-aware attention sharpness p (inf = hard attention), training only
    # Side features of items: name -> (vocabulary size incl. 0, values per item). The id tables
    # themselves are buffers of the model, so the exported tower needs only item_seq.
    item_features: dict[str, list[int]] = field(default_factory=dict)
    # User-profile features: name -> vocabulary size incl. 0. Non-empty means the tower takes
    # a second input and cannot be exported to the serving contract (the stream has no profiles).
    user_features: dict[str, int] = field(default_factory=dict)
    seed: int = 0  # seed of the fixed routing-logit buffer and of parameter init

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ModelExportError(f"model kind {self.kind!r}: expected one of {KINDS}")
        if self.n_items < 1 or self.dim < 1 or self.k < 1 or self.routing_iterations < 1:
            raise ModelExportError(
                f"n_items, dim, k and routing_iterations must be >= 1; got {self.n_items}, "
                f"{self.dim}, {self.k}, {self.routing_iterations}"
            )
        if self.max_len < 1:
            raise ModelExportError(f"max_len must be >= 1; got {self.max_len}")
        if not self.pow_p >= 0:  # also rejects NaN
            raise ModelExportError(f"pow_p must be >= 0 (inf = hard attention); got {self.pow_p}")

    @property
    def n_interests(self) -> int:
        return 1 if self.kind == "youtube_dnn" else self.k

    @property
    def hidden(self) -> int:
        return 4 * self.dim if self.head_hidden == 0 else self.head_hidden

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        # JSON has no infinity; keep the manifest and checkpoint config strictly valid JSON.
        data["pow_p"] = "inf" if math.isinf(self.pow_p) else self.pow_p
        return json.loads(json.dumps(data))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MindConfig:
        values = dict(data)
        values["pow_p"] = float(values.get("pow_p", 1.0))
        values["item_features"] = {
            k: [int(x) for x in v] for k, v in values.get("item_features", {}).items()
        }
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in values.items() if k in known})


def squash(s: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Capsule squash ``|s|^2 / (1 + |s|^2) * s / |s|``, written so that s = 0 gives 0, not 0/0.

    The norm is taken of ``max(|s|^2, eps)``: a clamp, not ``|s|^2 + eps``, because the dynamo
    exporter's graph optimiser drops an ``Add`` of a constant this small (it tests ``allclose``
    to 0) and brings the 0/0 back. The clamp also has zero gradient at s = 0.
    """
    n2 = (s * s).sum(-1, keepdim=True)
    return s * (n2 / (1.0 + n2)) / torch.sqrt(torch.clamp(n2, min=eps))


def interest_count(n: torch.Tensor, k: int) -> torch.Tensor:
    """K'u = max(1, min(k, floor(log2 n))) for int64 behaviour counts ``n`` (0 gives 1).

    Computed with integer comparisons (floor(log2 n) >= j iff n >= 2**j), so it is exact at
    powers of two in every runtime, unlike a float log2.
    """
    thresholds = torch.pow(2, torch.arange(1, k + 1, device=n.device, dtype=torch.int64))
    count = (n.unsqueeze(-1) >= thresholds).sum(-1)
    return count.clamp(min=1)


def label_aware_weights(scores: torch.Tensor, mask: torch.Tensor, p: float) -> torch.Tensor:
    """Label-aware attention weights over interests: softmax(p * scores) over active ones.

    The paper writes softmax(pow(V e, p)). A real power of a signed inner product is undefined
    for non-integer p, and for scores below 1 it tends to uniform, not to hard attention, as
    p grows. This tempered form keeps what the paper uses p for (p = 0 uniform, p = 1 the plain
    softmax of the scores, larger p sharper, p = inf hard attention on the argmax, ties shared
    evenly) and is finite for every p and every score. Masked interests get weight exactly 0.
    """
    scores = torch.where(mask, scores, torch.zeros_like(scores))
    top = torch.where(mask, scores, torch.full_like(scores, -torch.finfo(scores.dtype).max))
    top = top.max(dim=-1, keepdim=True).values
    if math.isinf(p):
        hard = (scores >= top) & mask
        weights = hard.to(scores.dtype)
        return weights / weights.sum(-1, keepdim=True).clamp(min=1.0)
    # scores - top <= 0 on active entries; a huge p can only underflow exp() to 0, and the
    # argmax keeps exp(0) = 1, so the denominator is >= 1.
    z = (scores - top) * p
    z = torch.where(mask, z, torch.full_like(z, MASKED_LOGIT))
    z = torch.clamp(z, min=MASKED_LOGIT)
    e = torch.exp(z) * mask.to(scores.dtype)
    return e / e.sum(-1, keepdim=True).clamp(min=torch.finfo(scores.dtype).tiny)


class ItemEncoder(nn.Module):
    """Item id embedding plus side-feature embeddings, average-pooled into one d-dim vector.

    A multi-valued feature is first mean-pooled over its non-zero values; the id and each
    feature the item has then count once in the average. Index 0 (padding) maps to zeros.
    """

    def __init__(self, config: MindConfig, tables: dict[str, np.ndarray] | None = None) -> None:
        super().__init__()
        d = config.dim
        self.n_items = config.n_items
        self.id_embedding = nn.Embedding(config.n_items + 1, d, padding_idx=0)
        self.feature_names = sorted(config.item_features)
        self.feature_embeddings = nn.ModuleDict()
        tables = tables or {}
        for name in self.feature_names:
            size, width = config.item_features[name]
            self.feature_embeddings[name] = nn.Embedding(size, d, padding_idx=0)
            table = tables.get(name)
            if table is None:
                table = np.zeros((config.n_items + 1, width), dtype=np.int64)
            table = np.asarray(table, dtype=np.int64)
            if table.shape != (config.n_items + 1, width):
                raise ModelExportError(
                    f"item feature {name!r} table has shape {table.shape}; expected "
                    f"({config.n_items + 1}, {width}) = (n_items + 1, width)"
                )
            if table.size and (table.min() < 0 or table.max() >= size):
                raise ModelExportError(
                    f"item feature {name!r} has ids outside [0, {size}); check feature_sizes"
                )
            table = table.copy()
            table[0] = 0  # the padding item has no features
            self.register_buffer(f"table_{name}", torch.from_numpy(table))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Item vectors for model indices ``idx`` of any shape -> ``idx.shape + (d,)``."""
        total: torch.Tensor = self.id_embedding(idx)
        if not self.feature_names:
            return total
        parts = torch.ones_like(idx, dtype=total.dtype)
        for name in self.feature_names:
            values = getattr(self, f"table_{name}")[idx]  # [..., width]
            present = (values > 0).to(total.dtype)
            count = present.sum(-1, keepdim=True)
            pooled = self.feature_embeddings[name](values).sum(-2) / count.clamp(min=1.0)
            total = total + pooled
            parts = parts + (count.squeeze(-1) > 0).to(total.dtype)
        return total / parts.unsqueeze(-1)

    def all_items(self) -> torch.Tensor:
        """Vectors of model indices 0..n_items (row 0 is the zero padding vector)."""
        idx = torch.arange(self.n_items + 1, device=self.id_embedding.weight.device)
        return self.forward(idx)


class B2IRouting(nn.Module):
    """Behaviour-to-interest dynamic routing with one shared bilinear map S (paper, Alg. 1).

    Routing logits b_ij start from a fixed Gaussian buffer (one row per item index, drawn once
    at construction), the weights are a softmax over the active interests of each behaviour,
    padding behaviours get weight 0, and logits grow by agreement u_i . c_j. With
    ``routing_detach`` (ComiRec's practice; the paper says nothing) agreement in all but the
    last iteration uses a detached û, so gradients flow through the final weighted sum only and
    S gets no signal to sharpen the routing; without it gradients flow through every iteration.
    """

    routing_init: torch.Tensor

    def __init__(self, config: MindConfig, generator: torch.Generator) -> None:
        super().__init__()
        d = config.dim
        self.k = config.k
        self.iterations = config.routing_iterations
        self.dynamic_k = config.dynamic_k
        self.detach = config.routing_detach
        self.bilinear = nn.Linear(d, d, bias=False)
        nn.init.normal_(self.bilinear.weight, std=d**-0.5, generator=generator)
        init = torch.randn(config.n_items + 1, config.k, generator=generator)
        self.register_buffer("routing_init", init * config.routing_init_std)

    def forward(
        self, item_seq: torch.Tensor, behaviours: torch.Tensor, seq_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``item_seq`` [B, L] int64, ``behaviours`` [B, L, d], ``seq_mask`` [B, L] bool ->
        (capsules [B, K, d], capsule mask [B, K] bool)."""
        n = seq_mask.sum(-1)
        active = interest_count(n, self.k) if self.dynamic_k else torch.full_like(n, self.k)
        capsule_mask = torch.arange(self.k, device=n.device).unsqueeze(0) < active.unsqueeze(-1)
        weight_mask = seq_mask.unsqueeze(-1).to(behaviours.dtype)  # [B, L, 1]
        u_hat = self.bilinear(behaviours)  # [B, L, d]
        u_fixed = u_hat.detach() if self.detach else u_hat
        logits = self.routing_init[item_seq]  # [B, L, K]
        capsules = torch.zeros_like(u_hat[:, : self.k])
        allowed = capsule_mask.unsqueeze(1)  # [B, 1, K]
        for it in range(self.iterations):
            masked = torch.where(allowed, logits, torch.full_like(logits, MASKED_LOGIT))
            w = torch.softmax(masked, dim=-1) * weight_mask  # [B, L, K]
            last = it == self.iterations - 1
            u = u_hat if last else u_fixed
            capsules = squash(torch.matmul(w.transpose(1, 2), u))  # [B, K, d]
            if not last:
                logits = logits + torch.matmul(u_fixed, capsules.transpose(1, 2))  # [B, L, K]
        return capsules, capsule_mask


class InterestHead(nn.Module):
    """Two ReLU layers on each capsule (optionally concatenated with the user profile).

    The output layer is linear: interests are scored by inner product against signed item
    embeddings, and a final ReLU would confine them to the non-negative orthant.
    """

    def __init__(self, config: MindConfig, profile_dim: int) -> None:
        super().__init__()
        d = config.dim
        self.hidden = nn.Linear(d + profile_dim, config.hidden)
        self.out = nn.Linear(config.hidden, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.hidden(x)))


class UserProfile(nn.Module):
    """Sum of user-profile feature embeddings (one id per feature)."""

    def __init__(self, config: MindConfig) -> None:
        super().__init__()
        self.names = sorted(config.user_features)
        self.embeddings = nn.ModuleDict(
            {
                name: nn.Embedding(config.user_features[name], config.dim, padding_idx=0)
                for name in self.names
            }
        )

    def forward(self, profile: torch.Tensor) -> torch.Tensor:
        """``profile`` int64 [B, n_features] in ``sorted(names)`` order -> [B, d]."""
        total = self.embeddings[self.names[0]](profile[:, 0])
        for j, name in enumerate(self.names[1:], start=1):
            total = total + self.embeddings[name](profile[:, j])
        return total


class UserTower(nn.Module):
    """MIND or YouTube-DNN: behaviours -> (interests [B, K, d], interest mask [B, K]).

    ``forward(item_seq)`` is exactly what is exported: item_seq int64 [B, L], right-padded with
    0, any L >= 1. ``item_vectors`` gives the same pooled representation used for behaviours,
    so labels, negatives and the exported item embeddings share it.
    """

    def __init__(self, config: MindConfig, tables: dict[str, np.ndarray] | None = None) -> None:
        super().__init__()
        self.config = config
        generator = torch.Generator().manual_seed(config.seed)
        self.items = ItemEncoder(config, tables)
        feature_tables = [self.items.id_embedding.weight]
        feature_tables += [e.weight for e in self.items.feature_embeddings.values()]  # type: ignore[misc]
        with torch.no_grad():
            for weight in feature_tables:
                nn.init.normal_(weight, std=config.dim**-0.5, generator=generator)
                weight[0].zero_()  # padding / "no value" stays the zero vector
        self.routing = B2IRouting(config, generator) if config.kind == "mind" else None
        self.profile = UserProfile(config) if config.user_features else None
        self.head: InterestHead | None = None
        if config.head_hidden >= 0 or config.kind == "youtube_dnn":
            self.head = InterestHead(config, config.dim if self.profile is not None else 0)
            for layer in (self.head.hidden, self.head.out):
                nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
                nn.init.zeros_(layer.bias)

    @property
    def exportable(self) -> bool:
        return self.profile is None

    def item_vectors(self, idx: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled item vectors for ``idx`` (all of 0..n_items when None)."""
        return self.items.all_items() if idx is None else self.items(idx)

    def forward(
        self, item_seq: torch.Tensor, profile: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        seq_mask = item_seq > 0
        behaviours = self.items(item_seq)
        if self.routing is not None:
            capsules, capsule_mask = self.routing(item_seq, behaviours, seq_mask)
        else:
            weights = seq_mask.to(behaviours.dtype).unsqueeze(-1)
            n = weights.sum(1).clamp(min=1.0)
            capsules = ((behaviours * weights).sum(1) / n).unsqueeze(1)
            capsule_mask = torch.ones_like(seq_mask[:, :1])
        if self.head is None:
            return capsules, capsule_mask
        x = capsules
        if self.profile is not None:
            if profile is None:
                raise ModelExportError("this tower was built with user features; pass profile")
            user = self.profile(profile).unsqueeze(1).expand(-1, capsules.shape[1], -1)
            x = torch.cat([capsules, user], dim=-1)
        interests = self.head(x)
        # Inactive capsules are zero vectors; keep them exactly zero after the biased head.
        interests = interests * capsule_mask.unsqueeze(-1).to(interests.dtype)
        return interests, capsule_mask

    def user_vector(
        self, interests: torch.Tensor, mask: torch.Tensor, label_vectors: torch.Tensor
    ) -> torch.Tensor:
        """Label-aware attention (training only): one vector per user for its label [B, d]."""
        scores = torch.einsum("bkd,bd->bk", interests, label_vectors)
        weights = label_aware_weights(scores, mask, self.config.pow_p)
        return torch.einsum("bk,bkd->bd", weights, interests)


def build_tower(config: MindConfig, tables: dict[str, np.ndarray] | None = None) -> UserTower:
    """A fresh tower for ``config`` with the given item-feature id tables."""
    return UserTower(config, tables)


def config_for(
    interactions_feature_sizes: dict[str, int],
    item_features: dict[str, np.ndarray],
    **overrides: Any,
) -> MindConfig:
    """A config whose ``item_features`` describe the given tables and vocabularies."""
    features = {
        name: [int(interactions_feature_sizes[name]), int(table.shape[1])]
        for name, table in item_features.items()
    }
    return MindConfig(item_features=features, **overrides)
