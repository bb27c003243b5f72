"""``mindstream bench recall``: latency and throughput of the recall service next to bare Faiss.

For each catalogue size it writes (or reuses) a structured synthetic catalogue bundle, and for
each index kind asked for (``--index ivf,ivfpq`` measures both in one run, the same users and
queries for each) loads (or builds) that index, writes users' interest records to a throw-away
Redis with the stream's record writer, and measures: bare Faiss search for the same queries the
service runs, search + merge in-process, single-user HTTP requests (sequential; then
concurrent, each client sending its next request as soon as the last is answered, which gives
the throughput ceiling and the latency at saturation; then paced, the same clients offered a
fixed rate, ``--rate``, which gives the latency at that load), batched HTTP requests, and ANN
recall@k against exact search (``IndexFlatIP`` brute force). The HTTP client is a minimal
keep-alive one (``HttpConnection``, one connection per concurrent client, on uvloop) that
still checks every response (status, user, candidate count and order): on a 2-core box its CPU
competes with the service's, and it reports both per request. With ``--bundle`` it also
measures ANN recall on a trained bundle, with queries from its user tower over real behaviour
windows.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from benchmarks.catalogue import gaussian_mixture_catalogue, write_catalogue_bundle
from mindstream.settings import Settings
from model_export.bundle import Bundle, load_bundle
from recall.candidates import Query, recall_many
from recall.index import KINDS, ItemIndex, build_index, choose_spec, open_index
from recall.quality import recall_at_k

logger = logging.getLogger(__name__)

ITEMS_PER_CLUSTER = 500
INDEX_KINDS = ("auto", *KINDS)
SERVICE_START_TIMEOUT_S = 900.0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mindstream bench recall", description=__doc__)
    p.add_argument("--sizes", default="100000,1000000", help="catalogue sizes, comma separated")
    p.add_argument("--dim", type=int, default=64, help="embedding dimension (default 64)")
    p.add_argument("--k", type=int, default=4, help="interests per user (default 4)")
    p.add_argument("--n", type=int, default=50, help="candidates per request (default 50)")
    p.add_argument("--window", type=int, default=20, help="seen items per user (default 20)")
    p.add_argument("--users", type=int, default=5000, help="users written to Redis")
    p.add_argument("--requests", type=int, default=2000, help="single-user requests timed")
    p.add_argument("--concurrency", type=int, default=8, help="clients in the throughput run")
    p.add_argument(
        "--rate",
        type=_rates,
        default=[1000.0],
        help="offered loads for the paced runs, requests/s over the --concurrency clients, "
        "comma separated (default 1000; empty to skip)",
    )
    p.add_argument("--batch-users", type=int, default=100, help="users per batch request")
    p.add_argument("--batch-requests", type=int, default=100, help="batch requests timed")
    p.add_argument("--recall-queries", type=int, default=1000, help="queries for recall@n")
    p.add_argument(
        "--index",
        type=_kinds,
        default=None,
        help="index kinds served, comma separated, each measured in turn (default: the "
        "settings' MINDSTREAM_RECALL_INDEX)",
    )
    p.add_argument("--compare", default="ivfpq,ivf", help="ANN kinds measured for recall@n")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="service processes sharing the port (default: MINDSTREAM_RECALL_WORKERS)",
    )
    p.add_argument("--work-dir", default=None, help="catalogues and Redis (default var/bench)")
    p.add_argument("--redis-url", default=None, help="use this Redis instead of starting one")
    p.add_argument("--bundle", default=None, help="a trained bundle: measure ANN recall on it")
    p.add_argument("--data", default=None, help="behaviour data for --bundle's tower queries")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--no-service", action="store_true", help="skip the HTTP measurements")
    return p


def _rates(text: str) -> list[float]:
    try:
        rates = [float(r) for r in text.split(",") if r]
    except ValueError:
        rates = [-1.0]
    if any(not 0 < r < 1e6 for r in rates):
        raise argparse.ArgumentTypeError(f"{text!r}: expected requests/s above 0, comma separated")
    return rates


def _kinds(text: str) -> list[str]:
    kinds = [k for k in text.split(",") if k]
    unknown = sorted(set(kinds) - set(INDEX_KINDS))
    if not kinds or unknown:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected index kinds from {list(INDEX_KINDS)}, comma separated"
        )
    return kinds


def main(argv: Sequence[str], settings: Settings) -> int:
    args = build_parser().parse_args(list(argv)[1:])
    if args.workers is not None:
        settings = dataclasses.replace(settings, recall_workers=args.workers)
    kinds = args.index or [settings.recall_index]
    work_dir = bench_work_dir(args.work_dir, settings)
    results: dict[str, Any] = {"machine": machine(), "args": vars(args), "catalogues": []}
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s]
    try:
        with redis_for_bench(args.redis_url if sizes else "unused", work_dir) as redis_url:
            for n_items in sizes:
                for position, kind in enumerate(kinds):
                    result = bench_catalogue(
                        n_items,
                        args,
                        dataclasses.replace(settings, recall_index=kind),
                        work_dir,
                        redis_url,
                        ann_recall=position == 0,
                    )
                    results["catalogues"].append(result)
                    print_catalogue(result)
    finally:
        gc.unfreeze()
    if args.bundle:
        results["bundle"] = bench_bundle_recall(args, settings)
        print(json.dumps({"bundle": results["bundle"]}, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


# --- set-up ----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    import faiss

    cpu = ""
    with open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "faiss": faiss.__version__,
        "faiss_threads": faiss.omp_get_max_threads(),
        "python": sys.version.split()[0],
    }


@contextmanager
def redis_for_bench(url: str | None, work_dir: Path) -> Iterator[str]:
    if url:
        yield url
        return
    from infra import processes
    from infra.launch import launch
    from infra.redis_server import REDIS

    record = launch(REDIS, work_dir / "redis", host="127.0.0.1", timeout_s=30)
    try:
        yield f"redis://{record.host}:{record.port}/0"
    finally:
        processes.stop(record.process)


def bench_work_dir(path: str | None, settings: Settings) -> Path:
    """The folder for catalogues and the bench's Redis (``var/bench/recall`` by default),
    created, as an absolute path: redis-server runs in a folder of its own and resolves paths
    from there."""
    work_dir = Path(path) if path else settings.data_path / "bench" / "recall"
    work_dir = work_dir.resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    return work_dir


def write_users(client: Any, prefix: str, records: Sequence[Any]) -> None:
    """Write the bench users' interest records under ``prefix``, 1,000 per call."""
    from stream.record import write_records

    for start in range(0, len(records), 1000):
        write_records(client, prefix, records[start : start + 1000])


def catalogue_bundle(work_dir: Path, n_items: int, dim: int, k: int, seed: int = 0) -> Bundle:
    """The synthetic catalogue bundle for these parameters, written on first use."""
    n_clusters = max(50, n_items // ITEMS_PER_CLUSTER)
    root = work_dir / f"catalogue-n{n_items}-d{dim}-c{n_clusters}-s{seed}"
    current = root / "current"
    if current.exists():
        return load_bundle(current)
    print(f"writing catalogue n={n_items} dim={dim} clusters={n_clusters} -> {root}", flush=True)
    catalogue = gaussian_mixture_catalogue(n_items, dim, n_clusters=n_clusters, seed=seed)
    write_catalogue_bundle(root, catalogue.embeddings, k=k)
    return load_bundle(current)


def bench_users(bundle: Bundle, n_users: int, k: int, window: int, seed: int) -> list[Any]:
    """Interest records of synthetic users: interests near the catalogue's clusters (estimated
    from the bundle itself), windows of random catalogue items."""
    from stream.record import InterestRecord, now_ms

    rng = np.random.default_rng(seed)
    # Cluster structure as a user would see it: interests near real items, squashed.
    anchors = bundle.item_embeddings[rng.choice(bundle.n_items, size=(n_users, k))]
    noise = rng.standard_normal(anchors.shape, dtype=np.float32) * (0.5 / np.sqrt(bundle.dim))
    vectors = anchors + noise
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    vectors = (vectors * (norms / (1 + norms**2))).astype(np.float32)
    records = []
    for u in range(n_users):
        items = [bundle.item_ids[i] for i in rng.choice(bundle.n_items, size=window)]
        records.append(
            InterestRecord(
                user_id=f"bench-{u}",
                vectors=vectors[u],
                k=k,
                dim=bundle.dim,
                model=bundle.version,
                event_ts=1_700_000_000_000,
                updated_ms=now_ms(),
                n_behaviours=window,
                seq=1,
                src="bench/0/0",
                items=tuple(items),
            )
        )
    return records


# --- measurements ----------------------------------------------------------------------------


def percentiles_ms(seconds: Sequence[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
    }


def time_calls(calls: int, fn: Any) -> tuple[list[float], float]:
    latencies = []
    started = time.perf_counter()
    for i in range(calls):
        t0 = time.perf_counter()
        fn(i)
        latencies.append(time.perf_counter() - t0)
    return latencies, time.perf_counter() - started


def bench_bare(item_index: ItemIndex, records: list[Any], args: argparse.Namespace) -> dict:
    users = len(records)
    queries = [Query(r.vectors, args.n, r.items) for r in records]
    widths = [args.n + len(item_index.rows_of(r.items)) for r in records]

    def search(i: int) -> None:
        item_index.search(records[i % users].vectors, widths[i % users])

    def search_merge(i: int) -> None:
        recall_many(item_index, [queries[i % users]])

    b = args.batch_users

    def batch_search(i: int) -> None:
        chosen = [(i * b + j) % users for j in range(b)]
        stacked = np.concatenate([records[u].vectors for u in chosen])
        item_index.search(stacked, max(widths[u] for u in chosen))

    def batch_merge(i: int) -> None:
        recall_many(item_index, [queries[(i * b + j) % users] for j in range(b)])

    out = {}
    for name, fn, calls in (
        ("faiss_single", search, args.requests),
        ("search_merge_single", search_merge, args.requests),
        ("faiss_batch", batch_search, args.batch_requests),
        ("search_merge_batch", batch_merge, args.batch_requests),
    ):
        fn(0)  # warm-up
        latencies, total = time_calls(calls, fn)
        out[name] = {**percentiles_ms(latencies), "calls_per_s": round(calls / total, 1)}
    return out


def bench_ann_recall(
    bundle: Bundle, settings: Settings, queries: np.ndarray, kinds: Sequence[str], n: int
) -> dict[str, Any]:
    if not kinds:
        return {}
    exact = build_index(bundle, choose_spec(bundle.n_items, settings, "flat"), progress=False)
    _, truth = exact.search(queries, n)
    out: dict[str, Any] = {}
    for kind in kinds:
        started = time.perf_counter()
        approx = open_index(bundle, settings, kind=kind, progress=sys.stderr.isatty())
        load_s = time.perf_counter() - started
        t0 = time.perf_counter()
        _, rows = approx.search(queries, n)
        search_s = time.perf_counter() - t0
        out[kind] = {
            f"recall@{n}": round(recall_at_k(rows, truth), 4),
            "params": {**approx.spec.build, **approx.spec.search},
            "open_s": round(load_s, 1),
            "source": approx.source,
            "search_ms_per_query": round(search_s / len(queries) * 1000, 4),
        }
    return out


def bench_catalogue(
    n_items: int,
    args: argparse.Namespace,
    settings: Settings,
    work_dir: Path,
    redis_url: str,
    *,
    ann_recall: bool = True,
) -> dict[str, Any]:
    from mindstream.redis_config import redis_client

    bundle = catalogue_bundle(work_dir, n_items, args.dim, args.k)
    started = time.perf_counter()
    item_index = open_index(bundle, settings, progress=sys.stderr.isatty())
    # As the service does (see IndexRegistry.install): keep the catalogue out of GC passes.
    gc.freeze()
    result: dict[str, Any] = {
        "n_items": n_items,
        "dim": bundle.dim,
        "index": item_index.describe(),
        "index_open_s": round(time.perf_counter() - started, 1),
        "load_average": list(os.getloadavg()),
    }
    records = bench_users(bundle, args.users, args.k, args.window, seed=n_items)
    result["bare"] = bench_bare(item_index, records, args)
    queries = np.concatenate([r.vectors for r in records[: max(1, args.recall_queries // args.k)]])
    kinds = [k for k in args.compare.split(",") if k] if ann_recall else []
    result["ann_recall"] = bench_ann_recall(bundle, settings, queries, kinds, args.n)
    if args.no_service:
        return result
    # The service process loads its own copy; this one's is no longer needed.
    del item_index
    prefix = f"bench:recall:{uuid.uuid4().hex[:8]}:"
    service_settings = dataclasses.replace(
        settings,
        redis_url=redis_url,
        # the bench's own redis-server (no --redis-url) is a single node
        redis_cluster=settings.redis_cluster and bool(args.redis_url),
        redis_prefix=prefix,
        bundle_path=str(bundle.path),
        recall_watch_interval_s=0.0,
        recall_max_n=max(settings.recall_max_n, args.n),
        recall_batch_max_users=max(settings.recall_batch_max_users, args.batch_users),
    )
    client = redis_client(service_settings)
    try:
        write_users(client, prefix, records)
        result["service"] = bench_service(service_settings, records, args)
        result["service"]["workers"] = service_settings.recall_workers
        result["load_average_after"] = list(os.getloadavg())
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 1000):
            client.unlink(*keys[start : start + 1000])
        client.close()
    return result


@contextmanager
def service_process(
    settings: Settings, *, checkout: Path | None = None, env: dict[str, str] | None = None
) -> Iterator[tuple[str, float, list[int]]]:
    """A ``python -m recall serve`` process; yields its URL, seconds until it served, and the
    pids of the processes that serve (the workers, when there are several). It runs with
    ``settings`` as its environment, or with this environment plus ``env`` when given; from
    ``checkout``'s code when given (that folder first on ``PYTHONPATH``)."""
    from infra.ports import free_port

    port = free_port()
    if env is None:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("MINDSTREAM_")}
        environment.update(settings.as_env())
    else:
        environment = {**os.environ, **env}
    environment.update({"MINDSTREAM_RECALL_PORT": str(port), "REDIS_URL": settings.redis_url})
    if checkout is not None:
        environment["PYTHONPATH"] = str(checkout)
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "recall", "serve"],
        env=environment,
        cwd=checkout,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = (
            process.stdout.readline() if process.stdout is not None else ""
        )  # "recall serving on ..." once the index is loaded
        if "recall serving" not in line:
            raise RuntimeError(f"recall service did not start (exit {process.poll()}): {line}")
        pids = [process.pid]
        if " pids=" in line:
            pids = [int(p) for p in line.split(" pids=")[1].split()[0].split(",")]
        yield f"http://127.0.0.1:{port}", time.perf_counter() - started, pids
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def bench_service(settings: Settings, records: list[Any], args: argparse.Namespace) -> dict:
    from recall.server import new_event_loop

    with (
        service_process(settings) as (base, start_s, pids),
        asyncio.Runner(loop_factory=new_event_loop) as runner,
    ):
        result = runner.run(_http_bench(base, [r.user_id for r in records], args, pids))
    return {"start_s": round(start_s, 1), **result}


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds the processes ``pids`` have used so far (from /proc): the cost
    of a request in CPU time hardly moves with the neighbours' load, unlike its latency."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            # Fields after the parenthesised command name; utime and stime are 14 and 15.
            fields = fh.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / ticks


@contextmanager
def cpu_cost(out: dict[str, Any], pids: Sequence[int], calls: int) -> Iterator[None]:
    """Add the service's and this client's CPU milliseconds per call to ``out``."""
    service, client = cpu_seconds(pids), time.process_time()
    yield
    out["service_cpu_ms_per_call"] = round((cpu_seconds(pids) - service) * 1000 / calls, 3)
    out["client_cpu_ms_per_call"] = round((time.process_time() - client) * 1000 / calls, 3)


class HttpConnection:
    """One keep-alive HTTP/1.1 connection speaking just what the bench needs: its CPU counts
    against the same 2 cores as the service's, so it writes pre-built request bytes and reads
    the status line, ``Content-Length`` and the body, with none of a general client's work."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, base: str) -> HttpConnection:
        host, port = base.removeprefix("http://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        return cls(reader, writer)

    async def request(self, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
        """Send one request (``head`` ends with the blank line) and read its response."""
        self.writer.write(head + body)
        header = await self.reader.readuntil(b"\r\n\r\n")
        status = int(header[9:12])
        length = None
        for line in header.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
            elif name.lower() == b"transfer-encoding":
                raise RuntimeError(f"response without Content-Length: {header!r}")
        if length is None:
            raise RuntimeError(f"response without Content-Length: {header!r}")
        return status, await self.reader.readexactly(length)

    async def get(self, path: str) -> tuple[int, bytes]:
        return await self.request(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())

    async def post_json(self, path: str, payload: Any) -> tuple[int, bytes]:
        body = json.dumps(payload).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return await self.request(head.encode(), body)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


def check_candidates(body: bytes, user_id: str, n: int) -> None:
    """A 200 candidates body must be this user's, with 1 to ``n`` candidates, best score
    first."""
    payload = orjson.loads(body)
    candidates = payload["candidates"]
    scores = [c["score"] for c in candidates]
    ordered = scores == sorted(scores, reverse=True)
    if payload["user_id"] != user_id or not 0 < len(candidates) <= n or not ordered:
        raise RuntimeError(f"wrong candidates for {user_id!r}: {body[:300]!r}")


async def _http_bench(
    base: str, user_ids: list[str], args: argparse.Namespace, pids: Sequence[int]
) -> dict:
    users = len(user_ids)
    out: dict[str, Any] = {}
    await wait_healthy(base)
    connections = [await HttpConnection.open(base) for _ in range(args.concurrency)]
    paths = [f"/v1/users/{u}/candidates?n={args.n}" for u in user_ids]

    async def single(i: int, connection: HttpConnection = connections[0]) -> float:
        t0 = time.perf_counter()
        status, body = await connection.get(paths[i % users])
        elapsed = time.perf_counter() - t0
        if status != 200:
            raise RuntimeError(f"GET {paths[i % users]}: {status} {body[:300]!r}")
        check_candidates(body, user_ids[i % users], args.n)
        return elapsed

    async def batch(i: int) -> float:
        chosen = [user_ids[(i * args.batch_users + j) % users] for j in range(args.batch_users)]
        t0 = time.perf_counter()
        status, body = await connections[0].post_json(
            "/v1/candidates", {"user_ids": chosen, "n": args.n}
        )
        elapsed = time.perf_counter() - t0
        results = orjson.loads(body)["results"] if status == 200 else None
        if results is None or [r["user_id"] for r in results] != chosen:
            raise RuntimeError(f"POST /v1/candidates: {status} {body[:300]!r}")
        return elapsed

    try:
        for i in range(200):
            await single(i)
        cost: dict[str, Any] = {}
        with cpu_cost(cost, pids, args.requests):
            started = time.perf_counter()
            latencies = [await single(i) for i in range(args.requests)]
            total = time.perf_counter() - started
        out["single_sequential"] = {
            **percentiles_ms(latencies),
            "req_per_s": round(args.requests / total, 1),
            **cost,
        }

        counter = iter(range(args.requests * 2))
        concurrent: list[float] = []

        async def worker(connection: HttpConnection) -> None:
            for i in counter:
                concurrent.append(await single(i, connection))

        cost = {}
        with cpu_cost(cost, pids, args.requests * 2):
            started = time.perf_counter()
            await asyncio.gather(*(worker(c) for c in connections))
            total = time.perf_counter() - started
        out[f"single_concurrency_{args.concurrency}"] = {
            **percentiles_ms(concurrent),
            "req_per_s": round(len(concurrent) / total, 1),
            **cost,
        }

        for rate in args.rate:
            out[f"single_paced_{rate:g}_per_s"] = await paced(
                rate, args.requests * 2, connections, single, pids
            )

        await batch(0)
        cost = {}
        with cpu_cost(cost, pids, args.batch_requests):
            started = time.perf_counter()
            latencies = [await batch(i) for i in range(args.batch_requests)]
            total = time.perf_counter() - started
        out[f"batch_{args.batch_users}_sequential"] = {
            **percentiles_ms(latencies),
            "req_per_s": round(args.batch_requests / total, 1),
            "users_per_s": round(args.batch_requests * args.batch_users / total, 1),
            **cost,
        }
    finally:
        for connection in connections:
            await connection.close()
    return out


async def paced(
    rate: float,
    requests: int,
    connections: Sequence[HttpConnection],
    single: Callable[[int, HttpConnection], Awaitable[float]],
    pids: Sequence[int],
) -> dict[str, Any]:
    """Single-user requests offered at ``rate`` per second by ``connections`` clients (an open
    loop): request ``i`` is due at ``start + i / rate``; a client takes the next request when it
    is free, waits until it is due, and its latency counts from when it was due, so a request
    that waited for a free client (the service was slow) is charged for the wait, not
    skipped (no coordinated omission)."""
    loop = asyncio.get_running_loop()
    due = iter(range(requests))
    latencies: list[float] = []
    late = 0
    start = loop.time() + 0.05

    async def client(connection: HttpConnection) -> None:
        nonlocal late
        for i in due:
            # Taken up after it was due: every client was busy with earlier requests, and the
            # wait is part of this request's latency. Taken up early: it waits for its time
            # (the loop's timer may wake it a little late; that is the client's, not charged).
            queued = max(0.0, loop.time() - (start + i / rate))
            if queued == 0.0:
                await asyncio.sleep(start + i / rate - loop.time())
            elif queued > 0.001:
                late += 1
            latencies.append(queued + await single(i, connection))

    cost: dict[str, Any] = {}
    with cpu_cost(cost, pids, requests):
        began = time.perf_counter()
        await asyncio.gather(*(client(c) for c in connections))
        total = time.perf_counter() - began
    return {
        **percentiles_ms(latencies),
        "req_per_s": round(requests / total, 1),
        "offered_per_s": rate,
        "queued_over_1ms": late,
        **cost,
    }


async def wait_healthy(base: str) -> None:
    deadline = time.monotonic() + SERVICE_START_TIMEOUT_S
    while True:
        try:
            connection = await HttpConnection.open(base)
            try:
                status, _ = await connection.get("/healthz")
            finally:
                await connection.close()
            if status == 200:
                return
        except (OSError, asyncio.IncompleteReadError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("recall service not healthy in time")
        await asyncio.sleep(0.2)


def bench_bundle_recall(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """ANN recall@n on a trained bundle; queries are its tower's interests over real windows
    (``--data``), else its own item embeddings."""
    bundle = load_bundle(args.bundle)
    source = "item embeddings"
    queries = bundle.item_embeddings[
        np.random.default_rng(0).choice(
            bundle.n_items, min(bundle.n_items, args.recall_queries), replace=False
        )
    ]
    if args.data:
        from model_export.data import load
        from stream.tower import UserTower

        data = load(args.data).interactions
        tower = UserTower(bundle, provider="cpu")
        windows = [[data.item_ids[i - 1] for i in seq[-bundle.max_len :]] for seq in data.sequences]
        rng = np.random.default_rng(0)
        picked = rng.choice(
            len(windows), size=min(len(windows), args.recall_queries), replace=False
        )
        interests = tower.compute([windows[i] for i in picked])
        queries = np.concatenate([u.vectors for u in interests if u.k])
        source = f"user tower interests of {len(picked)} users of {args.data}"
    kinds = [k for k in args.compare.split(",") if k]
    return {
        "bundle": bundle.version,
        "n_items": bundle.n_items,
        "dim": bundle.dim,
        "queries": len(queries),
        "query_source": source,
        "ann_recall": bench_ann_recall(bundle, settings, queries, kinds, args.n),
    }


def print_catalogue(result: dict[str, Any]) -> None:
    index = result["index"]
    load = " / ".join(f"{v:.1f}" for v in result["load_average"])
    print(
        f"\n== {result['n_items']:,} items, dim {result['dim']}, index {index['kind']} "
        f"{index['build'] | index['search']} ({index['source']}, {result['index_open_s']} s), "
        f"load average {load}"
    )
    rows = [(f"bare {k}", v) for k, v in result["bare"].items()]
    service = result.get("service", {})
    rows += [(f"http {k}", v) for k, v in service.items() if isinstance(v, dict)]
    if service:
        print(
            f"service start (verify bundle, load index): {service['start_s']} s, "
            f"{service['workers']} process(es)"
        )
    print(
        f"{'measurement':<36} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'per s':>10} "
        f"{'service CPU ms':>14} {'client CPU ms':>13}"
    )
    for name, v in rows:
        rate = v.get("req_per_s", v.get("calls_per_s"))
        service_cpu, client_cpu = (
            v.get(f"{side}_cpu_ms_per_call", "") for side in ("service", "client")
        )
        cpu = f"{service_cpu:>14} {client_cpu:>13}"
        print(
            f"{name:<36} {v['p50_ms']:>8.3f} {v['p99_ms']:>8.3f} {v['mean_ms']:>8.3f} {rate:>10} "
            f"{cpu}"
        )
    for kind, v in result["ann_recall"].items():
        n_key = next(key for key in v if key.startswith("recall@"))
        print(f"ANN {kind} {v['params']}: {n_key} vs exact = {v[n_key]} ({v['source']})")
