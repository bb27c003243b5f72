"""``python -m recall`` as a real process: serves from the bundle link, stops on SIGTERM; and
``recall index`` builds, caches and checks an index."""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks.catalogue import gaussian_mixture_catalogue, write_catalogue_bundle
from infra.ports import free_port
from mindstream.settings import Settings
from model_export.bundle import Bundle, load_bundle
from stream.record import InterestRecord, now_ms, write_records

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def run_env(settings: Settings) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("MINDSTREAM_")}
    return {**keep, **settings.as_env(), "REDIS_URL": settings.redis_url}


def get_json(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback)
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def one_user_service(
    service_settings: Settings,
    redis_prefix: str,
    redis_client: Any,
    tmp_path: Path,
    **overrides: Any,
) -> tuple[Settings, Bundle]:
    """Settings of a recall service on a free port over an 8-item bundle, and user u1's record:
    "d" scores best but is in u1's window, so u1's candidates are "f" then "g"."""
    bundle = load_bundle(
        write_catalogue_bundle(
            tmp_path / "bundles", np.eye(8, dtype=np.float32), item_ids=list("abcdefgh")
        )
    )
    settings = dataclasses.replace(
        service_settings,
        redis_prefix=redis_prefix,
        bundle_path=str(tmp_path / "bundles" / "current"),
        recall_port=free_port(),
        data_dir=str(tmp_path),
        **overrides,
    )
    vectors = np.array([[0.0, 0.0, 0.0, 2.0, 0.0, 1.0, 0.5, 0.25]], np.float32)
    record = InterestRecord("u1", vectors, 1, 8, bundle.version, 1, now_ms(), 1, 1, "c/0/1", ("d",))
    write_records(redis_client, redis_prefix, [record])
    return settings, bundle


def start_recall(settings: Settings, *args: str) -> subprocess.Popen[str]:
    """``python -m recall ARGS`` with ``settings`` as its environment, output piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "recall", *args],
        cwd=ROOT,
        env=run_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_service_process_serves_and_stops_on_sigterm(
    service_settings: Settings, redis_prefix: str, redis_client, tmp_path: Path
):
    settings, bundle = one_user_service(service_settings, redis_prefix, redis_client, tmp_path)
    port = settings.recall_port
    process = start_recall(settings)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                status, health = get_json(f"{base}/healthz")
                break
            except (urllib.error.URLError, ConnectionError):
                assert process.poll() is None, process.communicate()[1]
                assert time.monotonic() < deadline, "recall did not start within 60 s"
                time.sleep(0.2)
        assert status == 200 and health["model"] == bundle.version
        status, body = get_json(f"{base}/v1/users/u1/candidates?n=2")
        assert status == 200
        # "d" scores best but is in the window, so it is left out.
        assert [(c["item_id"], c["score"]) for c in body["candidates"]] == [("f", 1.0), ("g", 0.5)]
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
        assert process.returncode == 0, err
        assert f"recall serving on http://127.0.0.1:{port} model={bundle.version}" in out
    finally:
        kill_if_running(process)


def test_index_command_builds_caches_and_checks(service_settings: Settings, tmp_path: Path):
    catalogue = gaussian_mixture_catalogue(5000, 16, n_clusters=50, seed=3)
    bundle_path = write_catalogue_bundle(tmp_path / "bundles", catalogue.embeddings)
    settings = dataclasses.replace(
        service_settings, bundle_path=str(bundle_path), data_dir=str(tmp_path)
    )
    command = [sys.executable, "-m", "recall", "index", "--index", "ivf", "--check"]
    first = subprocess.run(
        command, cwd=ROOT, env=run_env(settings), capture_output=True, text=True, timeout=120
    )
    assert first.returncode == 0, first.stderr
    built = json.loads(first.stdout)
    assert built["kind"] == "ivf" and built["source"] == "built" and built["n_items"] == 5000
    assert built["recall_at_50_vs_exact"] >= 0.95
    second = subprocess.run(
        command[:-1], cwd=ROOT, env=run_env(settings), capture_output=True, text=True, timeout=120
    )
    assert json.loads(second.stdout)["source"] == "cache"
    missing = subprocess.run(
        [sys.executable, "-m", "recall", "index", "--bundle", str(tmp_path / "nope")],
        cwd=ROOT,
        env=run_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def tcp_inodes(port: int, state: str, peer_port: int | None = None) -> set[str]:
    """Inodes of the sockets on 127.0.0.1:``port`` in ``state`` ("0A" listening, "01"
    established), those connected to 127.0.0.1:``peer_port`` only when given (/proc/net/tcp)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], fields[9]
        if fields[3] != state or local != f"0100007F:{port:04X}":
            continue
        if peer_port is None or remote == f"0100007F:{peer_port:04X}":
            inodes.add(inode)
    return inodes


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def start_workers(settings: Settings) -> tuple[subprocess.Popen[str], list[int]]:
    """``python -m recall serve`` with 2 workers, once its ready line is out: the supervisor
    and the workers' pids."""
    process = start_recall(settings, "serve")
    assert process.stdout is not None
    line = process.stdout.readline()  # printed once every worker serves
    ready = f"recall serving on http://127.0.0.1:{settings.recall_port}"
    assert ready in line, process.communicate()[1]
    assert "workers=2" in line
    return process, [int(p) for p in line.split("pids=")[1].split(",")]


def stops_on_sigterm(process: subprocess.Popen[str], pids: list[int]) -> None:
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert all(gone(pid) for pid in pids)


def kill_if_running(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
        process.communicate()


def test_workers_share_connections_evenly_and_stop_together(
    service_settings: Settings, redis_prefix: str, redis_client, tmp_path: Path
):
    settings, _ = one_user_service(
        service_settings, redis_prefix, redis_client, tmp_path, recall_workers=2
    )
    port = settings.recall_port

    process, pids = start_workers(settings)
    connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(8)]
    try:
        assert len(set(pids)) == 2 and process.pid not in pids
        # The supervisor alone listens; the workers get the connections it accepts.
        assert tcp_inodes(port, "0A") & socket_inodes(process.pid)
        assert not any(tcp_inodes(port, "0A") & socket_inodes(pid) for pid in pids)
        # Eight keep-alive connections, opened at once right after the ready line (where
        # SO_REUSEPORT's hash, or a worker not yet listening, put 6, 7 or all 8 on one).
        for connection in connections:
            connection.connect()
        served_by = []
        for connection in connections:
            for _ in range(2):  # the same connection answers again (keep-alive)
                connection.request("GET", "/v1/users/u1/candidates?n=2")
                response = connection.getresponse()
                body = json.load(response)
                assert response.status == 200
                assert [c["item_id"] for c in body["candidates"]] == ["f", "g"]
            assert connection.sock is not None
            inodes = tcp_inodes(port, "01", peer_port=connection.sock.getsockname()[1])
            served_by += [pid for pid in pids if inodes & socket_inodes(pid)]
        assert sorted(served_by.count(pid) for pid in pids) == [4, 4], served_by
        # A worker that dies takes the service down with a clear error (no restart loop).
        os.kill(pids[0], signal.SIGKILL)
        _, err = process.communicate(timeout=30)
        assert process.returncode == 2, err
        assert f"recall worker pid {pids[0]} exited (killed by signal 9)" in err
        assert all(gone(pid) for pid in pids)
    finally:
        for connection in connections:
            connection.close()
        kill_if_running(process)

    process, pids = start_workers(settings)
    try:
        stops_on_sigterm(process, pids)
    finally:
        kill_if_running(process)

    # Workers whose supervisor is killed stop by themselves (their connection channel closes)
    # instead of serving on as orphans.
    process, pids = start_workers(settings)
    try:
        process.kill()
        process.communicate(timeout=30)
        deadline = time.monotonic() + 30
        while not all(gone(pid) for pid in pids):
            assert time.monotonic() < deadline, "workers outlived their supervisor by 30 s"
            time.sleep(0.1)
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_workers_with_reuse_port_each_listen_once_ready(
    service_settings: Settings, redis_prefix: str, redis_client, tmp_path: Path
):
    settings, _ = one_user_service(
        service_settings,
        redis_prefix,
        redis_client,
        tmp_path,
        recall_workers=2,
        recall_reuse_port=True,
    )
    port = settings.recall_port
    process, pids = start_workers(settings)
    try:
        # Once the ready line is out, each worker holds its own SO_REUSEPORT socket on the
        # port (it used to come before they listened) and the supervisor none.
        listening = tcp_inodes(port, "0A")
        assert all(listening & socket_inodes(pid) for pid in pids)
        assert not listening & socket_inodes(process.pid)
        for _ in range(10):  # a new connection each: the kernel spreads them over the workers
            status, body = get_json(f"http://127.0.0.1:{port}/v1/users/u1/candidates?n=2")
            assert status == 200
            assert [c["item_id"] for c in body["candidates"]] == ["f", "g"]
        stops_on_sigterm(process, pids)
    finally:
        kill_if_running(process)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_port_in_use_is_a_clear_error(service_settings: Settings, tmp_path: Path, workers: int):
    write_catalogue_bundle(tmp_path / "bundles", np.eye(8, dtype=np.float32))
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        settings = dataclasses.replace(
            service_settings,
            bundle_path=str(tmp_path / "bundles" / "current"),
            recall_port=port,
            recall_workers=workers,
            data_dir=str(tmp_path),
        )
        result = subprocess.run(
            [sys.executable, "-m", "recall", "serve"],
            cwd=ROOT,
            env=run_env(settings),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 2, result.stderr
    assert (
        f"cannot listen on 127.0.0.1:{port} (MINDSTREAM_RECALL_HOST, MINDSTREAM_RECALL_PORT)"
        in result.stderr
    )
    assert "recall serving on" not in result.stdout
