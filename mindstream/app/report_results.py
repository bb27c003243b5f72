"""The results files ``mindstream report`` reads, and the small format benchmarks write.

Two kinds of input, both found by walking a results folder (default ``results/``):

* evaluations: ``results.json`` as written by :func:`model_export.evaluate.write_report`
  (``mindstream evaluate``, ``mindstream train`` via the demo); recognised by ``protocol`` and
  ``models``;
* measurements: any ``*.json`` in the format below (``"format": "mindstream.results/1"``), as
  written by ``mindstream demo`` and by benchmarks through :func:`write_results`; and the native
  output of ``mindstream bench recall --json`` (recognised by ``catalogues``) and of
  ``mindstream bench stream --json`` (recognised by ``phases`` and ``setup``), converted here.

The measurement format (every list optional)::

    {
      "format": "mindstream.results/1",
      "source": "demo",                       # who measured: demo, bench stream, ...
      "created_ms": 1700000000000,
      "machine": {"cores": 2, ...},           # free-form
      "throughput": [{"name": "...", "events_per_s": 950.0, "events": 40000, "seconds": 42.1}],
      "latency": [{"name": "...", "p50_ms": 2.1, "p95_ms": 4.0, "p99_ms": 7.9,
                   "mean_ms": 2.4, "count": 500}],
      "freshness": [{"name": "...", "samples_ms": [12.0, 15.5, ...]},
                    {"name": "...", "buckets_s": [0.005, 0.01, ...], "counts": [3, 10, ...]},
                    {"name": "...", "p50_ms": 40.0, "p95_ms": 90.0, "p99_ms": 150.0}],
      "interests": [<UserView JSON, see mindstream.app.report_interests>],
      "interest_match": {<MatchSummary JSON>},
      "notes": ["..."]
    }

``freshness`` entries hold raw samples (milliseconds), a histogram (``counts[i]`` events took
at most ``buckets_s[i]`` seconds and more than the bucket before, not cumulative) or only
quantiles (shown in the table, not in the figure).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

FORMAT = "mindstream.results/1"


@dataclass
class Measurements:
    """The measurement lists of one or more results files, each entry tagged with its source."""

    throughput: list[dict[str, Any]] = field(default_factory=list)
    latency: list[dict[str, Any]] = field(default_factory=list)
    freshness: list[dict[str, Any]] = field(default_factory=list)
    interests: list[dict[str, Any]] = field(default_factory=list)
    interest_match: dict[str, Any] | None = None
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def new_results(source: str, **sections: Any) -> dict[str, Any]:
    """A results document for ``source`` with the given sections."""
    return {
        "format": FORMAT,
        "source": source,
        "created_ms": int(time.time() * 1000),
        "machine": {"cores": os.cpu_count()},
        **sections,
    }


def write_results(path: str | Path, results: Mapping[str, Any]) -> Path:
    """Write a results document atomically (the report may be reading the folder)."""
    if results.get("format") != FORMAT:
        raise ValueError(f"results must have format {FORMAT!r}; build them with new_results()")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    return out


def percentiles(samples_ms: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/mean/max of latency samples in milliseconds, and their count."""
    values = np.asarray(samples_ms, dtype=np.float64)
    if values.size == 0:
        return {"count": 0}
    return {
        "p50_ms": round(float(np.percentile(values, 50)), 3),
        "p95_ms": round(float(np.percentile(values, 95)), 3),
        "p99_ms": round(float(np.percentile(values, 99)), 3),
        "mean_ms": round(float(values.mean()), 3),
        "max_ms": round(float(values.max()), 3),
        "count": int(values.size),
    }


def histogram_quantile(buckets_s: Sequence[float], counts: Sequence[float], q: float) -> float:
    """The ``q`` quantile (seconds) of a histogram, interpolated linearly inside its bucket the
    way Prometheus' ``histogram_quantile`` does; the last finite bound when it falls beyond."""
    total = float(sum(counts))
    if total <= 0:
        return float("nan")
    rank = q * total
    seen = 0.0
    lower = 0.0
    for bound, count in zip(buckets_s, counts, strict=True):
        if count > 0 and seen + count >= rank:
            if not np.isfinite(bound):
                return lower
            return lower + (bound - lower) * (rank - seen) / count
        seen += count
        lower = bound if np.isfinite(bound) else lower
    return lower


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        logger.warning("skipping unreadable results file=%s error=%s", path, exc)
        return None


def _newest_first(paths: Sequence[Path]) -> list[Path]:
    return sorted(paths, key=lambda p: p.stat().st_mtime, reverse=True)


def find_evaluations(results_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The newest evaluation ``results.json`` per protocol under ``results_dir``."""
    if not results_dir.is_dir():
        return []
    chosen: dict[str, tuple[Path, dict[str, Any]]] = {}
    for path in _newest_first(list(results_dir.rglob("results.json"))):
        data = _json(path)
        if not isinstance(data, dict) or "models" not in data or "protocol" not in data:
            continue
        chosen.setdefault(str(data["protocol"]), (path, data))
    return sorted(chosen.values(), key=lambda pair: str(pair[1]["protocol"]))


def find_measurements(results_dir: Path) -> Measurements:
    """Every measurement under ``results_dir``: the newest file per source, merged."""
    found = Measurements()
    if not results_dir.is_dir():
        return found
    newest: dict[str, tuple[Path, dict[str, Any]]] = {}
    for path in _newest_first(list(results_dir.rglob("*.json"))):
        data = _json(path)
        if not isinstance(data, dict):
            continue
        if data.get("format") == FORMAT:
            newest.setdefault(str(data.get("source", path.stem)), (path, data))
        elif "catalogues" in data and isinstance(data["catalogues"], list):
            newest.setdefault("bench recall", (path, from_recall_bench(data)))
        elif isinstance(data.get("phases"), dict) and "setup" in data:
            newest.setdefault("bench stream", (path, from_stream_bench(data)))
    for source, (path, data) in sorted(newest.items()):
        found.files.append(path)
        for section in ("throughput", "latency", "freshness"):
            for entry in data.get(section, []):
                getattr(found, section).append({**entry, "source": source})
        if data.get("interests") and not found.interests:
            found.interests = list(data["interests"])
            found.interest_match = data.get("interest_match")
        found.notes += [f"{source}: {note}" for note in data.get("notes", [])]
    return found


def from_recall_bench(data: Mapping[str, Any]) -> dict[str, Any]:
    """``mindstream bench recall --json`` output as a results document."""
    latency = []
    for catalogue in data.get("catalogues", []):
        size = f"{int(catalogue.get('n_items', 0)):,} items"
        index = catalogue.get("index", {}).get("kind", "?")
        for group, prefix in (("bare", "Faiss"), ("service", "HTTP")):
            for name, values in catalogue.get(group, {}).items():
                if not isinstance(values, dict) or "p50_ms" not in values:
                    continue
                entry = {k: v for k, v in values.items() if k.endswith("_ms")}
                rate = values.get("req_per_s", values.get("calls_per_s"))
                if rate is not None:
                    entry["per_s"] = rate
                entry["name"] = f"{prefix} {name} ({size}, {index})"
                latency.append(entry)
    return {"format": FORMAT, "source": "bench recall", "latency": latency}


def from_stream_bench(data: Mapping[str, Any]) -> dict[str, Any]:
    """``mindstream bench stream --json`` output as a results document: each phase's events/s,
    and the freshness quantiles of the sustained-rate phase."""
    throughput, freshness = [], []
    for name, phase in data.get("phases", {}).items():
        if not isinstance(phase, dict):
            continue
        rate = phase.get("sustained_events_per_s", phase.get("events_per_s"))
        if isinstance(rate, int | float):
            entry = {"name": str(name), "events_per_s": float(rate)}
            if isinstance(phase.get("events"), int):
                entry["events"] = phase["events"]
            seconds = phase.get("seconds", phase.get("caught_up_seconds"))
            if isinstance(seconds, int | float):
                entry["seconds"] = seconds
            throughput.append(entry)
        quantiles = phase.get("freshness")
        if isinstance(quantiles, dict) and quantiles:
            offered = phase.get("offered_events_per_s")
            label = f"{name} at {offered} events/s" if offered else str(name)
            freshness.append({"name": f"{label}: Redis write - Kafka record time", **quantiles})
    return {
        "format": FORMAT,
        "source": "bench stream",
        "throughput": throughput,
        "freshness": freshness,
    }
