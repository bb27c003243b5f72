"""``mindstream services up|status|down`` end to end, as a user runs them from a shell."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra import processes, services
from infra.broker import broker_answers, find_tansu
from infra.exceptions import BinaryNotFoundError
from infra.ports import accepts_connections
from infra.redis_server import find_redis_server, redis_answers

pytestmark = pytest.mark.integration


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    try:
        find_tansu()
        find_redis_server()
    except BinaryNotFoundError as exc:
        pytest.skip(str(exc))
    path = tmp_path / "data"
    yield path
    services.down(path, timeout_s=2)  # only does something when the test failed half-way


def _run(data_dir: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MINDSTREAM_") and k not in {"KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL"}
    }
    # Relative, as the default `var` is: the services must not depend on the caller's cwd.
    env["MINDSTREAM_DATA_DIR"] = data_dir.name
    return subprocess.run(
        [sys.executable, *argv],
        env=env,
        cwd=data_dir.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _exports(stdout: str) -> dict[str, str]:
    pairs = [shlex.split(line)[1].split("=", 1) for line in stdout.splitlines()]
    return dict(pairs)


def _live_processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if text.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_up_twice_status_and_down_leave_nothing_behind(data_dir: Path) -> None:
    up = _run(data_dir, "-m", "mindstream", "services", "up")
    assert up.returncode == 0, up.stderr
    env = _exports(up.stdout)
    assert set(env) == {"KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "MINDSTREAM_KAFKA_PROFILE"}
    assert env["MINDSTREAM_KAFKA_PROFILE"] == "local"
    state = services.read_state(data_dir)
    assert state is not None and state.owner is None
    # They outlive the command that started them, and answer.
    assert all(services.running(state).values())
    host, port = env["KAFKA_BOOTSTRAP_SERVERS"].split(":")
    assert broker_answers(host, int(port))
    redis = state.services["redis"]
    assert env["REDIS_URL"] == f"redis://{redis.host}:{redis.port}/0"
    assert redis_answers(redis.host, redis.port)
    assert (data_dir / "services" / "logs" / "broker.log").stat().st_size > 0

    again = _run(data_dir, "-m", "infra", "up")
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stderr
    assert _exports(again.stdout) == env
    assert services.read_state(data_dir) == state

    status = _run(data_dir, "-m", "infra", "status")
    assert status.returncode == 0
    assert status.stdout.count("running") == 2

    down = _run(data_dir, "-m", "infra", "down")
    assert down.returncode == 0, down.stderr
    assert "stopped by SIGTERM" in down.stderr
    for record in state.services.values():
        assert not processes.is_running(record.process)
        assert not accepts_connections(record.host, record.port)
    assert _live_processes_mentioning(str(data_dir)) == []
    assert services.read_state(data_dir) is None

    status = _run(data_dir, "-m", "infra", "status")
    assert status.returncode == 3
    assert "not running" in status.stdout
    assert "nothing to stop" in _run(data_dir, "-m", "infra", "down").stderr
