"""``mindstream report``: one self-contained HTML page from the latest results.

The page (``report.html``) embeds its figures as base64 PNG data URIs, so it can be mailed or
archived as one file; the same PNGs are written beside it. Sections: retrieval quality
(HitRate@N per model), freshness, throughput, recall latency and, for sampled users, which item
categories each interest captures. A section whose input is missing says which command
produces it instead of failing. Inputs are described in :mod:`mindstream.app.report_results`.
"""

from __future__ import annotations

import base64
import html
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mindstream.app import report_figures as figures
from mindstream.app.report_interests import NO_CATEGORY, MatchSummary, UserView, window_overlap
from mindstream.app.report_results import (
    Measurements,
    find_evaluations,
    find_measurements,
    histogram_quantile,
    percentiles,
)

logger = logging.getLogger(__name__)

PAGE = "report.html"
MAX_USERS_SHOWN = 8

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 1000px; color: #222; line-height: 1.45; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { border-bottom: 1px solid #ddd;
     padding-bottom: .2rem; margin-top: 2.2rem; }
.meta { color: #666; font-size: .9rem; } .empty { background: #fff8e1; border-left: 4px solid
        #f2b600; padding: .6rem .9rem; } figure { margin: 1rem 0; } img { max-width: 100%; }
figcaption { color: #555; font-size: .85rem; } code { background: #f3f3f3; padding: 0 .25rem; }
table { border-collapse: collapse; font-size: .85rem; margin: .6rem 0; }
th, td { border: 1px solid #ddd; padding: .25rem .5rem; text-align: right; }
th:first-child, td:first-child { text-align: left; } .ok { color: #1a7f37; }
.miss { color: #b42318; } table.text td { text-align: left; } .scroll { overflow-x: auto; }
"""

# Sets data attributes on <body> once every image has loaded and decoded, so a headless
# browser (or a person in the console) can check that every figure is really there.
CHECK_SCRIPT = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var decoded = images.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.setAttribute("data-images", String(images.length));
  document.body.setAttribute("data-images-decoded", String(decoded.length));
});
"""


@dataclass
class Section:
    """A titled block of the page: figures (path + caption), HTML, or a missing-data note."""

    key: str
    title: str
    figures: list[tuple[Path, str]] = field(default_factory=list)
    body: str = ""
    missing: str | None = None


@dataclass(frozen=True)
class ReportOutcome:
    page: Path
    figures: list[Path]
    sections: dict[str, bool]  # section key -> has data


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def human_number(value: float) -> str:
    """A measurement as people read it: thousands separated, as many decimals as its size
    warrants ("4,940" events/s, "42.5" ms, "3.42" interests, "0.253" hit rate)."""
    if math.isnan(value) or math.isinf(value):
        return "-" if math.isnan(value) else str(value)
    size = abs(value)
    if size >= 100 or value.is_integer():
        return f"{value:,.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 1:
        return f"{value:.2f}"
    if size >= 0.001:
        return f"{value:.3f}"
    return f"{value:.2e}"


def _fmt(value: Any, digits: int | None = None) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return _esc(value)
    if isinstance(value, float):
        if digits is not None and not math.isnan(value):
            return f"{value:,.{digits}f}"
        return human_number(value)
    if isinstance(value, int):
        return f"{value:,}"
    return _esc(value)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in rows)
    return (
        f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        "</div>"
    )


# --- sections ----------------------------------------------------------------------------


def evaluation_section(results_dir: Path, out_dir: Path) -> Section:
    section = Section("evaluation", "Retrieval quality: HitRate@N")
    evaluations = find_evaluations(results_dir)
    if not evaluations:
        section.missing = (
            f"No data yet (no evaluation results.json under {_esc(results_dir)}): run "
            "<code>mindstream demo</code>, or <code>mindstream evaluate --bundle "
            f"bundles/current --out {_esc(results_dir)}/evaluate</code>"
        )
        return section
    parts = []
    for path, evaluation in evaluations:
        protocol = str(evaluation["protocol"])
        figure = figures.hit_rate_figure(evaluation, out_dir / f"hit_rate_{protocol}.png")
        section.figures.append(
            (
                figure,
                f"{evaluation.get('dataset')} · {protocol} · {evaluation.get('part')} · "
                f"from {path}",
            )
        )
        ns = evaluation.get("ns", [20, 50, 100])
        headers = ["model", "users"]
        headers += [f"{m}@{n}" for n in ns for m in ("HR", "Recall", "NDCG")]
        headers += ["interest cos", "mean K'"]
        rows = []
        for name, model in evaluation["models"].items():
            metrics = model.get("metrics", {})
            row: list[Any] = [name, model.get("n_users")]
            row += [metrics.get(f"{key}@{n}") for n in ns for key in ("hit_rate", "recall", "ndcg")]
            row += [model.get("interest_cosine"), model.get("mean_active_interests")]
            rows.append(row)
        parts.append(f"<h3>{_esc(protocol)}</h3>" + _table(headers, rows))
    section.body = "".join(parts)
    return section


def freshness_section(found: Measurements, out_dir: Path) -> Section:
    section = Section("freshness", "Freshness: click to updated interests in Redis")
    if not found.freshness:
        section.missing = (
            "No data yet: run <code>mindstream demo</code> (it measures Redis "
            "<code>updated_ms</code> minus each user's newest click, and the worker's "
            "<code>mindstream_stream_freshness_seconds</code> histogram)"
        )
        return section
    plottable = [e for e in found.freshness if "samples_ms" in e or "buckets_s" in e]
    if plottable:
        figure = figures.freshness_figure(plottable, out_dir / "freshness.png")
        section.figures.append((figure, "Distribution of freshness (log scale where samples)."))
    rows = []
    for entry in found.freshness:
        count: Any
        if "samples_ms" in entry:
            stats = percentiles(entry["samples_ms"])
            p50, p95, p99 = stats.get("p50_ms"), stats.get("p95_ms"), stats.get("p99_ms")
            count = stats.get("count", 0)
        elif "buckets_s" in entry:
            b, c = entry["buckets_s"], entry["counts"]
            p50, p95, p99 = (histogram_quantile(b, c, q) * 1000 for q in (0.5, 0.95, 0.99))
            count = int(sum(c))
        else:
            p50, p95, p99 = entry.get("p50_ms"), entry.get("p95_ms"), entry.get("p99_ms")
            count = entry.get("count")
        rows.append([entry["name"], entry.get("source"), count, p50, p95, p99])
    section.body = _table(["measurement", "source", "count", "p50 ms", "p95 ms", "p99 ms"], rows)
    return section


def throughput_section(found: Measurements, out_dir: Path) -> Section:
    return _measurement_section(
        Section("throughput", "Throughput"),
        found.throughput,
        missing=(
            "No data yet: run <code>mindstream demo</code> (publish and "
            "stream worker rates) or a benchmark that writes results (see "
            "<code>mindstream.app.report_results</code>)"
        ),
        figure=figures.throughput_figure,
        path=out_dir / "throughput.png",
        caption="Events per second.",
        columns={
            "measurement": "name",
            "source": "source",
            "events": "events",
            "seconds": "seconds",
            "events/s": "events_per_s",
        },
    )


def latency_section(found: Measurements, out_dir: Path) -> Section:
    return _measurement_section(
        Section("latency", "Recall latency"),
        found.latency,
        missing=(
            "No data yet: run <code>mindstream demo</code> or "
            "<code>mindstream bench recall --json results/bench/recall.json</code>"
        ),
        figure=figures.latency_figure,
        path=out_dir / "latency.png",
        caption="Latency percentiles per measurement.",
        columns={
            "measurement": "name",
            "source": "source",
            "requests": "count",
            "p50 ms": "p50_ms",
            "p95 ms": "p95_ms",
            "p99 ms": "p99_ms",
            "per s": "per_s",
        },
    )


def _measurement_section(
    section: Section,
    entries: Sequence[Mapping[str, Any]],
    *,
    missing: str,
    figure: Callable[[Sequence[Mapping[str, Any]], Path], Path],
    path: Path,
    caption: str,
    columns: Mapping[str, str],
) -> Section:
    """``section`` with one figure of ``entries`` and a table of them (``columns``: header ->
    entry key), or with the ``missing`` note when there are none.
    """
    if not entries:
        section.missing = missing
        return section
    section.figures.append((figure(entries, path), caption))
    rows = [[e.get(key) for key in columns.values()] for e in entries]
    section.body = _table(list(columns), rows)
    return section


def interests_section(
    users: Sequence[UserView], match: Mapping[str, Any] | None, out_dir: Path, origin: str
) -> Section:
    section = Section("interests", "What each interest captures")
    if not users:
        section.missing = (
            "No data yet: run <code>mindstream demo</code>, or "
            "<code>mindstream report --bundle bundles/current --data PATH</code> (or "
            "<code>--synthetic</code>) to compute them from a bundle and a log"
        )
        return section
    shown = list(users[:MAX_USERS_SHOWN])
    figure = figures.interests_figure(shown, out_dir / "interests.png")
    section.figures.append(
        (figure, f"Categories of each interest's top items by inner product ({origin}).")
    )
    parts = []
    if match:
        summary = MatchSummary(
            **{k: match[k] for k in MatchSummary.__dataclass_fields__ if k in match}
        )
        parts.append(
            f"<p>Planted interests with at least {match.get('min_behaviours', '?')} behaviours "
            f"in the window that are the majority category of some interest: "
            f"<b>{summary.recovered}/{summary.planted} ({summary.share:.0%})</b> over "
            f"{summary.users} multi-interest users; all planted interests "
            f"{summary.recovered_all}/{summary.planted_all} ({summary.share_all:.0%}); a random "
            f"non-planted category: {summary.chance:.0%}.</p>"
        )
    elif math.isnan(overlap := window_overlap(users)):
        parts.append("<p>This log names no item categories: interests are shown by items.</p>")
    else:
        parts.append(
            f"<p>Interests whose majority category occurs in the user's window: "
            f"{overlap:.0%} over {len(users)} users.</p>"
        )
    rows = []
    for user in shown:
        window = ", ".join(f"{c} ×{n}" for c, n in user.window[:6])
        expected = set(user.planted) if user.planted is not None else {c for c, _ in user.window}
        word = "planted" if user.planted is not None else "in window"
        for j, interest in enumerate(user.interests):
            hit = interest.majority in expected
            closest = (
                "-"
                if interest.closest is None
                else f"{_esc(interest.closest)} ({_fmt(interest.cosine, 2)})"
            )
            lead = ["", "", ""]
            if j == 0:
                lead = [
                    _esc(user.user_id),
                    _esc(", ".join(user.planted or []) or "-"),
                    _esc(window),
                ]
            cells = [
                *lead,
                str(j + 1),
                _esc(
                    ", ".join(interest.items[:4])
                    if interest.majority == NO_CATEGORY
                    else ", ".join(f"{c} ×{n}" for c, n in interest.categories[:4])
                ),
                closest,
                f"<span class={'ok' if hit else 'miss'}>{word if hit else '-'}</span>",
            ]
            rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "user",
            "planted",
            "window categories",
            "interest",
            "top items by category",
            "nearest category mean (cos)",
            "match",
        )
    )
    parts.append(
        f"<table class='text'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )
    section.body = "".join(parts)
    return section


# --- the page ----------------------------------------------------------------------------


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def render_page(sections: Sequence[Section], *, title: str, inputs: Sequence[Path]) -> str:
    """The HTML document for ``sections`` (figures embedded as data URIs)."""
    generated = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    toc = " · ".join(f'<a href="#{s.key}">{_esc(s.title)}</a>' for s in sections)
    blocks = []
    for s in sections:
        parts = [f'<section id="{s.key}" data-section="{s.key}"><h2>{_esc(s.title)}</h2>']
        if s.missing is not None:
            parts.append(f'<p class="empty" data-missing="{s.key}">{s.missing}</p>')
        for path, caption in s.figures:
            parts.append(
                f'<figure><img src="{_data_uri(path)}" alt="{_esc(caption)}" '
                f'data-figure="{_esc(path.name)}"><figcaption>{_esc(caption)} '
                f"(<code>{_esc(path.name)}</code>)</figcaption></figure>"
            )
        parts.append(s.body)
        parts.append("</section>")
        blocks.append("".join(parts))
    listed = "".join(f"<li><code>{_esc(p)}</code></li>" for p in inputs) or "<li>none</li>"
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_esc(title)}</title><style>{STYLE}</style>"
        f"<script>{CHECK_SCRIPT}</script></head><body>"
        f"<h1>{_esc(title)}</h1><p class='meta'>generated {_esc(generated)} · {toc}</p>"
        + "".join(blocks)
        + f"<h2>Inputs</h2><ul class='meta'>{listed}</ul></body></html>\n"
    )


def build_report(
    results_dir: str | Path,
    out_dir: str | Path,
    *,
    interests: Sequence[UserView] | None = None,
    interest_match: Mapping[str, Any] | None = None,
    interests_origin: str = "",
    title: str = "mindstream report",
    progress: Callable[[str], None] | None = None,
) -> ReportOutcome:
    """Write ``report.html`` and its PNGs into ``out_dir`` from the results in ``results_dir``.

    ``interests`` (computed by the caller from a bundle and a log) replace those found in the
    results files.
    """
    results = Path(results_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    found = find_measurements(results)
    users: Sequence[UserView]
    if interests is not None:
        users, match, origin = interests, interest_match, interests_origin or "computed"
    else:
        users = [UserView.from_json(u) for u in found.interests]
        match, origin = found.interest_match, "from the latest demo run"
    sections = [
        evaluation_section(results, out),
        freshness_section(found, out),
        throughput_section(found, out),
        latency_section(found, out),
        interests_section(users, match, out, origin),
    ]
    if progress is not None:
        for s in sections:
            progress(f"{s.title}: {'no data yet' if s.missing else 'ok'}")
    evaluations = [path for path, _ in find_evaluations(results)]
    page = render_page(sections, title=title, inputs=[*evaluations, *found.files])
    path = out / PAGE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return ReportOutcome(
        path,
        [p for s in sections for p, _ in s.figures],
        {s.key: s.missing is None for s in sections},
    )


# --- interests computed from a bundle and a log --------------------------------------------


def interests_from_bundle(
    bundle_path: str | Path,
    data: Any,
    *,
    vocab: Mapping[str, Sequence[str]] | None = None,
    planted: Sequence[Sequence[str]] | None = None,
    sample: int = 200,
    seed: int = 0,
    records: Callable[[list[str]], list[Any]] | None = None,
) -> tuple[list[UserView], dict[str, Any] | None]:
    """Views of up to ``sample`` users of ``data`` (an ``Interactions``), and the planted-match
    summary when ``planted`` (category names per user of ``data``) is given.

    Interest vectors come from the bundle's user tower over each user's last ``max_len``
    behaviours, or from ``records(user_ids)`` (interest records read from Redis: objects with
    ``vectors`` and ``items``; users without one are left out). Multi-interest users are sampled
    first when ``planted`` is known.
    """
    import numpy as np

    from mindstream.app.report_interests import item_category_names, match_planted, user_views
    from model_export.bundle import load_bundle
    from model_export.onnx_tower import OnnxUserTower
    from model_export.retrieval import pad_histories

    bundle = load_bundle(bundle_path)
    rng = np.random.default_rng(seed)
    order = rng.permutation(data.n_users)
    if planted is not None:
        order = np.array(sorted(order, key=lambda u: len(planted[u]) < 2), dtype=np.int64)
    chosen = [int(u) for u in order[:sample]]
    user_ids = [data.users[u] for u in chosen]
    windows = [[data.item_ids[i - 1] for i in data.sequences[u][-bundle.max_len :]] for u in chosen]
    vectors: list[np.ndarray] = []
    if records is None:
        index = bundle.item_index
        mapped = [np.array([index[i] for i in w if i in index], dtype=np.int64) for w in windows]
        tower = OnnxUserTower(bundle.onnx_path)
        for start in range(0, len(mapped), 256):
            interests, mask = tower(pad_histories(mapped[start : start + 256], bundle.max_len))
            vectors += [interests[j][mask[j]] for j in range(len(interests))]
    else:
        found = records(user_ids)
        keep = [j for j, r in enumerate(found) if r is not None]
        user_ids = [user_ids[j] for j in keep]
        chosen = [chosen[j] for j in keep]
        windows = [list(found[j].items) for j in keep]
        vectors = [found[j].vectors for j in keep]
    categories = item_category_names(data, vocab)
    views = user_views(
        user_ids,
        windows,
        vectors,
        bundle.item_ids,
        bundle.item_embeddings,
        categories,
        planted=None if planted is None else [list(planted[u]) for u in chosen],
    )
    match = None
    if planted is not None:
        names = sorted({c for c in categories.values() if c is not None})
        match = match_planted(views, names, seed=seed).to_json()
    return views, match
