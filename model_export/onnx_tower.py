"""Run an exported user tower with onnxruntime (no torch), e.g. to evaluate a bundle.

The stream worker has its own runner for serving (unknown ids, batching, providers); this one
is the plain offline call used by ``mindstream evaluate --bundle`` and the parity tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model_export.bundle import TOWER_INPUT, TOWER_OUTPUTS
from model_export.exceptions import ModelExportError


class OnnxUserTower:
    """``tower(item_seq int64 [B, L]) -> (interests float32 [B, K, d], mask bool [B, K])``."""

    def __init__(self, model: Path | str | bytes, *, threads: int = 0) -> None:
        try:
            import onnxruntime as ort
        except ModuleNotFoundError as exc:
            raise ModelExportError(
                "running an exported tower needs onnxruntime: pip install 'mindstream[cpu]'"
            ) from exc
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        source = model if isinstance(model, bytes) else str(model)
        self.session = ort.InferenceSession(
            source, sess_options=options, providers=["CPUExecutionProvider"]
        )
        names = [o.name for o in self.session.get_outputs()]
        if tuple(names[:2]) != TOWER_OUTPUTS:
            raise ModelExportError(
                f"tower outputs are {names}; expected {', '.join(TOWER_OUTPUTS)}"
            )

    def __call__(self, item_seq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        seq = np.ascontiguousarray(item_seq, dtype=np.int64)
        if seq.ndim != 2 or seq.shape[1] < 1:
            raise ModelExportError(f"item_seq must be [batch, seq >= 1]; got shape {seq.shape}")
        interests, mask = self.session.run(None, {TOWER_INPUT: seq})
        return interests, mask.astype(bool, copy=False)
