"""The recall HTTP service fuzzed from its own OpenAPI document (schemathesis).

``python -m recall serve`` runs as a child process on a loopback port, on the test Redis (its
own key prefix, a few stored users) and a catalogue bundle. Schemathesis generates requests
for every operation of ``recall/openapi.json`` (valid ones, and invalid ones: wrong types,
out-of-range numbers, malformed bodies) and checks each response: no 5xx, a status code the
document lists, the documented content type, a body matching the documented schema, invalid
input rejected with 4xx. Works offline: the document is read from the repository.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import Case
from schemathesis.generation import GenerationMode
from schemathesis.schemas import APIOperation

from benchmarks.catalogue import write_catalogue_bundle
from infra.ports import free_port
from mindstream.settings import Settings, known_env
from model_export.bundle import load_bundle
from recall.service import OPENAPI_PATH
from stream.record import InterestRecord, now_ms, write_records

pytestmark = [pytest.mark.integration]

EXAMPLES_PER_OPERATION = 200
# ids a generator tends to produce first: stored, so that the 200 paths are reached too
STORED_USERS = ["0", "a", "A", "00", "u1", "user"]

schema = schemathesis.openapi.from_path(OPENAPI_PATH)


@dataclasses.dataclass(frozen=True)
class RecallProcess:
    url: str
    log: Path


@pytest.fixture(scope="module")
def recall_url(
    service_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    root = tmp_path_factory.mktemp("recall-fuzz")
    prefix = f"fuzz:{os.getpid()}:{time.monotonic_ns()}:"
    embeddings = np.random.default_rng(3).standard_normal((500, 8)).astype(np.float32)
    bundle = load_bundle(write_catalogue_bundle(root / "bundles", embeddings))
    client = redis.Redis.from_url(service_settings.redis_url)
    vectors = np.random.default_rng(4).standard_normal((3, 8)).astype(np.float32)
    records = [
        InterestRecord(
            user_id=user,
            vectors=vectors,
            k=3,
            dim=8,
            model=bundle.version,
            event_ts=1_700_000_000_000,
            updated_ms=now_ms(),
            n_behaviours=2,
            seq=1,
            src="clicks/0/1",
            items=("i1", "i2"),
        )
        for user in STORED_USERS
    ]
    write_records(client, prefix, records)
    port = free_port()
    settings = dataclasses.replace(
        service_settings,
        redis_prefix=prefix,
        bundle_path=str(root / "bundles" / "current"),
        recall_port=port,
        recall_index_dir=str(root / "index"),
        recall_watch_interval_s=0.0,
        data_dir=str(root),
    )
    env = {k: v for k, v in os.environ.items() if k not in known_env()}
    env.update(settings.as_env())
    log = root / "recall.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "recall", "serve"], env=env, stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as answer:  # noqa: S310
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        for user in STORED_USERS:
            client.delete(f"{prefix}u:{{{user}}}")
        client.close()
    assert proc.returncode == 0, log.read_text()[-3000:]
    text = log.read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]


def _fuzz(operation: APIOperation, url: str, statuses: Counter[tuple[str, int]]) -> None:
    """Call ``operation`` with generated valid and invalid requests, validating each answer."""
    name = f"{operation.method.upper()} {operation.path}"

    @given(case=st.one_of([operation.as_strategy(mode) for mode in GenerationMode]))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def call(case: Case) -> None:
        response = case.call_and_validate(base_url=url, timeout=10)
        if case.method.upper() == operation.method.upper():
            statuses[(name, response.status_code)] += 1

    call()


def test_recall_api_conforms_to_its_openapi_document(recall_url: str) -> None:
    """Every operation fuzzed; every response as documented, the fuzzing reached each
    operation's success path, and no request got a 5xx."""
    statuses: Counter[tuple[str, int]] = Counter()
    operations = [result.ok() for result in schema.get_all_operations()]
    names = {f"{op.method.upper()} {op.path}" for op in operations}
    assert len(names) == 6, names
    for operation in operations:
        _fuzz(operation, recall_url, statuses)
    assert {name for name, _ in statuses} == names, statuses
    assert {name for name, status in statuses if status == 200} == names, statuses
    assert all(status < 500 for _, status in statuses), statuses


def test_method_not_allowed_lists_the_allowed_methods(recall_url: str) -> None:
    request = urllib.request.Request(f"{recall_url}/healthz", method="DELETE")  # noqa: S310
    try:
        urllib.request.urlopen(request, timeout=5)  # noqa: S310
    except urllib.error.HTTPError as exc:
        assert exc.code == 405
        assert "GET" in exc.headers.get("Allow", ""), dict(exc.headers)
    else:
        pytest.fail("DELETE /healthz was accepted")


def test_the_document_states_the_largest_n() -> None:
    document = json.loads(OPENAPI_PATH.read_text())
    query = document["paths"]["/v1/users/{user_id}/candidates"]["get"]["parameters"]
    n = next(p for p in query if p["name"] == "n")["schema"]
    body = document["components"]["schemas"]["BatchRequest"]["properties"]["n"]
    assert n.get("maximum") == body.get("maximum") == Settings().recall_max_n
