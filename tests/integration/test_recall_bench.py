"""``mindstream bench recall`` end to end on a tiny catalogue (the real numbers are in
BENCHMARKS.md): every measurement is there for each index kind asked for, the exact index scores
recall 1 against itself, and the service runs as two worker processes."""

from __future__ import annotations

import dataclasses
import json

import pytest

from benchmarks import recall_bench as bench
from mindstream.settings import Settings

pytestmark = pytest.mark.integration


def test_bench_runs_end_to_end(service_settings: Settings, tmp_path, capsys):
    settings = dataclasses.replace(service_settings, data_dir=str(tmp_path))
    out = tmp_path / "recall.json"
    argv = ["recall", "--sizes", "3000", "--dim", "16", "--users", "40", "--requests", "30",
            "--concurrency", "2", "--batch-users", "5", "--batch-requests", "3",
            "--recall-queries", "40", "--compare", "flat,ivf,ivfpq", "--redis-url",
            service_settings.redis_url, "--json", str(out), "--index", "flat,ivfpq",
            "--workers", "2", "--rate", "200,400"]  # fmt: skip
    assert bench.main(argv, settings) == 0
    result = json.loads(out.read_text())
    catalogue, second = result["catalogues"]
    assert catalogue["n_items"] == second["n_items"] == 3000
    assert (catalogue["index"]["kind"], second["index"]["kind"]) == ("flat", "ivfpq")
    assert second["service"]["workers"] == 2
    assert second["service"]["single_sequential"]["p50_ms"] > 0
    # CPU time of the two workers (not the idle supervisor) and of the client, per request.
    assert second["service"]["single_concurrency_2"]["service_cpu_ms_per_call"] > 0
    assert second["service"]["single_concurrency_2"]["client_cpu_ms_per_call"] > 0
    assert set(catalogue["bare"]) == {
        "faiss_single", "search_merge_single", "faiss_batch", "search_merge_batch",
    }  # fmt: skip
    service = catalogue["service"]
    assert {"single_sequential", "single_concurrency_2", "batch_5_sequential"} <= set(service)
    # Paced: 60 requests offered at each rate by the 2 clients, every answer checked.
    for rate in (200, 400):
        run = service[f"single_paced_{rate}_per_s"]
        assert run["offered_per_s"] == rate and 0 < run["req_per_s"] <= rate * 1.1
        assert 0 < run["p50_ms"] <= run["p99_ms"] and run["service_cpu_ms_per_call"] > 0
    for values in [*catalogue["bare"].values(), service["single_sequential"]]:
        assert 0 < values["p50_ms"] <= values["p99_ms"]
    assert catalogue["ann_recall"]["flat"]["recall@50"] == 1.0
    assert catalogue["ann_recall"]["ivf"]["recall@50"] > 0.5
    assert catalogue["ann_recall"]["ivfpq"]["recall@50"] > 0.5
    assert second["ann_recall"] == {}  # measured once per catalogue
    assert "recall@50 vs exact = 1.0" in capsys.readouterr().out
