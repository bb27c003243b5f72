"""MIND and its baselines in torch: the user tower exported to serving, plus the training heads.

Implements Li et al., "Multi-Interest Network with Dynamic Routing for Recommendation at Tmall"
(CIKM 2019): item id and side-feature embeddings average-pooled into one item vector;
behaviour-to-interest (B2I) dynamic routing with one shared bilinear map, fixed Gaussian
initial routing logits, softmax over interests, squash; a dynamic interest count
K'u = max(1, min(K, floor(log2 n))); optional user-profile embeddings concatenated to each
capsule before two ReLU layers; label-aware attention for training. Baselines in the same
code: a YouTube-DNN style single vector (Covington et al., RecSys 2016: mean-pooled behaviours
and an MLP) and MIND with K = 1 (``MindConfig(k=1)``). ComiRec's two extractors (Cen et al.,
"Controllable Multi-Interest Framework for Recommendation", KDD 2020) share the rest of the
tower: ComiRec-DR (``comirec_dr``: dynamic routing with one map per interest and zero initial
logits) and ComiRec-SA (``comirec_sa``: K attention heads over the behaviours plus a
recency-position embedding).

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

KINDS = ("mind", "youtube_dnn", "comirec_dr", "comirec_sa")
ROUTING_KINDS = ("mind", "comirec_dr")
# Finite stand-in for -inf in masked logits: exp(-1e9 - max) underflows to exactly 0 in float32
# and stays finite in every exporter and runtime.
MASKED_LOGIT = -1e9


@dataclass
class MindConfig:
    # "mind" (B2I routing, shared map), "youtube_dnn" (mean pooling + MLP, one vector),
    # "comirec_dr" (routing, one map per interest) or "comirec_sa" (self-attentive heads)
    kind: str = "mind"
    n_items: int = 0  # catalogue size; model indices 1..n_items, 0 is padding
    dim: int = 64  # width d of item embeddings and of interests
    k: int = 4  # most interests per user K (youtube_dnn always has 1)
    routing_iterations: int = 3  # B2I routing iterations, unrolled in the graph
    routing_init_std: float = 1.0  # sigma of the fixed Gaussian initial routing logits
    routing_detach: bool = True  # no gradient through the agreement of early iterations
    # Agreement added to the routing logits: 0 = the inner product u . c of the paper; s > 0 =
    # s * cos(u, c), bounded, so it can outweigh the initial logits whatever the norms are.
    routing_cosine_scale: float = 0.0
    dynamic_k: bool = True  # K'u = max(1, min(K, floor(log2 n))) active interests, else K
    # > 0: also cap K'u at floor(n / m), so every active interest has about m behaviours.
    behaviours_per_interest: int = 0
    attention_hidden: int = 0  # comirec_sa: hidden width of the attention MLP; 0 = 4 * dim
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
        if not self.pow_p > 0:  # also rejects NaN
            raise ModelExportError(f"pow_p must be > 0 (inf = hard attention); got {self.pow_p}")
        if not self.routing_cosine_scale >= 0 or math.isinf(self.routing_cosine_scale):
            raise ModelExportError(
                "routing_cosine_scale must be a finite number >= 0; got "
                f"{self.routing_cosine_scale}"
            )
        if self.behaviours_per_interest < 0 or self.attention_hidden < 0:
            raise ModelExportError(
                "behaviours_per_interest and attention_hidden must be >= 0; got "
                f"{self.behaviours_per_interest}, {self.attention_hidden}"
            )

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


def interest_count(n: torch.Tensor, k: int, per_interest: int = 0) -> torch.Tensor:
    """K'u = max(1, min(k, floor(log2 n))) for int64 behaviour counts ``n`` (0 gives 1); with
    ``per_interest`` = m > 0 also at most floor(n / m).

    Computed with integer comparisons (floor(log2 n) >= j iff n >= 2**j, floor(n / m) >= j
    iff n >= j * m), so it is exact at the boundaries in every runtime, unlike a float log2.
    """
    thresholds = torch.pow(2, torch.arange(1, k + 1, device=n.device, dtype=torch.int64))
    if per_interest > 0:
        per = torch.arange(1, k + 1, device=n.device, dtype=torch.int64) * per_interest
        thresholds = torch.maximum(thresholds, per)
    count = (n.unsqueeze(-1) >= thresholds).sum(-1)
    return count.clamp(min=1)


def active_interest_mask(seq_mask: torch.Tensor, config: MindConfig) -> torch.Tensor:
    """bool [B, K]: the first K'u interests of each user (all K without ``dynamic_k``)."""
    n = seq_mask.sum(-1)
    k = config.n_interests
    if config.dynamic_k:
        active = interest_count(n, k, config.behaviours_per_interest)
    else:
        active = torch.full_like(n, k)
    return torch.arange(k, device=n.device).unsqueeze(0) < active.unsqueeze(-1)


def unit(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``x / |x|`` along the last axis; 0 stays 0 (a clamp, exact in ONNX, as in :func:`squash`)."""
    return x / torch.sqrt(torch.clamp((x * x).sum(-1, keepdim=True), min=eps))


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


@dataclass
class RoutingTrace:
    """What one routing pass computed, for the tower and for diagnostics."""

    capsules: torch.Tensor  # [B, K, d]
    capsule_mask: torch.Tensor  # [B, K] bool
    weights: torch.Tensor  # [B, L, K] routing weights of the last iteration (0 on padding)
    initial_logits: torch.Tensor  # [B, L, K]
    final_logits: torch.Tensor  # [B, L, K] the logits the last iteration's weights came from


class B2IRouting(nn.Module):
    """Behaviour-to-interest dynamic routing (MIND, Alg. 1; ComiRec-DR).

    MIND (``kind="mind"``): one shared bilinear map S, and routing logits that start from a
    fixed Gaussian buffer (one row per item index, drawn once at construction), which is what
    tells the capsules apart. ComiRec-DR (``kind="comirec_dr"``): one map per interest and
    logits that start at zero; the maps tell the capsules apart. Either way the weights are a
    softmax over the active interests of each behaviour, padding behaviours get weight 0, and
    logits grow by agreement (u_i . c_j, or ``s * cos(u_i, c_j)`` with
    ``routing_cosine_scale = s``). With ``routing_detach`` (ComiRec's practice; the paper says
    nothing) agreement in all but the last iteration uses a detached û, so gradients flow
    through the final weighted sum only; without it gradients flow through every iteration.
    """

    routing_init: torch.Tensor

    def __init__(self, config: MindConfig, generator: torch.Generator) -> None:
        super().__init__()
        d = config.dim
        self.config = config
        self.k = config.k
        self.iterations = config.routing_iterations
        self.detach = config.routing_detach
        self.cosine_scale = config.routing_cosine_scale
        self.per_interest = config.kind == "comirec_dr"
        maps = config.k if self.per_interest else 1
        self.bilinear = nn.Linear(d, d * maps, bias=False)
        nn.init.normal_(self.bilinear.weight, std=d**-0.5, generator=generator)
        init = torch.randn(config.n_items + 1, config.k, generator=generator)
        scale = 0.0 if self.per_interest else config.routing_init_std
        self.register_buffer("routing_init", init * scale)

    def predictions(self, behaviours: torch.Tensor) -> torch.Tensor:
        """û: [B, L, d] for the shared map, [B, K, L, d] with one map per interest."""
        u_hat = self.bilinear(behaviours)
        if not self.per_interest:
            return u_hat
        b, length, _ = behaviours.shape
        return u_hat.reshape(b, length, self.k, -1).transpose(1, 2)

    def _agreement(self, u: torch.Tensor, capsules: torch.Tensor) -> torch.Tensor:
        """[B, L, K]: how much behaviour i agrees with capsule j."""
        if self.cosine_scale > 0:
            u, capsules = unit(u), unit(capsules)
        if self.per_interest:  # u [B, K, L, d], capsules [B, K, d]
            agreement = torch.matmul(u, capsules.unsqueeze(-1)).squeeze(-1).transpose(1, 2)
        else:
            agreement = torch.matmul(u, capsules.transpose(1, 2))
        return agreement * self.cosine_scale if self.cosine_scale > 0 else agreement

    def route(
        self, item_seq: torch.Tensor, behaviours: torch.Tensor, seq_mask: torch.Tensor
    ) -> RoutingTrace:
        """``item_seq`` [B, L] int64, ``behaviours`` [B, L, d], ``seq_mask`` [B, L] bool."""
        capsule_mask = active_interest_mask(seq_mask, self.config)
        weight_mask = seq_mask.unsqueeze(-1).to(behaviours.dtype)  # [B, L, 1]
        u_hat = self.predictions(behaviours)
        u_fixed = u_hat.detach() if self.detach else u_hat
        initial = self.routing_init[item_seq]  # [B, L, K]
        logits = initial
        allowed = capsule_mask.unsqueeze(1)  # [B, 1, K]
        capsules = torch.zeros_like(behaviours[:, : self.k])
        w = torch.zeros_like(initial)
        for it in range(self.iterations):
            masked = torch.where(allowed, logits, torch.full_like(logits, MASKED_LOGIT))
            w = torch.softmax(masked, dim=-1) * weight_mask  # [B, L, K]
            last = it == self.iterations - 1
            u = u_hat if last else u_fixed
            if self.per_interest:  # sum_i w_ij û_j|i
                summed = torch.matmul(w.transpose(1, 2).unsqueeze(2), u).squeeze(2)
            else:
                summed = torch.matmul(w.transpose(1, 2), u)
            capsules = squash(summed)  # [B, K, d]
            if not last:
                logits = logits + self._agreement(u_fixed, capsules)
        return RoutingTrace(capsules, capsule_mask, w, initial, logits)

    def forward(
        self, item_seq: torch.Tensor, behaviours: torch.Tensor, seq_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (capsules [B, K, d], capsule mask [B, K] bool)."""
        trace = self.route(item_seq, behaviours, seq_mask)
        return trace.capsules, trace.capsule_mask


class SelfAttentiveExtractor(nn.Module):
    """ComiRec-SA: K attention heads over the behaviours, ``A = softmax_L(W2 tanh(W1 (h + p)))``,
    interests ``A h``. ``p`` embeds each behaviour's recency (0 = newest), so a head can prefer
    recent behaviours whatever the history's length; padding gets attention exactly 0.
    """

    def __init__(self, config: MindConfig, generator: torch.Generator) -> None:
        super().__init__()
        d = config.dim
        hidden = config.attention_hidden or 4 * d
        self.config = config
        self.max_len = config.max_len
        self.position = nn.Embedding(config.max_len, d)
        self.hidden = nn.Linear(d, hidden)
        self.heads = nn.Linear(hidden, config.k)
        for layer in (self.hidden, self.heads):
            nn.init.normal_(layer.weight, std=layer.in_features**-0.5, generator=generator)
            nn.init.zeros_(layer.bias)
        nn.init.normal_(self.position.weight, std=d**-0.5, generator=generator)

    def attention(self, behaviours: torch.Tensor, seq_mask: torch.Tensor) -> torch.Tensor:
        """[B, K, L] attention of each head over the behaviours (0 on padding)."""
        n = seq_mask.sum(-1, keepdim=True)  # [B, 1]
        steps = torch.cumsum(torch.ones_like(seq_mask, dtype=torch.int64), dim=-1) - 1
        recency = torch.clamp(n - 1 - steps, min=0, max=self.max_len - 1)
        x = behaviours + self.position(recency)
        logits = self.heads(torch.tanh(self.hidden(x))).transpose(1, 2)  # [B, K, L]
        allowed = seq_mask.unsqueeze(1)
        logits = torch.where(allowed, logits, torch.full_like(logits, MASKED_LOGIT))
        return torch.softmax(logits, dim=-1) * allowed.to(behaviours.dtype)

    def forward(
        self, behaviours: torch.Tensor, seq_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (interests [B, K, d], interest mask [B, K] bool, attention [B, K, L])."""
        attention = self.attention(behaviours, seq_mask)
        interests = torch.matmul(attention, behaviours)
        return interests, active_interest_mask(seq_mask, self.config), attention


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
    """A user tower: behaviours -> (interests [B, K, d], interest mask [B, K]).

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
        self.routing = B2IRouting(config, generator) if config.kind in ROUTING_KINDS else None
        self.attention = (
            SelfAttentiveExtractor(config, generator) if config.kind == "comirec_sa" else None
        )
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
        interests, mask, _ = self.extract(item_seq, profile)
        return interests, mask

    def extract(
        self, item_seq: torch.Tensor, profile: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """:meth:`forward` plus ComiRec-SA's attention maps [B, K, L] (None for the other
        kinds), which training regularises; the exported graph is :meth:`forward`'s."""
        seq_mask = item_seq > 0
        behaviours = self.items(item_seq)
        attention: torch.Tensor | None = None
        if self.routing is not None:
            capsules, capsule_mask = self.routing(item_seq, behaviours, seq_mask)
        elif self.attention is not None:
            capsules, capsule_mask, attention = self.attention(behaviours, seq_mask)
        else:
            weights = seq_mask.to(behaviours.dtype).unsqueeze(-1)
            n = weights.sum(1).clamp(min=1.0)
            capsules = ((behaviours * weights).sum(1) / n).unsqueeze(1)
            capsule_mask = torch.ones_like(seq_mask[:, :1])
        if self.head is None:
            return capsules, capsule_mask, attention
        x = capsules
        if self.profile is not None:
            if profile is None:
                raise ModelExportError("this tower was built with user features; pass profile")
            user = self.profile(profile).unsqueeze(1).expand(-1, capsules.shape[1], -1)
            x = torch.cat([capsules, user], dim=-1)
        interests = self.head(x)
        # Inactive capsules are zero vectors; keep them exactly zero after the biased head.
        interests = interests * capsule_mask.unsqueeze(-1).to(interests.dtype)
        return interests, capsule_mask, attention

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
