"""The capacity model: how many workers, partitions, brokers and Redis shards a click rate needs.

Pure arithmetic over measured per-event costs (``mindstream bench stream`` gives the CPU
milliseconds per event of the worker, the broker and Redis; the byte sizes come from the event
and window encodings). Every quantity is ``rate x cost per event / usable capacity of one
unit``, rounded up:

* workers = ceil(R x worker_ms / (1000 x worker_util)): a worker is one Python process and uses
  at most one core; ``worker_util`` < 1 leaves the headroom the freshness tail needs;
* partitions = the smallest power of two >= 2 x workers (a partition is the unit a worker takes,
  so twice as many lets the group double without repartitioning the clicks topic);
* broker cores = R x broker_ms x replication / 1000 (each replica appends and serves the bytes
  again); brokers = max(replication, ceil(cores / (broker_cores x broker_util)),
  ceil(R x bytes_per_event x replication / broker_write_bytes_s));
* Redis shards = ceil(R x redis_ms / (1000 x redis_util)): Redis runs commands on one thread,
  so a shard (a master; its replicas on other cores) is one core.

``python -m benchmarks.capacity --rates 10000,100000,1000000 --worker-ms 0.13 ...`` prints the
table; BENCHMARKS.md ("Capacity model") gives the inputs it was run with.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Costs:
    """Measured per-event costs and the assumed capacity of one unit of each resource."""

    worker_ms: float  # worker CPU ms per event
    broker_ms: float  # broker CPU ms per event, replication factor 1
    redis_ms: float  # Redis CPU ms per event (all the writes an event causes)
    bytes_per_event: float  # bytes the broker appends per event (clicks + changelog)
    replication: int = 3
    worker_util: float = 0.6
    broker_cores: int = 8
    broker_util: float = 0.6
    broker_write_bytes_s: float = 200e6  # per broker, replicas included
    redis_util: float = 0.6

    def __post_init__(self) -> None:
        for name in ("worker_util", "broker_util", "redis_util"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {value}")
        for name in ("worker_ms", "broker_ms", "redis_ms", "bytes_per_event"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.replication < 1 or self.broker_cores < 1 or self.broker_write_bytes_s <= 0:
            raise ValueError("replication and broker_cores must be >= 1, broker bytes/s > 0")


@dataclass(frozen=True)
class Plan:
    rate: float
    workers: int
    partitions: int
    worker_cores: float
    broker_cores: float
    brokers_for_cpu: int
    brokers_for_bytes: int
    brokers: int
    redis_cores: float
    redis_shards: int
    limit: str  # the resource that needs the most units of its kind beyond its minimum


def _ceil(x: float) -> int:
    # a hair of float noise (0.1 x 3 = 0.30000000000000004) must not add a whole unit
    return max(1, math.ceil(round(x, 9)))


def plan(rate: float, costs: Costs) -> Plan:
    if rate <= 0:
        raise ValueError(f"rate must be > 0 events/s, got {rate}")
    worker_cores = rate * costs.worker_ms / 1000
    workers = _ceil(worker_cores / costs.worker_util)
    partitions = 1 << (2 * workers - 1).bit_length()
    broker_cores = rate * costs.broker_ms * costs.replication / 1000
    for_cpu = _ceil(broker_cores / (costs.broker_cores * costs.broker_util))
    for_bytes = _ceil(rate * costs.bytes_per_event * costs.replication / costs.broker_write_bytes_s)
    brokers = max(costs.replication, for_cpu, for_bytes)
    redis_cores = rate * costs.redis_ms / 1000
    shards = _ceil(redis_cores / costs.redis_util)
    # which resource grows fastest in units of its own kind (the brokers' floor of one per
    # replica does not count: it is paid at any rate)
    units = {
        "worker cores": workers,
        "broker bytes" if for_bytes >= for_cpu else "broker cores": max(for_cpu, for_bytes),
        "Redis shards": shards,
    }
    limit = max(units, key=lambda name: units[name])
    return Plan(
        rate=rate,
        workers=workers,
        partitions=partitions,
        worker_cores=round(worker_cores, 2),
        broker_cores=round(broker_cores, 2),
        brokers_for_cpu=for_cpu,
        brokers_for_bytes=for_bytes,
        brokers=brokers,
        redis_cores=round(redis_cores, 2),
        redis_shards=shards,
        limit=limit,
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.capacity", description=__doc__)
    p.add_argument("--rates", default="10000,100000,1000000", help="click rates, events/s")
    for field, default in asdict(Costs(0.0, 0.0, 0.0, 0.0)).items():
        p.add_argument(f"--{field.replace('_', '-')}", type=type(default), default=default)
    args = p.parse_args(argv)
    costs = Costs(
        **{f: getattr(args, f) for f in asdict(Costs(0.0, 0.0, 0.0, 0.0))},
    )
    header = "| clicks/s | workers (cores) | partitions | broker cores | brokers (cpu / bytes) "
    print(header + "| Redis cores | Redis shards | needs the most units |")
    print("|---" * 8 + "|")
    for rate in (float(r) for r in args.rates.split(",") if r.strip()):
        x = plan(rate, costs)
        print(
            f"| {x.rate:,.0f} | {x.workers} ({x.worker_cores}) | {x.partitions} | "
            f"{x.broker_cores} | {x.brokers} ({x.brokers_for_cpu} / {x.brokers_for_bytes}) | "
            f"{x.redis_cores} | {x.redis_shards} | {x.limit} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
