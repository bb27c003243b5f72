"""``mindstream bench recall-ab`` end to end on a tiny catalogue, this tree against itself as the
other checkout: both services answer every alternating request correctly, each side is measured
in every round, and the CPU ratio is the per-round ratio of the two sides."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from benchmarks import recall_ab
from mindstream.settings import Settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_two_checkouts_side_by_side(service_settings: Settings, tmp_path, capsys):
    settings = dataclasses.replace(service_settings, data_dir=str(tmp_path))
    out = tmp_path / "ab.json"
    argv = ["recall-ab", "--other", str(ROOT), "--size", "3000", "--dim", "16",
            "--users", "40", "--rounds", "2", "--requests", "120", "--concurrency", "3",
            "--work-dir", str(tmp_path / "work"), "--json", str(out)]  # fmt: skip
    assert recall_ab.main(argv, settings) == 0
    result = json.loads(out.read_text())
    assert len(result["rounds"]) == 2
    for row in result["rounds"]:
        # 120 requests a round from 3 clients alternating sides: each side gets its share.
        assert row["this"]["requests"] + row["other"]["requests"] == 120
        assert min(row["this"]["requests"], row["other"]["requests"]) >= 55
        for side in ("this", "other"):
            assert 0 < row[side]["p50_ms"] <= row[side]["p99_ms"]
            assert row[side]["service_cpu_ms_per_call"] >= 0
    assert "CPU per request, this / other" in capsys.readouterr().out


def test_a_folder_that_is_not_a_checkout_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="not a checkout"):
        recall_ab.main(["recall-ab", "--other", str(tmp_path)], Settings())


def test_summary_skips_rounds_too_short_to_count_cpu():
    def side(cpu: float) -> dict:
        return {"service_cpu_ms_per_call": cpu, "p50_ms": 1.0, "p99_ms": 2.0}

    rounds = [{"this": side(0.9), "other": side(1.0)}, {"this": side(0.5), "other": side(0.0)}]
    assert recall_ab.summary(rounds)["cpu_ratio_per_round"] == [0.9]
    assert recall_ab.summary(rounds[1:])["cpu_ratio_median"] is None
