"""``mindstream report`` rendered in a real headless Chromium (Debian's ``chromium`` package):
every figure must be present and decoded by the browser, not only written into the HTML."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from mindstream.app.cli import main
from mindstream.app.report import build_report
from mindstream.app.report_interests import InterestView, UserView
from mindstream.app.report_results import new_results, percentiles, write_results
from model_export.evaluate import EvaluationReport, ModelEvaluation, write_report
from tests.requirements import missing

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(autouse=True)
def _chromium() -> None:
    if CHROMIUM is None:
        missing("needs Debian's chromium (make system-deps / apt-get install chromium)")


ALL_FIGURES = {
    "hit_rate_comirec.png",
    "hit_rate_leave_last_out.png",
    "freshness.png",
    "throughput.png",
    "latency.png",
    "interests.png",
}


def chromium(tmp_path, page, *args):
    profile = tmp_path / "chromium-profile"
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=10000",
        *args,
        page.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def curve(top):
    n = np.arange(1, 201)
    return [float(v) for v in top * (1 - np.exp(-n / 40))]


def write_inputs(results):
    metrics = {f"{m}@{n}": 0.1 for m in ("hit_rate", "recall", "ndcg") for n in (20, 50)}
    for protocol in ("leave_last_out", "comirec"):
        models = [
            ModelEvaluation("mind", 300, metrics, curve(0.8), 1.0, 0.3, 250, 3.1),
            ModelEvaluation("popularity", 300, metrics, curve(0.4), 0.1),
        ]
        report = EvaluationReport("synthetic", protocol, "test", (20, 50), False, models)
        write_report(report, results / "evaluate" / protocol)
    rng = np.random.default_rng(0)
    views = [
        UserView(
            f"u{u}",
            [("c1", 20), ("c3", 12)],
            [
                InterestView([("c1", 19), ("c3", 1)], "c1", 0.9),
                InterestView([("c3", 20)], "c3", 0.8),
            ],
            ["c1", "c3"],
        )
        for u in range(3)
    ]
    write_results(
        results / "demo" / "demo.json",
        new_results(
            "demo",
            throughput=[
                {"name": "publish", "events_per_s": 990.0, "events": 9900, "seconds": 10.0}
            ],
            latency=[{"name": "GET candidates", **percentiles(rng.gamma(2, 2, 300).tolist())}],
            freshness=[
                {"name": "per user", "samples_ms": rng.gamma(3, 20, 500).tolist()},
                {"name": "worker", "buckets_s": [0.01, 0.1, float("inf")], "counts": [5, 90, 1]},
            ],
            interests=[v.to_json() for v in views],
            interest_match={
                "users": 3,
                "planted": 6,
                "recovered": 6,
                "planted_all": 6,
                "recovered_all": 6,
                "chance": 0.0,
                "min_behaviours": 5,
            },
        ),
    )
    bench = {
        "catalogues": [
            {
                "n_items": 1000,
                "index": {"kind": "flat"},
                "bare": {"single": {"p50_ms": 0.2, "p99_ms": 0.5, "mean_ms": 0.2}},
            }
        ]
    }
    (results / "bench").mkdir()
    (results / "bench" / "recall.json").write_text(json.dumps(bench))
    stream_bench = {
        "setup": {},
        "phases": {
            "worker, sustained": {
                "sustained_events_per_s": 480,
                "freshness": {"p50_ms": 40.0, "p95_ms": 90.0, "p99_ms": 120.0},
            }
        },
    }
    (results / "bench" / "stream.json").write_text(json.dumps(stream_bench))


def body_attributes(dom):
    body = re.search(r"<body([^>]*)>", dom)
    assert body is not None, dom[:500]
    return dict(re.findall(r'([\w-]+)="([^"]*)"', body.group(1)))


@pytest.mark.integration
def test_every_figure_is_present_and_decoded_in_chromium(tmp_path):
    results = tmp_path / "results"
    write_inputs(results)
    outcome = build_report(results, tmp_path / "out")
    assert {p.name for p in outcome.figures} == ALL_FIGURES
    assert all(outcome.sections.values())
    for name in ALL_FIGURES:  # the PNGs are also written beside the page
        assert (tmp_path / "out" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    dom = chromium(tmp_path, outcome.page, "--dump-dom")
    attributes = body_attributes(dom)
    assert attributes.get("data-images") == str(len(ALL_FIGURES)), attributes
    assert attributes.get("data-images-decoded") == str(len(ALL_FIGURES)), attributes
    assert set(re.findall(r'data-figure="([^"]+)"', dom)) == ALL_FIGURES
    assert "data-missing" not in dom
    assert "worker, sustained" in dom  # the stream bench's numbers, in the tables
    # Self-contained: every image is a data URI, nothing is fetched.
    assert set(re.findall(r'<img src="([a-z]+):', dom)) == {"data"}

    shot = tmp_path / "page.png"
    chromium(tmp_path, outcome.page, "--hide-scrollbars", "--window-size=1100,3000",
             f"--screenshot={shot}")  # fmt: skip
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.shape == (3000, 1100)
    assert pixels.std() > 10  # not a blank page


@pytest.mark.integration
def test_sections_without_input_say_what_to_run(tmp_path):
    outcome = build_report(tmp_path / "nothing-here", tmp_path / "out")
    assert outcome.figures == []
    dom = chromium(tmp_path, outcome.page, "--dump-dom")
    assert body_attributes(dom).get("data-images") == "0"
    missing = re.findall(r'data-missing="(\w+)"', dom)
    assert sorted(missing) == ["evaluation", "freshness", "interests", "latency", "throughput"]
    assert dom.count("No data yet") == 5
    assert dom.count("mindstream demo") >= 5


@pytest.mark.integration
def test_interests_from_a_bundle_and_the_synthetic_log(tmp_path, capsys):
    from model_export.export import build_tiny_bundle

    bundle = build_tiny_bundle(tmp_path / "bundles")
    out = tmp_path / "out"
    argv = ["report", "--results", str(tmp_path / "none"), "--out", str(out)]
    argv += ["--bundle", str(bundle), "--synthetic", "--users", "300", "--items", "200"]
    argv += ["--clusters", "10", "--sample", "300"]
    assert main(argv) == 0
    assert "1 figures" in capsys.readouterr().out
    page = (out / "report.html").read_text()
    summary = re.search(r"<b>(\d+)/(\d+) \((\d+)%\)</b>", page)
    assert summary is not None
    # 60 steps on the tiny log already recover most planted interests (well above chance).
    recovered, planted = int(summary.group(1)), int(summary.group(2))
    assert planted > 100 and recovered / planted > 0.5, summary.group(0)
    dom = chromium(tmp_path, out / "report.html", "--dump-dom")
    attributes = body_attributes(dom)
    assert attributes.get("data-images") == attributes.get("data-images-decoded") == "1"
