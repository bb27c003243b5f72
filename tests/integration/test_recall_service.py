"""The recall service over real HTTP and a real Redis, with records written by the stream's
record writer: candidates equal the brute-force merge over exact search; errors are JSON with
the documented statuses; bundles swap under load; a Redis outage answers 503 and heals."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from jsonschema import Draft202012Validator

from benchmarks.catalogue import write_catalogue_bundle
from infra import processes
from infra.launch import await_service, launch
from infra.redis_server import REDIS, find_redis_server
from mindstream.errors import ConfigError
from mindstream.settings import Settings
from model_export.bundle import load_bundle
from recall.merge import Candidate, category_codes, controllable_aggregate
from recall.registry import BundleWatcher, IndexRegistry
from recall.service import OPENAPI_PATH, create_app, openapi_document
from stream.record import InterestRecord, now_ms, write_records

pytestmark = pytest.mark.integration

DIM = 16
N_ITEMS = 3000
OPENAPI = json.loads(OPENAPI_PATH.read_text())


# --- helpers ---------------------------------------------------------------------------------


def catalogue(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((N_ITEMS, DIM)).astype(np.float32)


def make_record(user_id: str, vectors: np.ndarray, model: str, items=(), seq: int = 1):
    return InterestRecord(
        user_id=user_id,
        vectors=np.asarray(vectors, dtype=np.float32),
        k=len(vectors),
        dim=vectors.shape[1],
        model=model,
        event_ts=1_700_000_000_000 + seq,
        updated_ms=now_ms(),
        n_behaviours=len(items),
        seq=seq,
        src=f"clicks/0/{seq}",
        items=tuple(items),
    )


def brute_force(embeddings, vectors, n, exclude_rows=()):
    """[(item_id, score, interest)] of the global top-n by best score over all interests."""
    scores = vectors @ embeddings.T
    best, interest = scores.max(0), scores.argmax(0)
    rows = [r for r in np.argsort(-best, kind="stable") if r not in set(exclude_rows)][:n]
    return [(f"i{r}", float(best[r]), int(interest[r])) for r in rows]


def assert_candidates(body, expected):
    got = body["candidates"]
    assert [(c["item_id"], c["interest"]) for c in got] == [(i, k) for i, _, k in expected]
    np.testing.assert_allclose(
        [c["score"] for c in got], [s for _, s, _ in expected], rtol=1e-5, atol=1e-6
    )


def response_schema(path: str, method: str, status: int) -> dict:
    return OPENAPI["paths"][path][method]["responses"][str(status)]["content"]["application/json"][
        "schema"
    ]


async def checked(response, path: str, method: str = "get"):
    """The JSON body of ``response``, validated against the OpenAPI document."""
    body = await response.json()
    schema = response_schema(path, method, response.status)
    # The document is the root resource, so "#/components/..." references resolve in it.
    Draft202012Validator({**OPENAPI, **schema}).validate(body)
    return body


CANDIDATES = "/v1/users/{user_id}/candidates"
INTERESTS = "/v1/users/{user_id}/interests"
BATCH = "/v1/candidates"


@pytest.fixture
def recall_settings(service_settings: Settings, redis_prefix: str, redis_client, tmp_path: Path):
    return dataclasses.replace(
        service_settings,
        redis_prefix=redis_prefix,
        data_dir=str(tmp_path),
        bundle_path=str(tmp_path / "bundles" / "current"),
        recall_watch_interval_s=0.0,
        recall_max_n=500,
        recall_batch_max_users=10,
    )


@pytest.fixture
def first_bundle(recall_settings: Settings):
    path = write_catalogue_bundle(Path(recall_settings.bundle_path).parent, catalogue(1))
    return load_bundle(path)


@pytest.fixture
def registry(recall_settings: Settings, first_bundle) -> IndexRegistry:
    registry = IndexRegistry(recall_settings)
    registry.load(recall_settings.bundle_path)
    return registry


@pytest.fixture
async def client(recall_settings: Settings, registry: IndexRegistry):
    app = create_app(recall_settings, registry)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


# --- a record written by the stream, served -------------------------------------------------


async def test_stream_written_record_is_served_as_brute_force_merge(
    client, recall_settings, redis_client, first_bundle
):
    rng = np.random.default_rng(2)
    embeddings = first_bundle.item_embeddings
    vectors = rng.standard_normal((4, DIM)).astype(np.float32)
    # The window holds some of the user's best items (to exclude) and an id the model lacks.
    top = np.argsort(-(vectors @ embeddings.T).max(0))[:5]
    items = [f"i{r}" for r in top] + ["not-in-catalogue"]
    record = make_record("u{1}", vectors, first_bundle.version, items, seq=7)
    assert write_records(redis_client, recall_settings.redis_prefix, [record]) == [True]

    response = await client.get("/v1/users/u%7B1%7D/candidates", params={"n": "30"})
    assert response.status == 200
    body = await checked(response, CANDIDATES)
    assert body["user_id"] == "u{1}" and body["model"] == first_bundle.version
    assert body["index"] == {"kind": "flat", "exact": True}
    assert body["exclude_seen"] is True and body["seq"] == 7
    assert_candidates(body, brute_force(embeddings, vectors, 30, top))

    response = await client.get(
        "/v1/users/u%7B1%7D/candidates", params={"n": "30", "exclude_seen": "false"}
    )
    assert_candidates(await checked(response, CANDIDATES), brute_force(embeddings, vectors, 30))

    response = await client.get("/v1/users/u%7B1%7D/interests")
    assert response.status == 200
    body = await checked(response, INTERESTS)
    assert np.array_equal(np.array(body["interests"], dtype=np.float32), vectors)
    assert body["items"] == items and body["k"] == 4 and body["dim"] == DIM
    assert body["src"] == "clicks/0/7" and body["n_behaviours"] == len(items)


async def test_default_n_and_users_with_no_active_interest(
    client, recall_settings, redis_client, first_bundle
):
    write_records(
        redis_client,
        recall_settings.redis_prefix,
        [
            make_record("a", np.ones((2, DIM)), first_bundle.version),
            make_record("empty", np.zeros((0, DIM)), first_bundle.version),
        ],
    )
    body = await checked(await client.get("/v1/users/a/candidates"), CANDIDATES)
    assert len(body["candidates"]) == recall_settings.recall_default_n
    body = await checked(await client.get("/v1/users/empty/candidates"), CANDIDATES)
    assert body["candidates"] == []


async def test_batch_matches_single_calls_and_reports_each_user(
    client, recall_settings, redis_client, first_bundle
):
    rng = np.random.default_rng(5)
    records = [
        make_record(f"b{i}", rng.standard_normal((1 + i % 4, DIM)), first_bundle.version, [f"i{i}"])
        for i in range(5)
    ]
    other = make_record("old", rng.standard_normal((2, DIM)), "mind-00000000000000000000")
    write_records(redis_client, recall_settings.redis_prefix, [*records, other])
    # A hash that is not a valid record fails only its user.
    redis_client.hset(f"{recall_settings.redis_prefix}u:{{broken}}", mapping={"k": "1"})
    user_ids = ["b0", "nobody", "b1", "old", "broken", "b2", "b3", "b4", "b0"]
    response = await client.post(BATCH, json={"user_ids": user_ids, "n": 12})
    assert response.status == 200
    body = await checked(response, BATCH, "post")
    statuses = [r["status"] for r in body["results"]]
    assert statuses == ["ok", "not_found", "ok", "model_unavailable", "bad_record"] + ["ok"] * 4
    assert [r["user_id"] for r in body["results"]] == user_ids
    for result in body["results"]:
        if result["status"] != "ok":
            continue
        single = await (
            await client.get(f"/v1/users/{result['user_id']}/candidates", params={"n": "12"})
        ).json()
        assert result["candidates"] == single["candidates"]
        record = next(r for r in records if r.user_id == result["user_id"])
        exclude = [int(i[1:]) for i in record.items]
        assert_candidates(
            result, brute_force(first_bundle.item_embeddings, record.vectors, 12, exclude)
        )


# --- errors ----------------------------------------------------------------------------------


async def test_unknown_user_is_404_with_a_clear_body(client):
    response = await client.get("/v1/users/ghost/candidates")
    assert response.status == 404
    body = await checked(response, CANDIDATES)
    assert body["error"] == "user_not_found" and "ghost" in body["detail"]
    response = await client.get("/v1/users/ghost/interests")
    assert response.status == 404
    assert (await checked(response, INTERESTS))["error"] == "user_not_found"


@pytest.mark.parametrize(
    "query, parameter",
    [
        ({"n": "0"}, "n"),
        ({"n": "501"}, "n"),
        ({"n": "ten"}, "n"),
        ({"n": "1.5"}, "n"),
        ({"exclude_seen": "maybe"}, "exclude_seen"),
        ({"N": "5"}, "N"),
        ({"diversity": "1.5"}, "diversity"),
        ({"diversity": "-0.1"}, "diversity"),
        ({"diversity": "nan"}, "diversity"),
        ({"diversity": "lots"}, "diversity"),
    ],
)
async def test_bad_query_parameters_are_422(client, query, parameter):
    # Checked before Redis is read: the user need not exist.
    response = await client.get("/v1/users/ghost/candidates", params=query)
    assert response.status == 422
    body = await checked(response, CANDIDATES)
    assert body["error"] == "invalid_request" and body["parameter"] == parameter


@pytest.mark.parametrize(
    "payload, parameter",
    [
        (b"{not json", "body"),
        (b"[]", "body"),
        (b'{"user_ids": []}', "user_ids"),
        (b'{"user_ids": "u1"}', "user_ids"),
        (json.dumps({"user_ids": [f"u{i}" for i in range(11)]}).encode(), "user_ids"),
        (b'{"user_ids": [""]}', "user_id"),
        (b'{"user_ids": [7]}', "user_id"),
        (b'{"user_ids": ["u1"], "n": "5"}', "n"),
        (b'{"user_ids": ["u1"], "n": true}', "n"),
        (b'{"user_ids": ["u1"], "n": 0}', "n"),
        (b'{"user_ids": ["u1"], "exclude_seen": "no"}', "exclude_seen"),
        (b'{"user_ids": ["u1"], "users": []}', "body"),
        (b'{"user_ids": ["u1"], "diversity": "0.5"}', "diversity"),
        (b'{"user_ids": ["u1"], "diversity": true}', "diversity"),
        (b'{"user_ids": ["u1"], "diversity": 2}', "diversity"),
        (b'{"user_ids": ["u1"], "diversity": 1' + b"0" * 400 + b"}", "diversity"),
    ],
)
async def test_bad_batch_bodies_are_422(client, payload, parameter):
    response = await client.post(BATCH, data=payload, headers={"Content-Type": "application/json"})
    assert response.status == 422
    body = await checked(response, BATCH, "post")
    assert body["parameter"] == parameter


async def test_overlong_user_id_is_422_and_unknown_routes_are_json_404(client):
    response = await client.get(f"/v1/users/{'x' * 300}/candidates")
    assert response.status == 422
    response = await client.get("/v1/nothing-here")
    assert response.status == 404
    assert (await response.json())["error"] == "not_found"
    response = await client.delete("/v1/users/u/candidates")
    assert response.status == 405
    assert (await response.json())["error"] == "method_not_allowed"


async def test_vectors_of_an_unloaded_version_get_409_saying_why(
    client, recall_settings, redis_client, first_bundle
):
    stale = make_record("stale", np.ones((1, DIM)), "mind-ffffffffffffffffffff")
    write_records(redis_client, recall_settings.redis_prefix, [stale])
    response = await client.get("/v1/users/stale/candidates")
    assert response.status == 409
    body = await checked(response, CANDIDATES)
    assert body["error"] == "model_version_unavailable"
    assert body["model"] == "mind-ffffffffffffffffffff"
    assert body["loaded_models"] == [first_bundle.version]
    assert "same bundle version" in body["detail"]


# --- the diversity-aware merge --------------------------------------------------------------


def exact_pool(embeddings, vectors, width, exclude_rows=()):
    """Candidates of every interest's exact top-``width``, each item once at its best score."""
    scores = vectors @ embeddings.T
    best: dict[int, Candidate] = {}
    for k in range(len(vectors)):
        for r in np.argsort(-scores[k], kind="stable")[:width]:
            c = Candidate(int(r), float(scores[k, r]), k)
            if int(r) not in best or c.score > best[int(r)].score:
                best[int(r)] = c
    kept = [c for r, c in best.items() if r not in set(exclude_rows)]
    return sorted(kept, key=lambda c: -c.score)


def expected_diverse(embeddings, labels, vectors, n, diversity, exclude_rows=()):
    """[(item_id, score, interest)] of ComiRec's greedy aggregation over the exact pool."""
    pool = exact_pool(embeddings, vectors, n + len(exclude_rows), exclude_rows)
    picked = controllable_aggregate(pool, category_codes(labels), n, diversity)
    return [(f"i{c.row}", c.score, c.interest) for c in picked]


LABELS = ["" if i % 10 == 0 else f"genre-{i % 8}" for i in range(N_ITEMS)]


@pytest.fixture
async def diverse(recall_settings: Settings, tmp_path: Path):
    """A client of a service whose bundle carries categories, with a default diversity."""
    settings = dataclasses.replace(
        recall_settings,
        bundle_path=str(tmp_path / "categorised" / "current"),
        recall_diversity=0.25,
    )
    path = write_catalogue_bundle(
        Path(settings.bundle_path).parent, catalogue(7), item_categories=LABELS
    )
    bundle = load_bundle(path)
    registry = IndexRegistry(settings)
    registry.load(settings.bundle_path)
    async with TestClient(TestServer(create_app(settings, registry), host="127.0.0.1")) as client:
        yield client, settings, bundle


async def test_diversity_picks_by_category_as_comirecs_aggregation(diverse, redis_client):
    client, settings, bundle = diverse
    embeddings = bundle.item_embeddings
    rng = np.random.default_rng(8)
    vectors = rng.standard_normal((3, DIM)).astype(np.float32)
    top = np.argsort(-(vectors @ embeddings.T).max(0))[:4]
    record = make_record("d", vectors, bundle.version, [f"i{r}" for r in top])
    write_records(redis_client, settings.redis_prefix, [record])
    url = "/v1/users/d/candidates"
    # No parameter: the configured default (0.25).
    body = await checked(await client.get(url, params={"n": "40"}), CANDIDATES)
    assert body["diversity"] == 0.25
    assert_candidates(body, expected_diverse(embeddings, LABELS, vectors, 40, 0.25, top))
    plain = await checked(await client.get(url, params={"n": "40", "diversity": "0"}), CANDIDATES)
    assert plain["diversity"] == 0.0
    assert_candidates(plain, brute_force(embeddings, vectors, 40, top))
    # More diversity, more categories among the first picks (8 labels plus unlabelled items).
    spread = await checked(await client.get(url, params={"n": "9", "diversity": "1"}), CANDIDATES)
    assert len({LABELS[int(c["item_id"][1:])] for c in spread["candidates"]}) == 9
    # The batch route applies the same merge.
    response = await client.post(BATCH, json={"user_ids": ["d"], "n": 40, "diversity": 0.6})
    batch = await checked(response, BATCH, "post")
    assert batch["diversity"] == 0.6 and batch["results"][0]["diversity"] == 0.6
    assert_candidates(
        batch["results"][0], expected_diverse(embeddings, LABELS, vectors, 40, 0.6, top)
    )
    health = await checked(await client.get("/healthz"), "/healthz")
    assert health["index"]["categories"] is True


async def test_diversity_on_a_bundle_without_categories_says_why(
    client, recall_settings, redis_client, first_bundle
):
    write_records(
        redis_client,
        recall_settings.redis_prefix,
        [make_record("plain", np.ones((2, DIM)), first_bundle.version)],
    )
    response = await client.get("/v1/users/plain/candidates", params={"diversity": "0.3"})
    assert response.status == 409
    body = await checked(response, CANDIDATES)
    assert body["error"] == "diversity_unavailable"
    assert first_bundle.version in body["detail"] and "no item categories" in body["detail"]
    response = await client.post(BATCH, json={"user_ids": ["plain", "nobody"], "diversity": 0.3})
    body = await checked(response, BATCH, "post")
    assert [r["status"] for r in body["results"]] == ["diversity_unavailable", "not_found"]
    assert body["results"][0]["model"] == first_bundle.version
    # Diversity 0 is served as before.
    response = await client.get("/v1/users/plain/candidates", params={"diversity": "0"})
    assert response.status == 200
    text = await (await client.get("/metrics")).text()
    assert 'recall_users_total{outcome="diversity_unavailable"} 2.0' in text


def test_a_default_diversity_refuses_a_bundle_without_categories(recall_settings, first_bundle):
    settings = dataclasses.replace(recall_settings, recall_diversity=0.1)
    with pytest.raises(
        ConfigError, match=r"MINDSTREAM_RECALL_DIVERSITY=0\.1 needs item categories"
    ):
        IndexRegistry(settings).load(settings.bundle_path)


# --- service documents -----------------------------------------------------------------------


async def test_health_metrics_and_openapi(client, first_bundle):
    response = await client.get("/healthz")
    assert response.status == 200
    body = await checked(response, "/healthz")
    assert body["model"] == first_bundle.version and body["redis"] == "ok"
    assert (await client.get("/v1/users/ghost/candidates")).status == 404
    text = await (await client.get("/metrics")).text()
    route = "/v1/users/{user_id}/candidates"
    assert f'recall_requests_total{{method="GET",route="{route}",status="404"}} 1.0' in text
    assert "recall_index_items 3000.0" in text
    document = await (await client.get("/openapi.json")).json()
    # The served document states this service's largest n (recall_max_n=500 here).
    query = document["paths"][route]["get"]["parameters"]
    assert next(p for p in query if p["name"] == "n")["schema"]["maximum"] == 500
    assert document["components"]["schemas"]["BatchRequest"]["properties"]["n"]["maximum"] == 500
    assert json.loads(openapi_document(1000)) == OPENAPI


def test_openapi_document_matches_the_routes(recall_settings, registry):
    app = create_app(recall_settings, registry)
    routes = {
        (route.resource.canonical, route.method.lower())
        for route in app.router.routes()
        if route.method != "HEAD"
    }
    documented = {(path, method) for path, ops in OPENAPI["paths"].items() for method in ops}
    assert routes == documented
    Draft202012Validator.check_schema({**OPENAPI["components"]["schemas"]["BatchResult"]})


# --- hot swap --------------------------------------------------------------------------------


async def test_new_bundle_swaps_in_while_old_records_keep_their_index(
    client, recall_settings, redis_client, registry, first_bundle
):
    prefix = recall_settings.redis_prefix
    rng = np.random.default_rng(8)
    old_vectors = rng.standard_normal((3, DIM)).astype(np.float32)
    write_records(redis_client, prefix, [make_record("old", old_vectors, first_bundle.version)])
    watcher = BundleWatcher(registry, recall_settings.bundle_path, 0)
    assert await watcher.check() is None  # nothing new yet

    second = load_bundle(
        write_catalogue_bundle(Path(recall_settings.bundle_path).parent, catalogue(2))
    )

    async def old_user():
        response = await client.get("/v1/users/old/candidates", params={"n": "20"})
        assert response.status == 200
        return await response.json()

    # Requests keep flowing while the new index loads and swaps in.
    before, swapped, during = await asyncio.gather(
        old_user(), watcher.check(), asyncio.gather(*(old_user() for _ in range(20)))
    )
    assert swapped is not None and swapped.version == second.version
    assert registry.current.version == second.version
    expected = brute_force(first_bundle.item_embeddings, old_vectors, 20)
    for body in [before, *during, await old_user()]:
        assert body["model"] == first_bundle.version
        assert_candidates(body, expected)
    assert (await old_user())["current_model"] == second.version

    new_vectors = rng.standard_normal((2, DIM)).astype(np.float32)
    write_records(redis_client, prefix, [make_record("new", new_vectors, second.version)])
    body = await (await client.get("/v1/users/new/candidates", params={"n": "20"})).json()
    assert body["model"] == second.version
    assert_candidates(body, brute_force(second.item_embeddings, new_vectors, 20))

    # A third bundle evicts the first (two versions kept): its users get a 409 that says why.
    third = load_bundle(
        write_catalogue_bundle(Path(recall_settings.bundle_path).parent, catalogue(3))
    )
    assert (await watcher.check()).version == third.version
    assert registry.versions == [second.version, third.version]
    response = await client.get("/v1/users/old/candidates")
    assert response.status == 409
    assert (await response.json())["loaded_models"] == [second.version, third.version]
    # Pointing the link back at a loaded version swaps back without a rebuild.
    from model_export.bundle import point_current

    point_current(Path(recall_settings.bundle_path).parent, second.path)
    assert (await watcher.check()).version == second.version
    assert registry.versions == [third.version, second.version]
    watcher.close()


async def test_a_bundle_that_fails_to_load_is_skipped(recall_settings, registry, first_bundle):
    root = Path(recall_settings.bundle_path).parent
    broken = write_catalogue_bundle(root, catalogue(4))
    (broken / "item_ids").write_text("tampered\n")
    failures = []
    watcher = BundleWatcher(
        registry, recall_settings.bundle_path, 0, on_error=lambda p, e: failures.append(p)
    )
    assert await watcher.check() is None
    assert failures == [broken] and registry.current.version == first_bundle.version
    assert await watcher.check() is None and len(failures) == 1  # not retried in a loop
    watcher.close()


# --- Redis outage ----------------------------------------------------------------------------


@pytest.fixture
def own_redis(tmp_path: Path):
    """A redis-server of this test's own, which the test may stop and start again."""
    record = launch(REDIS, tmp_path / "own-redis", host="127.0.0.1", timeout_s=15)
    state = {"record": record}

    def restart():
        handle = processes.spawn(
            REDIS.argv(find_redis_server(), record.host, record.port, tmp_path / "own-redis"),
            record.log_path,
            cwd=tmp_path / "own-redis",
        )
        state["record"] = dataclasses.replace(record, process=handle)
        await_service(REDIS, state["record"], timeout_s=15)

    def stop():
        processes.stop(state["record"].process)

    yield record, stop, restart
    stop()


async def test_redis_outage_is_503_and_the_service_recovers(
    recall_settings, registry, first_bundle, own_redis
):
    record, stop, restart = own_redis
    settings = dataclasses.replace(
        recall_settings, redis_url=f"redis://{record.host}:{record.port}/0"
    )
    import redis

    def seed():
        direct = redis.Redis(host=record.host, port=record.port)
        write_records(
            direct,
            settings.redis_prefix,
            [make_record("u", np.ones((1, DIM)), first_bundle.version)],
        )
        direct.close()

    seed()
    async with TestClient(TestServer(create_app(settings, registry), host="127.0.0.1")) as client:
        assert (await client.get("/v1/users/u/candidates")).status == 200
        stop()
        for path in ("/v1/users/u/candidates", "/v1/users/u/interests"):
            response = await client.get(path)
            assert response.status == 503
            assert response.headers["Retry-After"] == "1"
            body = await checked(response, CANDIDATES if "candidates" in path else INTERESTS)
            assert body["error"] == "store_unavailable"
        response = await client.post(BATCH, json={"user_ids": ["u"]})
        assert response.status == 503
        response = await client.get("/healthz")
        assert response.status == 503
        assert (await checked(response, "/healthz"))["redis"] == "unavailable"

        restart()
        seed()  # this Redis keeps nothing on disk: the worker would rewrite the record
        response = await client.get("/v1/users/u/candidates")
        assert response.status == 200
        assert (await client.get("/healthz")).status == 200
        text = await (await client.get("/metrics")).text()
        assert "recall_redis_errors_total 3.0" in text


async def test_single_user_reads_alone_and_concurrent_answer_each_user(
    client, recall_settings, redis_client, first_bundle
):
    """A GET reads its user alone or, with others in flight, in one pipeline with theirs: either
    way a missing record is a 404 and an unreadable one (bad layout, a key of another type) a
    500 for that user only."""
    prefix = recall_settings.redis_prefix
    rng = np.random.default_rng(11)
    write_records(
        redis_client,
        prefix,
        [make_record("ok", rng.standard_normal((2, DIM)), first_bundle.version)],
    )
    redis_client.hset(f"{prefix}u:{{broken}}", mapping={"k": "1"})
    redis_client.set(f"{prefix}u:{{string}}", "not a hash")
    expected = {"ok": 200, "nobody": 404, "broken": 500, "string": 500}
    for user_id, status in expected.items():  # one at a time: each read alone
        response = await client.get(f"/v1/users/{user_id}/candidates")
        assert response.status == status, (user_id, await response.text())
    users = list(expected) * 4
    responses = await asyncio.gather(*(client.get(f"/v1/users/{u}/candidates") for u in users))
    assert [r.status for r in responses] == [expected[u] for u in users]
    for user_id, response in zip(users, responses, strict=True):
        body = await response.json()
        if response.status == 200:
            assert body["user_id"] == user_id
        elif response.status == 500:
            assert body["error"] == "bad_record" and user_id in body["detail"], body


async def test_a_record_of_another_dimension_fails_only_its_user(
    client, recall_settings, redis_client, first_bundle
):
    """Vectors whose dimension is not the index's (a record written by another tool) are a
    bad record: a 500 naming it for a GET, one bad_record result in a batch whose other users
    are served."""
    rng = np.random.default_rng(13)
    good = rng.standard_normal((2, DIM))
    write_records(
        redis_client,
        recall_settings.redis_prefix,
        [
            make_record("good", good, first_bundle.version),
            make_record("wide", rng.standard_normal((2, DIM + 3)), first_bundle.version),
        ],
    )
    response = await client.get(CANDIDATES.format(user_id="wide"))
    body = await checked(response, CANDIDATES)
    assert response.status == 500 and body["error"] == "bad_record"
    assert "'wide'" in body["detail"] and f"dim {DIM}" in body["detail"], body
    response = await client.post(BATCH, json={"user_ids": ["good", "wide"], "n": 5})
    body = await checked(response, BATCH, "post")
    assert response.status == 200
    ok, wide = body["results"]
    assert ok["status"] == "ok"
    assert_candidates(ok, brute_force(first_bundle.item_embeddings, good, 5))
    assert wide["status"] == "bad_record" and f"dim {DIM}" in wide["detail"]
