"""The worker's agent module: importing it changes nothing; the agent runs in Faust's test context.

The agent is driven with Faust's own ``agent.test_context()`` and the processing step with the
in-memory stand-ins of test_stream_processor (table store, outbox, Redis), so what a click
sent through Faust becomes can be checked without a broker.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from stream.events import encode_event
from stream.processor import BatchOutcome, BatchProcessor
from stream.rekey import user_partition
from stream.window import decode_window
from tests.unit.stream.test_stream_processor import CONFIG, T0, make

IMPORT_THEN_START = """
import gc, json
from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from prometheus_client import REGISTRY
from stream.lag import ConsumerLagCollector

def lag_collectors(registry):
    return sum(isinstance(c, ConsumerLagCollector) for c in list(registry._collector_to_names))

def state():
    import sys
    agents = sys.modules.get("stream.agents")
    metrics = getattr(agents, "_metrics", None)
    return {
        "gc": list(gc.get_threshold()),
        "drain": Consumer._drain_messages.__module__,
        "create": AIOKafkaConsumerThread._create_worker_consumer.__module__,
        "default_registry": sorted(REGISTRY._names_to_collectors),
        "worker_lag_collectors": None if metrics is None else lag_collectors(metrics.registry),
    }

before = state()
import stream.agents
imported = state()
# what Faust's worker command does before it starts (twice, when started by app.main())
stream.agents.app.on_worker_init.send()
stream.agents.app.on_worker_init.send()
print(json.dumps({"before": before, "imported": imported, "started": state()}))
"""


def test_importing_the_agents_has_no_side_effects_until_the_worker_starts(
    tmp_path: Path,
) -> None:
    env = {
        **os.environ,
        "MINDSTREAM_DATA_DIR": str(tmp_path),
        "MINDSTREAM_KAFKA_PROFILE": "local",  # so that the fetch wait is installed too
    }
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_THEN_START],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    states = json.loads(done.stdout.strip().splitlines()[-1])
    before, imported, started = states["before"], states["imported"], states["started"]
    assert imported == before
    assert before["drain"].startswith("faust.") and before["create"].startswith("faust.")
    assert before["worker_lag_collectors"] is None
    assert not any(name.startswith("mindstream_") for name in before["default_registry"])
    from stream.agents import GC_THRESHOLDS

    assert started == {
        "gc": list(GC_THRESHOLDS),
        "drain": "stream.faust_internals",
        "create": "stream.faust_internals",
        # the worker's metrics are its own registry; the default one is left as it was
        "default_registry": before["default_registry"],
        "worker_lag_collectors": 1,
    }


class RecordingRuntime:
    """What the agent needs of ``stream.runtime.Runtime``: a processor over in-memory stores."""

    def __init__(self, processor: BatchProcessor) -> None:
        self.processor = processor
        self.outcomes: list[BatchOutcome] = []
        self.processed = asyncio.Event()

    async def run_batch(self, messages: list[Any]) -> None:
        self.outcomes.append(await self.processor.process(messages))
        self.processed.set()


async def test_a_click_sent_through_fausts_test_context_is_windowed_and_written(
    tiny_bundle: Path, monkeypatch: Any
) -> None:
    from stream import agents, faust_internals

    assert not faust_internals.installed(agents.app)  # records come through the stream
    n = agents.settings.topic_partitions
    processor, store, outbox, redis = make(
        tiny_bundle, config={"n_partitions": n, "clicks_topic": CONFIG.clicks_topic}
    )
    runtime = RecordingRuntime(processor)
    monkeypatch.setattr(agents, "_runtime", runtime)
    home = user_partition(b"ann", n)
    async with agents.process_clicks.test_context() as agent:
        for item, ts in [("i1", T0 + 30), ("i2", T0 + 10)]:
            await agent.put(
                encode_event("ann", item, ts),
                key=b"ann",
                partition=home,
                timestamp=ts / 1000,
                wait=False,
            )
        while sum(o.records for o in runtime.outcomes) < 2:
            await asyncio.wait_for(runtime.processed.wait(), 10)
            runtime.processed.clear()
    assert sum(o.applied for o in runtime.outcomes) == 2
    window = decode_window(store.data[b"ann"])
    assert window.items == ("i2", "i1")  # event-time order
    assert store.partitions[b"ann"] == home
    record = redis.records["ann"]
    assert record.n_behaviours == 2 and record.items == ("i2", "i1")
    assert record.model == processor.holder.tower.version
    assert not outbox.letters and not outbox.forwarded
