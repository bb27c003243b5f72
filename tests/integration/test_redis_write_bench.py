"""``python -m benchmarks.redis_write`` end to end with a few small batches (the real numbers are
in BENCHMARKS.md): both servers start and stop, every round is timed, and the records written to
each are the last batch's, written by the worker's writer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import redis_write

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_bench_times_one_redis_and_a_cluster(tmp_path: Path, capsys) -> None:
    out = tmp_path / "write.json"
    argv = ["--records", "30", "--users", "100", "--batches", "3", "--warmup", "1",
            "--rounds", "2", "--json", str(out)]  # fmt: skip
    assert redis_write.main(argv) == 0
    summary = json.loads(out.read_text())
    assert [r["round"] for r in summary["rounds"]] == [1, 2]
    for row in summary["rounds"]:
        assert row["one_redis_cpu_ms_per_batch"] > 0 and row["cluster_cpu_ms_per_batch"] > 0
        assert row["cpu_ratio"] == pytest.approx(
            row["cluster_cpu_ms_per_batch"] / row["one_redis_cpu_ms_per_batch"], rel=0.05
        )
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    assert printed[-1]["median_cpu_ratio"] == summary["median_cpu_ratio"]


def test_batches_are_distinct_users_with_rising_seq() -> None:
    work = redis_write.batches(3, records=50, users=60, k=2, dim=8, seed=1)
    assert [len(batch) for batch in work] == [50, 50, 50]
    for seq, batch in enumerate(work, start=1):
        assert len({r.user_id for r in batch}) == 50 and {r.seq for r in batch} == {seq}
        assert all(r.vectors.shape == (2, 8) for r in batch)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(SystemExit):
        redis_write.main(["--records", "20", "--users", "10"])
