"""The recall HTTP service (aiohttp): users' interests from Redis, candidates from the index.

Handlers are thin: parse and check the request, read records through ``stream.record``, pick the
index of the record's bundle version from the registry, and call the pure recall functions.
Errors are raised as the recall exceptions and turned into JSON responses in one middleware:
404 unknown user, 422 bad parameters, 409 vectors from a bundle version that is not loaded,
503 Redis unavailable (the client reconnects by itself once Redis is back).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import prometheus_client
import redis.asyncio
from aiohttp import web
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from mindstream.redis_config import async_redis_client
from mindstream.settings import Settings
from recall.candidates import Query, recall_many
from recall.exceptions import (
    DiversityUnavailable,
    InvalidRequest,
    ModelVersionUnavailable,
    RecallError,
    StoreUnavailable,
    UserNotFound,
)
from recall.index import ItemIndex
from recall.merge import Candidate
from recall.metrics import RecallMetrics
from recall.reads import CoalescedReads
from recall.registry import BundleWatcher, IndexRegistry
from stream.exceptions import RecordError, RecordRefused
from stream.record import InterestRecord, read_each_async, read_interests_async, record_json

logger = logging.getLogger(__name__)

OPENAPI_PATH = Path(__file__).with_name("openapi.json")
MAX_USER_ID_LENGTH = 256
# Searches of more query vectors than this run in a worker thread (Faiss releases the GIL), so a
# big batch does not hold up the event loop; small ones run inline, which is faster.
INLINE_MAX_QUERIES = 64
RETRY_AFTER_S = "1"
TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off"}
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError, asyncio.TimeoutError)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# A read of one user's record: the record, None (no record), or why it cannot be served.
RecordOutcome = InterestRecord | RecordError | None


def _dumps(payload: Any) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


def fast_json_response(payload: Any) -> web.Response:
    """A 200 JSON response serialised with orjson: the candidate responses, where Python's json
    module cost more per request than the rest of the handler's own work."""
    return web.Response(body=orjson.dumps(payload), content_type="application/json")


def openapi_document(max_n: int) -> bytes:
    """The kept OpenAPI document, with the largest ``n`` this service accepts."""
    document = json.loads(OPENAPI_PATH.read_text(encoding="utf-8"))
    query = document["paths"]["/v1/users/{user_id}/candidates"]["get"]["parameters"]
    next(p for p in query if p["name"] == "n")["schema"]["maximum"] = max_n
    document["components"]["schemas"]["BatchRequest"]["properties"]["n"]["maximum"] = max_n
    return json.dumps(document, indent=2).encode()


def error_response(
    status: int, code: str, detail: str, headers: Mapping[str, str] | None = None, **extra: Any
) -> web.Response:
    """A JSON error body: ``{"error": code, "detail": message, ...}``."""
    return web.json_response(
        {"error": code, "detail": detail, **extra}, status=status, headers=headers, dumps=_dumps
    )


def failed_user(user_id: str, status: str, detail: str, **extra: Any) -> dict[str, Any]:
    """One user's result in a batch response when that user cannot be served."""
    return {"user_id": user_id, "status": status, "detail": detail, **extra}


def candidates_list(item_index: ItemIndex, candidates: list[Candidate]) -> list[dict[str, Any]]:
    """The ``candidates`` array of a response (one comprehension: a function call per candidate
    cost more than building its dict)."""
    ids = item_index.item_ids
    return [{"item_id": ids[c.row], "score": c.score, "interest": c.interest} for c in candidates]


class RecallService:
    """The request handlers and what they share: settings, indexes, Redis, metrics."""

    def __init__(
        self,
        settings: Settings,
        registry: IndexRegistry,
        *,
        metrics: RecallMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.metrics = metrics or RecallMetrics()
        self.redis: redis.asyncio.Redis | None = None
        self._openapi = openapi_document(settings.recall_max_n)
        # Labelled metric children looked up once: labels() costs a lock and a dict per call.
        self._users_ok = self.metrics.users.labels("ok")
        # Single-user reads that requests reach in the same loop round share one pipeline.
        self._reads: CoalescedReads[RecordOutcome] = CoalescedReads(self._read_one, self._read_each)
        self._children: dict[tuple[str, ...], Any] = {}
        registry.on_swap(self._on_swap)
        if registry.current is not None:
            self._on_swap(registry.current, [])

    # --- wiring --------------------------------------------------------------------------

    def _on_swap(self, item_index: ItemIndex, evicted: list[str]) -> None:
        self.metrics.index_swaps.inc()
        self.metrics.loaded_versions.set(len(self.registry.versions))
        self.metrics.index_items.set(item_index.n_items)

    def connect_redis(self) -> redis.asyncio.Redis:
        timeout = self.settings.recall_redis_timeout_ms / 1000
        # One immediate retry: the first command on a connection that Redis closed (restart)
        # fails, the retry reconnects. More retries with backoff would only delay the 503.
        return async_redis_client(
            self.settings,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
            decode_responses=False,
        )

    def _client(self) -> redis.asyncio.Redis:
        if self.redis is None:
            raise RecallError("the Redis client is not started (the app is not running)")
        return self.redis

    # --- Redis reads ---------------------------------------------------------------------

    async def read_record(self, user_id: str) -> InterestRecord:
        started = time.perf_counter()
        try:
            outcome = await self._reads.read(user_id)
        except REDIS_DOWN as exc:
            self.metrics.redis_errors.inc()
            raise StoreUnavailable(f"Redis did not answer: {exc}") from exc
        finally:
            self.metrics.redis_seconds.observe(time.perf_counter() - started)
        if isinstance(outcome, RecordError):
            raise outcome
        if outcome is None:
            self.metrics.users.labels("not_found").inc()
            raise UserNotFound(
                f"no interest record for user {user_id!r}: the stream worker writes one after "
                "the user's first click on an item the model knows"
            )
        return outcome

    async def _read_one(self, user_id: str) -> RecordOutcome:
        """One user's record as a plain HGETALL; an error reply or a record that does not
        decode is returned (as :func:`read_each_async` returns it), a lost connection raises."""
        try:
            return await read_interests_async(self._client(), self.settings.redis_prefix, user_id)
        except ResponseError as exc:
            return RecordRefused(f"Redis refused to read the record of {user_id!r}: {exc}")
        except RecordError as exc:
            return exc

    async def _read_each(self, user_ids: Sequence[str]) -> list[RecordOutcome]:
        return await read_each_async(self._client(), self.settings.redis_prefix, user_ids)

    async def read_records(
        self, user_ids: Sequence[str]
    ) -> list[InterestRecord | RecordError | None]:
        """Records of many users in one pipeline; a malformed record fails only its user."""
        started = time.perf_counter()
        try:
            return await read_each_async(self._client(), self.settings.redis_prefix, user_ids)
        except REDIS_DOWN as exc:
            self.metrics.redis_errors.inc()
            raise StoreUnavailable(f"Redis did not answer: {exc}") from exc
        finally:
            self.metrics.redis_seconds.observe(time.perf_counter() - started)

    # --- search ----------------------------------------------------------------------------

    async def search(
        self, item_index: ItemIndex, queries: Sequence[Query]
    ) -> list[list[Candidate]]:
        n_vectors = sum(len(q.vectors) for q in queries)
        started = time.perf_counter()
        if n_vectors <= INLINE_MAX_QUERIES:
            results = recall_many(item_index, queries)
        else:
            loop = asyncio.get_running_loop()
            results = await loop.run_in_executor(None, recall_many, item_index, queries)
        self._child("search", item_index.kind).observe(time.perf_counter() - started)
        return results

    def _child(self, metric: str, *labels: str) -> Any:
        """The metric child of ``metric`` ("search", "served", "requests", "latency") for
        ``labels``, cached (label sets are few: routes, statuses, kinds, loaded versions)."""
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            family = {
                "search": self.metrics.search_seconds,
                "served": self.metrics.served_by_version,
                "requests": self.metrics.requests,
                "latency": self.metrics.latency,
            }[metric]
            child = self._children[key] = family.labels(*labels)
        return child

    def index_for(self, record: InterestRecord, users: int = 1) -> ItemIndex:
        """The index of the record's bundle version (``users`` records share it)."""
        try:
            item_index = self.registry.require(record.model)
        except ModelVersionUnavailable:
            self.metrics.users.labels("model_unavailable").inc(users)
            raise
        current = self.registry.current
        is_current = current is not None and current.version == item_index.version
        self._child("served", record.model, "true" if is_current else "false").inc(users)
        return item_index

    def check_fits(self, record: InterestRecord, item_index: ItemIndex) -> RecordError | None:
        """Why the record cannot be searched in its model's index (vectors of another
        dimension: a record written by something other than the worker), or None."""
        reason = item_index.misfit(record.vectors)
        if reason is None:
            return None
        self.metrics.users.labels("bad_record").inc()
        return RecordError(f"record of {record.user_id!r}: {reason}")

    def check_diversity_served(
        self, item_index: ItemIndex, diversity: float, users: int = 1
    ) -> None:
        """Refuse a diversity above 0 for a bundle without item categories."""
        if diversity > 0 and item_index.categories is None:
            self.metrics.users.labels("diversity_unavailable").inc(users)
            raise DiversityUnavailable(item_index.version)

    def query_for(
        self, record: InterestRecord, n: int, exclude_seen: bool, diversity: float = 0.0
    ) -> Query:
        return Query(record.vectors, n, record.items if exclude_seen else (), diversity)

    def candidates_json(
        self,
        record: InterestRecord,
        item_index: ItemIndex,
        candidates: list[Candidate],
        query: Query,
        exclude_seen: bool,
    ) -> dict[str, Any]:
        current = self.registry.current
        return {
            "user_id": record.user_id,
            "model": record.model,
            "current_model": current.version if current is not None else None,
            "index": {"kind": item_index.kind, "exact": item_index.exact},
            "n": query.n,
            "exclude_seen": exclude_seen,
            "diversity": query.diversity,
            "event_ts": record.event_ts,
            "updated_ms": record.updated_ms,
            "seq": record.seq,
            "candidates": candidates_list(item_index, candidates),
        }

    # --- handlers ------------------------------------------------------------------------

    async def get_interests(self, request: web.Request) -> web.Response:
        check_query(request, set())
        record = await self.read_record(user_id_of(request))
        self.metrics.users.labels("ok").inc()
        return web.json_response(record_json(record, vectors="interests"), dumps=_dumps)

    async def get_candidates(self, request: web.Request) -> web.Response:
        check_query(request, {"n", "exclude_seen", "diversity"})
        n = parse_n(request.query.get("n"), self.settings)
        exclude_seen = parse_bool("exclude_seen", request.query.get("exclude_seen"), True)
        diversity = parse_diversity(request.query.get("diversity"), self.settings)
        record = await self.read_record(user_id_of(request))
        item_index = self.index_for(record)
        misfit = self.check_fits(record, item_index)
        if misfit is not None:
            raise misfit
        self.check_diversity_served(item_index, diversity)
        query = self.query_for(record, n, exclude_seen, diversity)
        (candidates,) = await self.search(item_index, [query])
        self._users_ok.inc()
        return fast_json_response(
            self.candidates_json(record, item_index, candidates, query, exclude_seen)
        )

    async def post_candidates(self, request: web.Request) -> web.Response:
        check_query(request, set())
        user_ids, n, exclude_seen, diversity = await self.parse_batch(request)
        records = await self.read_records(user_ids)
        results: list[dict[str, Any] | None] = [None] * len(user_ids)
        by_version: dict[str, list[tuple[int, InterestRecord]]] = {}
        for position, (user_id, record) in enumerate(zip(user_ids, records, strict=True)):
            if record is None:
                self.metrics.users.labels("not_found").inc()
                results[position] = failed_user(
                    user_id, "not_found", f"no interest record for user {user_id!r}"
                )
            elif isinstance(record, RecordError):
                self.metrics.users.labels("bad_record").inc()
                results[position] = failed_user(user_id, "bad_record", str(record))
            else:
                by_version.setdefault(record.model, []).append((position, record))
        for version, group in by_version.items():
            # A version this replica cannot serve as asked fails its users, not the call.
            try:
                item_index = self.index_for(group[0][1], users=len(group))
                self.check_diversity_served(item_index, diversity, users=len(group))
            except (ModelVersionUnavailable, DiversityUnavailable) as exc:
                status = (
                    "model_unavailable"
                    if isinstance(exc, ModelVersionUnavailable)
                    else "diversity_unavailable"
                )
                for position, record in group:
                    results[position] = failed_user(record.user_id, status, str(exc), model=version)
                continue
            fitting = []
            for position, record in group:
                misfit = self.check_fits(record, item_index)
                if misfit is None:
                    fitting.append((position, record))
                else:
                    results[position] = failed_user(record.user_id, "bad_record", str(misfit))
            group = fitting
            if not group:
                continue
            queries = [self.query_for(r, n, exclude_seen, diversity) for _, r in group]
            found = await self.search(item_index, queries)
            for (position, record), query, candidates in zip(group, queries, found, strict=True):
                self._users_ok.inc()
                body = self.candidates_json(record, item_index, candidates, query, exclude_seen)
                results[position] = {"status": "ok", **body}
        return fast_json_response(
            {"n": n, "exclude_seen": exclude_seen, "diversity": diversity, "results": results}
        )

    async def parse_batch(self, request: web.Request) -> tuple[list[str], int, bool, float]:
        try:
            body = await request.json(loads=json.loads)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidRequest("body", f"not valid JSON ({exc})") from None
        if not isinstance(body, dict):
            raise InvalidRequest("body", "expected a JSON object with user_ids")
        unknown = sorted(set(body) - {"user_ids", "n", "exclude_seen", "diversity"})
        if unknown:
            raise InvalidRequest(
                "body", f"unknown fields {unknown}; expected user_ids, n, exclude_seen, diversity"
            )
        user_ids = body.get("user_ids")
        limit = self.settings.recall_batch_max_users
        if not isinstance(user_ids, list) or not 1 <= len(user_ids) <= limit:
            raise InvalidRequest("user_ids", f"expected a list of 1 to {limit} user ids")
        for user_id in user_ids:
            check_user_id(user_id)
        n = body.get("n", self.settings.recall_default_n)
        # JSON Schema counts 2.0 as an integer; accept it like 2, refuse 2.5.
        if isinstance(n, float) and n.is_integer():
            n = int(n)
        if not isinstance(n, int) or isinstance(n, bool):
            raise InvalidRequest("n", f"expected an integer, got {n!r}")
        check_n(n, self.settings)
        exclude_seen = body.get("exclude_seen", True)
        if not isinstance(exclude_seen, bool):
            raise InvalidRequest("exclude_seen", f"expected true or false, got {exclude_seen!r}")
        diversity = body.get("diversity", self.settings.recall_diversity)
        # Compared before float(): JSON integers are unbounded and float() overflows on some.
        if (
            isinstance(diversity, bool)
            or not isinstance(diversity, int | float)
            or not 0 <= diversity <= 1
        ):
            raise InvalidRequest("diversity", f"expected a number in [0, 1], got {diversity!r}")
        return user_ids, n, exclude_seen, float(diversity)

    async def healthz(self, request: web.Request) -> web.Response:
        current = self.registry.current
        redis_ok = True
        try:
            await self._client().ping()
        except (*REDIS_DOWN, RedisError):
            redis_ok = False
        healthy = redis_ok and current is not None
        return web.json_response(
            {
                "status": "ok" if healthy else "unavailable",
                "redis": "ok" if redis_ok else "unavailable",
                "model": current.version if current is not None else None,
                "loaded_models": self.registry.versions,
                "index": current.describe() if current is not None else None,
            },
            status=200 if healthy else 503,
            dumps=_dumps,
        )

    async def prometheus(self, request: web.Request) -> web.Response:
        body = prometheus_client.generate_latest(self.metrics.registry)
        return web.Response(
            body=body, headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST}
        )

    async def openapi(self, request: web.Request) -> web.Response:
        return web.Response(body=self._openapi, content_type="application/json")

    # --- middleware ------------------------------------------------------------------------

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        route = _route_name(request)
        try:
            response = await handler(request)
        except InvalidRequest as exc:
            response = error_response(422, "invalid_request", str(exc), parameter=exc.parameter)
        except UserNotFound as exc:
            response = error_response(404, "user_not_found", str(exc))
        except ModelVersionUnavailable as exc:
            response = error_response(
                409,
                "model_version_unavailable",
                str(exc),
                model=exc.record_version,
                loaded_models=exc.loaded,
            )
        except DiversityUnavailable as exc:
            response = error_response(409, "diversity_unavailable", str(exc))
        except StoreUnavailable as exc:
            logger.warning("redis unavailable route=%s error=%s", route, exc)
            response = error_response(
                503, "store_unavailable", str(exc), headers={"Retry-After": RETRY_AFTER_S}
            )
        except RecordError as exc:
            logger.error("bad interest record route=%s error=%s", route, exc)
            response = error_response(500, "bad_record", str(exc))
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            # Keep aiohttp's own headers (e.g. Allow on 405, which RFC 9110 requires).
            kept = {k: v for k, v in exc.headers.items() if k.lower() != "content-type"}
            response = error_response(exc.status, _http_code(exc.status), exc.reason, headers=kept)
        except Exception:
            logger.exception("request failed route=%s", route)
            response = error_response(
                500, "internal_error", "unexpected error; see the service log"
            )
        self._child("requests", route, request.method, str(response.status)).inc()
        self._child("latency", route).observe(time.perf_counter() - started)
        return response


def _route_name(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def _http_code(status: int) -> str:
    return {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(
        status, "http_error"
    )


def user_id_of(request: web.Request) -> str:
    user_id = request.match_info["user_id"]
    check_user_id(user_id)
    return user_id


def check_user_id(user_id: object) -> None:
    if not isinstance(user_id, str) or not 1 <= len(user_id) <= MAX_USER_ID_LENGTH:
        raise InvalidRequest(
            "user_id", f"expected a non-empty string of at most {MAX_USER_ID_LENGTH} characters"
        )


def check_query(request: web.Request, allowed: set[str]) -> None:
    unknown = sorted(set(request.query) - allowed)
    if unknown:
        raise InvalidRequest(
            unknown[0], f"unknown query parameters {unknown}; expected {sorted(allowed) or 'none'}"
        )


def parse_n(raw: str | None, settings: Settings) -> int:
    if raw is None:
        return settings.recall_default_n
    try:
        n = int(raw)
    except ValueError:
        raise InvalidRequest("n", f"expected an integer, got {raw!r}") from None
    check_n(n, settings)
    return n


def check_n(n: int, settings: Settings) -> None:
    if not 1 <= n <= settings.recall_max_n:
        raise InvalidRequest(
            "n", f"expected 1 <= n <= {settings.recall_max_n} (MINDSTREAM_RECALL_MAX_N), got {n}"
        )


def parse_diversity(raw: str | None, settings: Settings) -> float:
    """The ``diversity`` query parameter: λ in [0, 1] (default MINDSTREAM_RECALL_DIVERSITY)."""
    if raw is None:
        return settings.recall_diversity
    try:
        value = float(raw)
    except ValueError:
        raise InvalidRequest("diversity", f"expected a number in [0, 1], got {raw!r}") from None
    # `not 0 <= value` also refuses NaN.
    if not 0.0 <= value <= 1.0:
        raise InvalidRequest("diversity", f"expected a number in [0, 1], got {value}")
    return value


def parse_bool(name: str, raw: str | None, default: bool) -> bool:
    if raw is None:
        return default
    lowered = raw.strip().lower()
    if lowered in TRUE_WORDS:
        return True
    if lowered in FALSE_WORDS:
        return False
    raise InvalidRequest(name, f"expected true or false, got {raw!r}")


def create_app(
    settings: Settings,
    registry: IndexRegistry,
    *,
    metrics: RecallMetrics | None = None,
    watch: bool = True,
) -> web.Application:
    """The aiohttp application; Redis is connected and the bundle watcher started on startup."""
    service = RecallService(settings, registry, metrics=metrics)
    app = web.Application(middlewares=[service.middleware])
    app[SERVICE_KEY] = service
    # Any user id but "/" (the default pattern also refuses braces, which user ids may hold).
    app.router.add_get("/v1/users/{user_id:[^/]+}/interests", service.get_interests)
    app.router.add_get("/v1/users/{user_id:[^/]+}/candidates", service.get_candidates)
    app.router.add_post("/v1/candidates", service.post_candidates)
    app.router.add_get("/healthz", service.healthz)
    app.router.add_get("/metrics", service.prometheus)
    app.router.add_get("/openapi.json", service.openapi)

    async def redis_client(app: web.Application) -> AsyncIterator[None]:
        service.redis = service.connect_redis()
        yield
        await service.redis.aclose()  # type: ignore[attr-defined]  # stubs predate redis 5
        service.redis = None

    async def bundle_watcher(app: web.Application) -> AsyncIterator[None]:
        if not watch or settings.recall_watch_interval_s <= 0:
            yield
            return
        watcher = BundleWatcher(
            registry,
            settings.bundle_path,
            settings.recall_watch_interval_s,
            on_error=lambda path, exc: service.metrics.index_load_failures.inc(),
        )
        app[WATCHER_KEY] = watcher
        task = asyncio.create_task(watcher.run(), name="recall-bundle-watcher")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        watcher.close()

    app.cleanup_ctx.append(redis_client)
    app.cleanup_ctx.append(bundle_watcher)
    return app


SERVICE_KEY = web.AppKey("recall_service", RecallService)
WATCHER_KEY = web.AppKey("recall_watcher", BundleWatcher)
