"""``mindstream bench stream --broker kafka``: the local Apache Kafka started by the benchmark
itself, the phases run on it, and the broker's and Redis's CPU per event read from /proc."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from infra.testing import local_kafka_missing
from mindstream.settings import Settings, known_env
from tests.requirements import missing


def test_bench_stream_on_a_local_apache_kafka(bundle_dir: Path, tmp_path: Path) -> None:
    data_dir = Path(Settings.from_env().data_dir).resolve()
    jars_root = data_dir / "bench-services" / "kafka-jars"  # where the benchmark keeps them
    why = local_kafka_missing(jars_root)
    if why is not None:
        missing(f"the local Apache Kafka cannot be launched: {why}")
    out = tmp_path / "stream.json"
    env = {k: v for k, v in os.environ.items() if k not in known_env()}
    env["MINDSTREAM_DATA_DIR"] = str(data_dir)
    done = subprocess.run(
        [
            *(sys.executable, "-m", "mindstream", "bench", "stream", "--broker", "kafka"),
            # Enough events for many clock ticks (10 ms) of broker and Redis CPU in each phase:
            # on a quiet box a worker drained 6,000 events of 600 users in 0.37 s, too short
            # for Redis to use one tick. 24,000 events of 3,000 users need ~150 ms of Redis.
            *("--events", "24000", "--users", "3000", "--rate", "2000", "--duration", "3"),
            *("--sample-s", "1", "--skip", "noop,bare", "--bundle", str(bundle_dir)),
            *("--work-dir", str(tmp_path / "work"), "--json", str(out)),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    results = json.loads(out.read_text())
    assert results["setup"]["brokers"]["kafka"]["kafka_profile"] == "standard"
    drain = results["phases"]["kafka: worker, backlog"]
    assert drain["events"] == 24000
    rate = results["phases"]["kafka: worker, sustained"]
    assert rate["events"] == 6000
    # both services did work for these events, read from their processes' /proc figures
    for name, phase in (("drain", drain), ("sustained", rate)):
        assert phase["broker_cpu_ms_per_event"] > 0, (name, phase)
        assert phase["redis_cpu_ms_per_event"] > 0, (name, phase)
    assert rate["windows"], "no time series of the sustained phase"
    assert sum(w["events_per_s"] for w in rate["windows"]) > 0
    assert all(w["broker_core_share"] is not None for w in rate["windows"])
