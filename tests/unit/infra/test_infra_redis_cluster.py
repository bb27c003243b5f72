"""The local cluster's slot plan and how its services are exported (no processes started)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from infra import processes
from infra.launch import ServiceRecord
from infra.redis_cluster import SLOTS, cluster_definitions, slot_ranges
from infra.state import LocalServices


def test_slot_ranges_cover_every_slot_once() -> None:
    for masters in (1, 3, 5, 7):
        ranges = slot_ranges(masters)
        assert len(ranges) == masters
        assert ranges[0][0] == 0 and ranges[-1][1] == SLOTS - 1
        for (_, hi), (lo, _) in itertools.pairwise(ranges):
            assert lo == hi + 1
        sizes = [hi - lo + 1 for lo, hi in ranges]
        assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError, match="at least one master"):
        slot_ranges(0)


def test_cluster_nodes_have_their_own_names_and_bus_ports(tmp_path: Path) -> None:
    definitions = cluster_definitions()
    assert [d.name for d in definitions] == [f"redis-cluster-{n}" for n in range(6)]
    argv = definitions[0].argv(Path("/usr/bin/redis-server"), "127.0.0.1", 7000, tmp_path)
    assert argv[argv.index("--cluster-enabled") + 1] == "yes"
    assert argv[argv.index("--cluster-config-file") + 1] == "nodes-7000.conf"
    assert int(argv[argv.index("--cluster-port") + 1]) != 7000


def _record(name: str, port: int) -> ServiceRecord:
    handle = processes.ProcessHandle(pid=1, executable="x", start_ticks=None)
    return ServiceRecord(name, "127.0.0.1", port, handle, Path("/dev/null"))


def test_a_cluster_is_exported_with_cluster_mode_on() -> None:
    cluster = LocalServices(
        {"broker": _record("broker", 9092)}
        | {f"redis-cluster-{n}": _record(f"redis-cluster-{n}", 7000 + n) for n in range(6)}
    )
    env = cluster.connection_env()
    assert env["REDIS_URL"] == "redis://127.0.0.1:7000/0"
    assert env["MINDSTREAM_REDIS_CLUSTER"] == "true"
    single = LocalServices({"broker": _record("broker", 9092), "redis": _record("redis", 6379)})
    assert "MINDSTREAM_REDIS_CLUSTER" not in single.connection_env()
    assert single.connection_env()["REDIS_URL"] == "redis://127.0.0.1:6379/0"
