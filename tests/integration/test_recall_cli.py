"""``python -m recall`` as a real process: serves from the bundle link, stops on SIGTERM; and
``recall index`` builds, caches and checks an index."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from infra.ports import free_port
from mindstream.settings import Settings
from model_export.bundle import load_bundle
from recall.synthetic import gaussian_mixture_catalogue, write_catalogue_bundle
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


def test_service_process_serves_and_stops_on_sigterm(
    service_settings: Settings, redis_prefix: str, redis_client, tmp_path: Path
):
    bundle = load_bundle(
        write_catalogue_bundle(
            tmp_path / "bundles", np.eye(8, dtype=np.float32), item_ids=list("abcdefgh")
        )
    )
    port = free_port()
    settings = dataclasses.replace(
        service_settings,
        redis_prefix=redis_prefix,
        bundle_path=str(tmp_path / "bundles" / "current"),
        recall_port=port,
        data_dir=str(tmp_path),
    )
    vectors = np.array([[0.0, 0.0, 0.0, 2.0, 0.0, 1.0, 0.5, 0.25]], np.float32)
    record = InterestRecord("u1", vectors, 1, 8, bundle.version, 1, now_ms(), 1, 1, "c/0/1", ("d",))
    write_records(redis_client, redis_prefix, [record])
    process = subprocess.Popen(
        [sys.executable, "-m", "recall"],
        cwd=ROOT,
        env=run_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
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
        if process.poll() is None:
            process.kill()
            process.communicate()


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
