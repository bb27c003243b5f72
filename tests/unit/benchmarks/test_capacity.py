"""The capacity model's arithmetic."""

from __future__ import annotations

import pytest

from benchmarks.capacity import Costs, main, plan

COSTS = Costs(worker_ms=0.12, broker_ms=0.02, redis_ms=0.01, bytes_per_event=1000.0)


def test_each_resource_is_rate_times_cost_over_usable_capacity_rounded_up() -> None:
    x = plan(100_000, COSTS)
    assert x.worker_cores == 12.0  # 100k x 0.12 ms
    assert x.workers == 20  # 12 cores at 60 % each
    assert x.partitions == 64  # the power of two >= 2 x 20
    assert x.broker_cores == 6.0  # 100k x 0.02 ms x 3 replicas
    assert x.brokers_for_cpu == 2  # 6 / (8 x 0.6) -> 2
    assert x.brokers_for_bytes == 2  # 100k x 1 kB x 3 = 300 MB/s over 200 MB/s each
    assert x.brokers == 3  # one per replica at least
    assert x.redis_cores == 1.0
    assert x.redis_shards == 2  # 1 core at 60 %
    assert x.limit == "worker cores"


def test_small_rates_need_one_of_each_and_float_noise_adds_no_unit() -> None:
    x = plan(5_000, Costs(worker_ms=0.12, broker_ms=0.0, redis_ms=0.0, bytes_per_event=0.0))
    assert (x.workers, x.partitions, x.brokers, x.redis_shards) == (1, 2, 3, 1)
    # 3,000 x 0.7 ms at 70 % is 3.0000000000000004 workers in floats: three, not four
    assert 3_000 * 0.7 / 1000 / 0.7 > 3
    assert plan(3_000, Costs(0.7, 0.0, 0.0, 0.0, worker_util=0.7)).workers == 3


def test_the_limit_names_the_broker_bytes_when_they_need_the_most_units() -> None:
    heavy = Costs(worker_ms=0.01, broker_ms=0.001, redis_ms=0.001, bytes_per_event=20_000.0)
    assert plan(1_000_000, heavy).limit == "broker bytes"


@pytest.mark.parametrize(
    "bad", [{"worker_util": 0.0}, {"redis_util": 1.5}, {"worker_ms": -1.0}, {"replication": 0}]
)
def test_impossible_inputs_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Costs(**{**COSTS.__dict__, **bad})
    with pytest.raises(ValueError, match="rate"):
        plan(0, COSTS)


def test_the_command_prints_one_row_per_rate(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--rates", "10000,1000000", "--worker-ms", "0.12", "--broker-ms", "0.02"]) == 0
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith("| 1")]
    assert [r.split(" | ")[0] for r in rows] == ["| 10,000", "| 1,000,000"]
