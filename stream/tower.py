"""The user tower at serving time: a verified bundle's ONNX graph run with onnxruntime.

Windows hold producer item ids; the tower maps them to the bundle's model indices (unknown ids
are skipped and counted) and keeps the newest ``max_len`` known behaviours. Each row is
right-padded to the shortest width of a fixed ladder (multiples of ``PAD_STEP``, capped at
``max_len``) that holds it, and the rows of each width run together: a user's result depends on
their own window only, never on who else is in the batch, and a short window does not pay for
``max_len`` positions of padding (the graph masks padding, so any width that holds the row gives
the same interests; ``model_export.export``). No torch here: the stream stage only reads
bundles.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_export.bundle import TOWER_INPUT, TOWER_OUTPUTS, Bundle, load_bundle
from stream.exceptions import TowerError

logger = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
DEFAULT_MAX_BATCH = 1024
# Padding widths are multiples of this (capped at max_len): a few graph calls per batch at most,
# each row padded by fewer than PAD_STEP positions. The tower's cost grows with the width, and
# windows are mostly short until users have max_len behaviours (a fresh stream's backlog: ~5).
PAD_STEP = 8


@dataclass(frozen=True)
class UserInterests:
    """One user's active interests: float32 [k, dim] (k = 0 when no behaviour is known)."""

    vectors: np.ndarray
    n_known: int
    n_unknown: int

    @property
    def k(self) -> int:
        return int(self.vectors.shape[0])


def choose_providers(requested: str, available: Sequence[str]) -> list[str]:
    """onnxruntime providers for ``MINDSTREAM_ONNX_PROVIDER`` (auto, cuda or cpu)."""
    if requested == "cpu":
        return [CPU]
    if requested == "cuda":
        if CUDA not in available:
            raise TowerError(
                f"MINDSTREAM_ONNX_PROVIDER=cuda but onnxruntime offers only {list(available)} "
                "(install onnxruntime-gpu instead of onnxruntime, or use auto/cpu)"
            )
        return [CUDA, CPU]
    if requested == "auto":
        return [CUDA, CPU] if CUDA in available else [CPU]
    raise TowerError(f"MINDSTREAM_ONNX_PROVIDER={requested!r}: expected auto, cuda or cpu")


class UserTower:
    """A bundle's user tower, ready to turn behaviour windows into interests."""

    def __init__(
        self,
        bundle: Bundle,
        *,
        provider: str = "auto",
        threads: int = 0,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        import onnxruntime as ort

        self.bundle = bundle
        self.max_batch = max_batch
        self._index = bundle.item_index
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        # The worker calls the tower in bursts between Kafka and Redis I/O on shared cores;
        # spin-waiting threads burned CPU the event loop needed (2 threads, L=50, d=64, busy
        # 2-core box: 36-46 us of CPU per user spinning, 24-26 without).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = choose_providers(provider, ort.get_available_providers())
        try:
            self.session = ort.InferenceSession(
                str(bundle.onnx_path), sess_options=options, providers=providers
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise TowerError(f"cannot load {bundle.onnx_path} with {providers}: {exc}") from exc
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if inputs != [TOWER_INPUT] or tuple(outputs[:2]) != TOWER_OUTPUTS:
            raise TowerError(
                f"{bundle.onnx_path}: inputs {inputs}, outputs {outputs}; expected [{TOWER_INPUT}] "
                f"and {list(TOWER_OUTPUTS)} (see model_export/bundle.py)"
            )
        self.provider = self.session.get_providers()[0]
        logger.info(
            "user tower ready version=%s provider=%s requested=%s dim=%d k=%d max_len=%d",
            self.version,
            self.provider,
            provider,
            self.dim,
            self.k,
            self.max_len,
        )

    @classmethod
    def load(cls, path: Path | str, *, provider: str = "auto", threads: int = 0) -> UserTower:
        """Verify and load the bundle at ``path`` (a folder or a ``current`` link)."""
        return cls(load_bundle(path), provider=provider, threads=threads)

    @property
    def version(self) -> str:
        return self.bundle.version

    @property
    def dim(self) -> int:
        return self.bundle.dim

    @property
    def k(self) -> int:
        return self.bundle.k

    @property
    def max_len(self) -> int:
        return self.bundle.max_len

    def encode(self, windows: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        """(item_seq int64 [B, max_len] right-padded, unknown counts int64 [B])."""
        # One dict lookup per item (map and filter, in C), the rest in numpy: the rows' kept
        # indices go into one flat list and are scattered into the padded matrix at once.
        get = self._index.get
        max_len = self.max_len
        flat: list[int] = []
        lengths: list[int] = []
        unknown: list[int] = []
        for items in windows:
            # an unknown id maps to None, which filter drops (model indices start at 1)
            known = list(filter(None, map(get, items)))
            unknown.append(len(items) - len(known))
            kept = known[-max_len:]
            lengths.append(len(kept))
            flat += kept
        seq = np.zeros((len(windows), max_len), dtype=np.int64)
        seq[np.arange(max_len) < np.array(lengths, dtype=np.int64)[:, None]] = flat
        return seq, np.array(unknown, dtype=np.int64)

    def compute(self, windows: Sequence[Sequence[str]]) -> list[UserInterests]:
        """Active interests of each window (producer item ids, oldest first)."""
        seq, unknown = self.encode(windows)
        n_known = (seq > 0).sum(axis=1)
        none = np.zeros((0, self.dim), np.float32)
        none.flags.writeable = False
        n_unknown = unknown.tolist()
        results: list[UserInterests] = [
            UserInterests(none, 0, n_unknown[row]) for row in range(len(windows))
        ]
        widths = pad_widths(n_known, self.max_len)
        for width in np.unique(widths[n_known > 0]).tolist():
            rows = np.flatnonzero((widths == width) & (n_known > 0))
            for start in range(0, len(rows), self.max_batch):
                chunk = rows[start : start + self.max_batch]
                self._run(seq[chunk, :width], chunk, n_known, n_unknown, results)
        return results

    def _run(
        self,
        seq: np.ndarray,
        chunk: np.ndarray,
        n_known: np.ndarray,
        n_unknown: list[int],
        results: list[UserInterests],
    ) -> None:
        """Run the graph on ``seq`` (the rows ``chunk`` of the batch) into ``results``."""
        interests, mask = self.session.run(list(TOWER_OUTPUTS), {TOWER_INPUT: seq})
        mask = mask.astype(bool, copy=False)
        # every row's active interests, row after row; each user's vectors are a slice
        active = np.ascontiguousarray(interests[mask], dtype=np.float32)
        ends = np.cumsum(mask.sum(axis=1)).tolist()
        begin = 0
        for row, known, end in zip(chunk.tolist(), n_known[chunk].tolist(), ends, strict=True):
            results[row] = UserInterests(active[begin:end], known, n_unknown[row])
            begin = end


def pad_widths(lengths: np.ndarray, max_len: int) -> np.ndarray:
    """Each row's padded width: its length rounded up to a multiple of PAD_STEP, at most
    ``max_len`` (at least PAD_STEP, or max_len when that is smaller)."""
    steps = np.maximum(-(-lengths // PAD_STEP), 1) * PAD_STEP
    return np.minimum(steps, max_len)
