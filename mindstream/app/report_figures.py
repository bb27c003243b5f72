"""The report's figures as PNG files (matplotlib's Agg canvas, no pyplot, no display)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mindstream.app.report_interests import UserView

DPI = 110
PALETTE = (
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac", "#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#17becf",
)  # fmt: skip
OTHER_COLOUR = "#dddddd"


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def hit_rate_figure(evaluation: Mapping[str, Any], path: Path) -> Path:
    """HitRate@N against N, one line per model (the evaluator's own plot)."""
    from model_export.plot import plot_hit_rate

    curves = {
        name: model["hit_rate_curve"]
        for name, model in evaluation["models"].items()
        if model.get("hit_rate_curve")
    }
    title = f"{evaluation.get('dataset', '')} · {evaluation.get('protocol', '')}"
    return plot_hit_rate(curves, path, title=title)


def freshness_figure(entries: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """One histogram per freshness entry (samples or bucket counts), milliseconds on a log axis."""
    fig = _figure(8, 2.6 * len(entries) + 0.4)
    for i, entry in enumerate(entries, start=1):
        ax = fig.add_subplot(len(entries), 1, i)
        if "samples_ms" in entry:
            samples = np.maximum(np.asarray(entry["samples_ms"], dtype=np.float64), 0.1)
            edges = np.logspace(math.log10(samples.min()), math.log10(samples.max() * 1.05), 40)
            ax.hist(samples, bins=edges, color=PALETTE[0])
            ax.set_xscale("log")
            for q, style in ((50, "-"), (95, "--"), (99, ":")):
                value = float(np.percentile(samples, q))
                ax.axvline(
                    value, color="black", linestyle=style, linewidth=1, label=f"p{q} {value:.0f} ms"
                )
            ax.legend(loc="upper left", fontsize=8)
            ax.set_ylabel("users" if "user" in entry["name"] else "events")
            ax.set_xlabel("milliseconds")
        else:
            pairs = list(zip((b * 1000 for b in entry["buckets_s"]), entry["counts"], strict=True))
            finite = [(b, c) for b, c in pairs if math.isfinite(b)]
            labels = [f"≤{b:g}" for b, _ in finite]
            values = [c for _, c in finite]
            overflow = sum(c for b, c in pairs if not math.isfinite(b))
            if overflow:
                labels.append(f">{finite[-1][0]:g}" if finite else "all")
                values.append(overflow)
            ax.bar(range(len(values)), values, color=PALETTE[1])
            ax.set_xticks(range(len(values)), labels, rotation=60, fontsize=7)
            ax.set_ylabel("events")
            ax.set_xlabel("milliseconds (bucket upper bound)")
        ax.set_title(f"{entry['name']} ({entry.get('source', '')})", fontsize=10)
        ax.grid(True, alpha=0.3)
    return _save(fig, path)


def _barh(ax: Any, labels: Sequence[str], values: Sequence[float], colour: str) -> None:
    positions = np.arange(len(labels))
    ax.barh(positions, values, color=colour)
    ax.set_yticks(positions, labels, fontsize=8)
    ax.invert_yaxis()
    top = max(values, default=0.0)
    for y, value in zip(positions, values, strict=True):
        ax.text(value + top * 0.01, y, f"{value:,.0f}", va="center", fontsize=8)
    ax.set_xlim(0, top * 1.15 + 1e-9)
    ax.grid(True, axis="x", alpha=0.3)


def throughput_figure(entries: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Events per second of every throughput measurement."""
    fig = _figure(8, 0.45 * len(entries) + 1.2)
    ax = fig.add_subplot()
    labels = [f"{e['name']} ({e.get('source', '')})" for e in entries]
    _barh(ax, labels, [float(e["events_per_s"]) for e in entries], PALETTE[4])
    ax.set_xlabel("events per second")
    return _save(fig, path)


def latency_figure(entries: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """p50 / p95 / p99 of every latency measurement, milliseconds (log axis when they spread)."""
    fig = _figure(8, 0.55 * len(entries) + 1.4)
    ax = fig.add_subplot()
    keys = [k for k in ("p50_ms", "p95_ms", "p99_ms") if any(k in e for e in entries)]
    height = 0.8 / max(len(keys), 1)
    positions = np.arange(len(entries))
    for j, key in enumerate(keys):
        values = [float(e.get(key, np.nan)) for e in entries]
        ax.barh(positions + j * height, values, height=height, label=key[:-3], color=PALETTE[j])
    ax.set_yticks(
        positions + height * (len(keys) - 1) / 2,
        [f"{e['name']} ({e.get('source', '')})" for e in entries],
        fontsize=8,
    )
    ax.invert_yaxis()
    values = [float(e[k]) for e in entries for k in keys if k in e and float(e[k]) > 0]
    if values and max(values) / min(values) > 50:
        ax.set_xscale("log")
    ax.set_xlabel("milliseconds")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(True, axis="x", alpha=0.3)
    return _save(fig, path)


def interests_figure(users: Sequence[UserView], path: Path) -> Path:
    """Per sampled user, one stacked bar per interest: the categories of its top items."""
    categories = sorted(
        {c for u in users for i in u.interests for c, _ in i.categories[:6]}
        | {c for u in users for c in u.planted or []}
    )
    colour = {c: PALETTE[j % len(PALETTE)] for j, c in enumerate(categories)}
    rows = sum(max(len(u.interests), 1) for u in users)
    fig = _figure(9, 0.32 * rows + 0.5 * len(users) + 1.0)
    ax = fig.add_subplot()
    y = 0.0
    ticks, labels, used = [], [], set()
    for user in users:
        planted = ", ".join(user.planted or []) or "-"
        for j, interest in enumerate(user.interests):
            total = sum(n for _, n in interest.categories) or 1
            left = 0.0
            for category, n in interest.categories:
                share = n / total
                shown = category in colour
                ax.barh(
                    y,
                    share,
                    left=left,
                    color=colour[category] if shown else OTHER_COLOUR,
                    edgecolor="white",
                    label=category if shown and category not in used else None,
                )
                used.add(category)
                if share >= 0.12:
                    ax.text(left + share / 2, y, category, ha="center", va="center", fontsize=7)
                left += share
            ticks.append(y)
            label = f"interest {j + 1}"
            labels.append(f"{user.user_id} (planted {planted})  {label}" if j == 0 else label)
            y += 1
        y += 0.6
    ax.set_yticks(ticks, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of the interest's top items, by category")
    if 0 < len(used) <= 24:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, title="category")
    return _save(fig, path)
