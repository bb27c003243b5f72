"""The HitRate@N-versus-N plot of an evaluation, one line per model (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path


def plot_hit_rate(
    curves: Mapping[str, Sequence[float]], path: str | Path, *, title: str = ""
) -> Path:
    """Write a PNG of each model's HitRate@N (entry N-1 of its curve) against N."""
    # The Agg canvas directly, not pyplot: no global backend switch, no figure registry.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    top = 0.0
    longest = 1
    for name, curve in curves.items():
        ax.plot(range(1, len(curve) + 1), curve, label=name, linewidth=1.6)
        top = max(top, max(curve, default=0.0))
        longest = max(longest, len(curve))
    ax.set_xlabel("N (items retrieved)")
    ax.set_ylabel("HitRate@N")
    ax.set_xlim(1, longest)
    ax.set_ylim(0.0, min(1.0, top * 1.1 + 0.01))
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    if curves:
        ax.legend(loc="lower right")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    return out
