"""``mindstream demo``: the whole system on one machine, from nothing, in a few minutes.

Starts the local broker and Redis (``infra``), generates a synthetic click log with planted
interests (or loads ``--data``), trains a small tower of the default kind
(``model_export.defaults``: ComiRec-SA, K = 4) and exports its bundle, starts the stream
worker and the recall service as child processes through their CLIs (``mindstream stream
worker``, ``mindstream recall``) with the settings in their environment, replays the clicks
at a realistic rate, waits until every click is in Redis, and shows what came out: planted
next to recovered interests, recalled candidates, freshness, throughput and recall latency.
Everything it started is stopped on exit, on Ctrl-C and on SIGTERM; the PIDs are listed in
``<work dir>/pids.json`` while it runs.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import logging
import os
import random
import shutil
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mindstream.errors import MindstreamError
from mindstream.settings import Settings, known_env
from model_export import defaults

logger = logging.getLogger(__name__)

STEPS = 7
CANDIDATES_N = 10
LATENCY_REQUESTS = 300
# The synthetic log of the demo: few enough clusters per user (1-3) and enough dimensions that
# the interests recover the planted clusters (measured on QUICK: ComiRec-SA + max scoring owns
# 474 of 535 planted interests with >= 5 clicks in the window, a random other cluster for 1% of
# users; MIND 470 and 6%); training takes seconds.
FULL = {"n_users": 1000, "n_items": 500, "n_clusters": 12, "max_interests": 3}
QUICK = {"n_users": 300, "n_items": 300, "n_clusters": 10, "max_interests": 3}


@dataclass(frozen=True)
class DemoOptions:
    data: Path | None = None  # a real log; None = the synthetic generator
    data_format: str = "auto"
    quick: bool = False
    # events/s; 0 = as fast as the broker takes them. 500/s keeps one worker ahead of the
    # stream on a busy 2-core machine (at 1,000/s it fell behind by seconds there).
    rate: float = 500.0
    max_events: int | None = None
    show: int = 4
    seed: int = 0
    dim: int = 32
    epochs: int | None = None
    work_dir: Path | None = None  # default <MINDSTREAM_DATA_DIR>/demo
    results: Path = Path("results")
    drain_timeout_s: float = 180.0
    progress: bool = True


class Stopped(KeyboardInterrupt):
    """SIGTERM/SIGHUP arrived: unwind like Ctrl-C so that everything started gets stopped."""


def say(line: str = "") -> None:
    print(line, flush=True)


def step(number: int, text: str) -> None:
    say(f"\n[{number}/{STEPS}] {text}")


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into :class:`Stopped` while the demo runs."""

    def raise_stopped(signum: int, _frame: Any) -> None:
        raise Stopped(signal.Signals(signum).name)

    previous = {s: signal.signal(s, raise_stopped) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def uninterruptible() -> Iterator[None]:
    """Ignore Ctrl-C and SIGTERM while stopping what was started (bounded by timeouts)."""
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class Started:
    """Everything the demo started, stopped in reverse order; PIDs kept in ``pids.json``."""

    def __init__(self, work_dir: Path) -> None:
        self.pid_file = work_dir / "pids.json"
        self.children: list[tuple[str, Any]] = []  # (name, infra ProcessHandle)
        self.services_dir: Path | None = None
        self.service_pids: dict[str, int] = {}

    def record(self) -> None:
        pids = {**self.service_pids, **{name: h.pid for name, h in self.children}}
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.write_text(json.dumps(pids, indent=1) + "\n")

    def stop_all(self) -> list[str]:
        from infra import processes, services

        lines = []
        for name, handle in reversed(self.children):
            outcome = processes.stop(handle, timeout_s=30.0)
            lines.append(f"{name} (pid {handle.pid}): {outcome.value}")
        self.children.clear()
        if self.services_dir is not None:
            for name, outcome in services.down(self.services_dir, timeout_s=10.0).items():
                lines.append(f"{name} (pid {self.service_pids.get(name)}): {outcome.value}")
            self.services_dir = None
        return lines


def child_env(settings: Settings) -> dict[str, str]:
    """The environment of a child job: the caller's, minus its mindstream settings, plus ours."""
    env = {k: v for k, v in os.environ.items() if k not in known_env()}
    env.update(settings.as_env())
    return env


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback)
            return int(response.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def start_job(
    started: Started, name: str, argv: Sequence[str], settings: Settings, health_url: str
) -> Any:
    """Start ``python -m mindstream ARGV`` with ``settings``; wait for ``health_url`` to answer."""
    from infra import processes

    log = settings.data_path / "logs" / f"{name.replace(' ', '-')}.log"
    handle = processes.spawn(
        [sys.executable, "-m", "mindstream", *argv], log, env=child_env(settings)
    )
    started.children.append((name, handle))
    started.record()
    processes.wait_until_ready(
        handle, lambda: _http_ok(health_url), what=name, log_path=log, timeout_s=120.0
    )
    return handle


def run(options: DemoOptions, base: Settings) -> int:
    """Run the demo; returns the exit status (0 when every click reached Redis and recall)."""
    work_dir = (options.work_dir or base.data_path / "demo").resolve()
    started = Started(work_dir)
    began = time.monotonic()
    _quiet_logs()
    try:
        with stop_signals():
            return _run(options, base, work_dir, started, began)
    finally:
        with uninterruptible():
            if started.children or started.services_dir is not None:
                say("\nstopping everything the demo started ...")
                for line in started.stop_all():
                    say(f"  {line}")
            with contextlib.suppress(FileNotFoundError):
                started.pid_file.unlink()
        say(f"done in {time.monotonic() - began:.0f} s")


def _quiet_logs() -> None:
    # Keep the console for the demo's own lines: warnings only, except training progress.
    logging.getLogger().setLevel(max(logging.getLogger().level, logging.WARNING))
    logging.getLogger("model_export.train").setLevel(logging.INFO)


def _run(
    options: DemoOptions, base: Settings, work_dir: Path, started: Started, began: float
) -> int:
    from infra import processes, services

    say(
        f"mindstream demo: click log -> {kind_label(defaults.KIND)} (torch) -> ONNX bundle -> "
        "Kafka -> stream worker "
        "-> Redis -> recall service"
    )
    step(1, "local services (no Docker)")
    services_dir = work_dir / "services"
    services.down(services_dir, timeout_s=10.0)  # leftovers of a demo that was killed
    for stale in ("bundles", "var"):
        shutil.rmtree(work_dir / stale, ignore_errors=True)
    up = services.up(services_dir, owner=processes.current_process())
    started.services_dir = services_dir
    started.service_pids = {n: r.process.pid for n, r in up.services.services.items()}
    started.record()
    for name, record in up.services.services.items():
        say(f"  {name:<6} {record.host}:{record.port} (pid {record.process.pid})")
    settings = dataclasses.replace(
        base,
        kafka_bootstrap_servers=up.services.bootstrap_servers,
        redis_url=up.services.redis_url,
        kafka_profile=services.KAFKA_PROFILE,
        data_dir=str(work_dir / "var"),
        app_id="mindstream-demo",
    )

    step(2, "click log")
    log = load_log(options)
    say(f"  {log.data.summary()}")
    if log.truth is not None:
        say(
            f"  planted: {log.truth.n_clusters} item clusters (category c0..c"
            f"{log.truth.n_clusters - 1}); each user clicks in 1-"
            f"{(log.synthetic or {}).get('max_interests')} of them"
        )

    step(3, f"train {kind_label(defaults.KIND)} and export the bundle")
    trained = train(options, log, work_dir, settings)
    say(f"  {trained.summary}")
    say(f"  bundle {trained.bundle}")
    settings = dataclasses.replace(settings, bundle_path=str(trained.bundle.parent / "current"))

    step(4, "start the stream worker and the recall service")
    from infra.ports import free_port

    settings = dataclasses.replace(
        settings,
        worker_web_port=free_port(),
        recall_port=free_port(),
        recall_host="127.0.0.1",
    )
    worker_url = f"http://127.0.0.1:{settings.worker_web_port}"
    recall_url = f"http://127.0.0.1:{settings.recall_port}"
    worker = start_job(
        started, "stream worker", ["stream", "worker"], settings, worker_url + "/health"
    )
    recall = start_job(started, "recall service", ["recall"], settings, recall_url + "/healthz")
    say(f"  stream worker pid {worker.pid}, health and metrics on {worker_url}")
    say(f"  recall service pid {recall.pid} on {recall_url}")
    say(f"  logs in {settings.data_path / 'logs'}")

    step(5, f"replay the clicks to topic {settings.clicks_topic!r} at {_rate(options)}")
    replay = publish_log(options, log, settings)
    say(f"  {replay.stats.summary()}")
    for example in replay.stats.examples:
        say(f"    {example}")

    step(6, "wait until every click is in Redis")
    drained = wait_for_redis(settings, replay.per_user, options)
    say(f"  {drained.applied:,}/{replay.stats.acknowledged:,} clicks applied for "
        f"{drained.users:,} users in {drained.seconds:.1f} s after the last send")  # fmt: skip

    step(7, "what came out")
    outcome = show(options, log, trained, settings, recall_url, worker_url, replay, drained)
    say("")
    for line in outcome.summary:
        say(f"  {line}")
    say(f"\n  results: {outcome.results_file}; evaluation: {trained.evaluation_dir}")
    say(f"  render them: mindstream report --results {options.results}")
    say(f"  demo took {time.monotonic() - began:.0f} s so far")
    ok = (
        replay.stats.failed == 0
        and drained.applied >= replay.stats.acknowledged
        and outcome.users_with_candidates == outcome.users_total
    )
    if not ok:
        say("\n  NOT everything went through: see the counts above and the logs")
    return 0 if ok else 1


def _rate(options: DemoOptions) -> str:
    rate = options.rate
    return "full speed" if rate == 0 else f"{rate:,.0f} events/s"


# --- the log --------------------------------------------------------------------------------


@dataclass
class Log:
    data: Any  # Interactions
    truth: Any  # PlantedTruth or None
    synthetic: dict[str, Any] | None  # SyntheticConfig fields of a generated log
    vocab: dict[str, list[str]]  # feature -> names of its ids
    path: Path | None = None
    format: str = "auto"


def load_log(options: DemoOptions) -> Log:
    if options.data is None:
        from model_export.data.synthetic import SyntheticConfig, category_name, generate

        fields = {**(QUICK if options.quick else FULL), "seed": options.seed}
        data, truth = generate(SyntheticConfig(**fields))
        vocab = {"category": [category_name(c) for c in range(truth.n_clusters)]}
        return Log(data, truth, fields, vocab)
    from model_export.data import detect_format, load

    fmt = detect_format(options.data) if options.data_format == "auto" else options.data_format
    result = load(options.data, fmt, skip_bad=True)
    if result.bad_lines:
        say(f"  skipped {result.bad_lines} bad lines, e.g. {result.bad_line_examples[0]}")
    return Log(result.interactions, None, None, result.feature_vocab, options.data, fmt)


# --- training -------------------------------------------------------------------------------


KIND_LABELS = {
    "mind": "MIND",
    "youtube_dnn": "YouTube-DNN",
    "comirec_sa": "ComiRec-SA",
    "comirec_dr": "ComiRec-DR",
}


def kind_label(kind: str) -> str:
    """The model kind as the demo's output names it."""
    return KIND_LABELS.get(kind, kind)


@dataclass
class Trained:
    bundle: Path
    summary: str
    evaluation_dir: Path
    seconds: float


def train(options: DemoOptions, log: Log, work_dir: Path, settings: Settings) -> Trained:
    from model_export.evaluate import write_report
    from model_export.train import TrainConfig
    from model_export.workflow import DataSpec, model_name, train_job

    if log.synthetic is not None:
        # No side features: the synthetic category *is* the planted cluster, so the model has to
        # find the clusters from co-occurrence alone.
        spec = DataSpec(path=None, format="synthetic", features=False, synthetic=log.synthetic)
        epochs = options.epochs or (5 if options.quick else 10)
        positions = 0
    else:
        spec = DataSpec(path=str(log.path), format=log.format, features=True)
        epochs = options.epochs or 5
        positions = 50  # per user and epoch: bounds an epoch on long histories
    overrides = {
        "kind": defaults.KIND,
        "dim": options.dim,
        "k": defaults.INTERESTS,
        "head_hidden": defaults.head_hidden(defaults.KIND),
        "max_len": settings.window_max_len,
        "seed": options.seed,
    }
    config = TrainConfig(
        epochs=epochs,
        batch_size=128,
        lr=3e-3,
        negatives=min(200, max(log.data.n_items // 2, 1)),
        interest_scoring=defaults.INTEREST_SCORING,
        positions_per_user=positions,
        patience=2,
        log_every=0,
        # One thread: on shared cores a two-thread op stalls whenever one thread is descheduled
        # (measured here: 4 epochs in 137 s with two threads, ~15 s with one).
        threads=1,
        seed=options.seed,
    )
    started = time.monotonic()
    outcome = train_job(
        spec,
        overrides,
        config,
        run_dir=None,
        bundle_root=work_dir / "bundles",
        valid_users=500,
    )
    seconds = time.monotonic() - started
    if outcome.bundle is None:
        raise MindstreamError("training exported no bundle")
    evaluation_dir = options.results / "evaluate" / outcome.split.protocol
    write_report(outcome.test, evaluation_dir)
    name = model_name(outcome.tower.config)
    scores = {m.name: m.metrics.get("hit_rate@50", float("nan")) for m in outcome.test.models}
    others = ", ".join(f"{k} {v:.3f}" for k, v in scores.items() if k != name)
    summary = (
        f"trained {kind_label(defaults.KIND)} {outcome.result.epochs} epochs in {seconds:.0f} s "
        f"(d={options.dim}, K={defaults.INTERESTS}, "
        f"{'no side features' if log.synthetic else 'with item features'}); test HitRate@50 "
        f"{scores.get(name, float('nan')):.3f} ({others}) over {outcome.test.models[0].n_users} "
        "held-out last clicks"
    )
    return Trained(outcome.bundle, summary, evaluation_dir, seconds)


# --- the replay -----------------------------------------------------------------------------


@dataclass
class Replay:
    stats: Any  # stream.publish.PublishStats
    per_user: dict[str, int]  # clicks sent per user
    finished: float  # monotonic time of the last acknowledgement


def publish_log(options: DemoOptions, log: Log, settings: Settings) -> Replay:
    from stream.publish import EventSource, file_source, limited, publish

    if log.synthetic is not None:
        from model_export.data.synthetic import click_events

        source = EventSource(log.data.name, click_events(log.data), total=log.data.n_interactions)
    else:
        source = file_source(log.path or Path(), log.format)
        for note in source.notes:
            say(f"  note: {note}")
    source = limited(source, options.max_events)
    per_user: collections.Counter[str] = collections.Counter()
    stats = publish(
        settings,
        source,
        rate=options.rate,
        restamp=True,  # event time = send time, so Redis updated_ms - event_ts is freshness
        progress=options.progress,
        on_sent=lambda event: per_user.update((event["user_id"],)),
    )
    return Replay(stats, dict(per_user), time.monotonic())


@dataclass
class Drained:
    applied: int
    users: int
    seconds: float
    records: dict[str, Any]  # user id -> InterestRecord


def wait_for_redis(settings: Settings, per_user: dict[str, int], options: DemoOptions) -> Drained:
    """Poll the interest records until each user's ``seq`` covers the clicks sent to it."""
    from mindstream.progress import progress_bar
    from mindstream.redis_config import redis_client
    from stream.record import read_many

    client = redis_client(settings)
    users = sorted(per_user)
    expected = sum(per_user.values())
    started = time.monotonic()
    bar = progress_bar(expected, "in Redis", "ev", enabled=options.progress)
    records: dict[str, Any] = {}
    applied = 0
    try:
        while True:
            found = []
            for lo in range(0, len(users), 1000):
                found += read_many(client, settings.redis_prefix, users[lo : lo + 1000])
            records = {u: r for u, r in zip(users, found, strict=True) if r is not None}
            applied = sum(min(records[u].seq, per_user[u]) for u in records)
            bar.update(applied - bar.n)
            if applied >= expected or time.monotonic() - started > options.drain_timeout_s:
                break
            time.sleep(0.5)
    finally:
        bar.close()
        client.close()
    if applied < expected:
        say(
            f"  timed out after {options.drain_timeout_s:.0f} s: "
            f"{expected - applied} clicks not in Redis"
        )
    return Drained(applied, len(records), time.monotonic() - started, records)


# --- what came out --------------------------------------------------------------------------


@dataclass
class Outcome:
    summary: list[str]
    results_file: Path
    users_with_candidates: int
    users_total: int


def show(
    options: DemoOptions,
    log: Log,
    trained: Trained,
    settings: Settings,
    recall_url: str,
    worker_url: str,
    replay: Replay,
    drained: Drained,
) -> Outcome:
    from mindstream.app import demo_show
    from mindstream.app.report_interests import (
        item_category_names,
        match_planted,
        user_views,
        window_overlap,
    )
    from mindstream.app.report_results import new_results, write_results
    from model_export.bundle import load_bundle

    bundle = load_bundle(trained.bundle)
    categories = item_category_names(log.data, log.vocab)
    labels = dict(zip(log.data.item_ids, log.data.item_labels or [], strict=False))
    items = demo_show.ItemText(labels, categories)
    records = drained.records
    user_ids = sorted(records)
    planted = None
    if log.truth is not None:
        from model_export.data.synthetic import category_name

        row = {u: i for i, u in enumerate(log.data.users)}
        planted = [[category_name(c) for c in log.truth.user_clusters[row[u]]] for u in user_ids]
    views = user_views(
        user_ids,
        [list(records[u].items) for u in user_ids],
        [records[u].vectors for u in user_ids],
        bundle.item_ids,
        bundle.item_embeddings,
        categories,
        planted=planted,
    )
    by_user = {v.user_id: v for v in views}
    reported = choose_users(views, max(options.show, 8), options.seed)
    chosen = reported[: options.show]

    client = demo_show.RecallClient("127.0.0.1", settings.recall_port)
    try:
        served = 0
        batch_max = settings.recall_batch_max_users
        for lo in range(0, len(user_ids), batch_max):
            answers = client.candidates_batch(user_ids[lo : lo + batch_max], CANDIDATES_N)
            served += sum(1 for a in answers if a.get("status") == "ok" and a["candidates"])
        for view in chosen:
            status, body = client.candidates(view.user_id, CANDIDATES_N)
            if status == 200:
                by_user[view.user_id] = dataclasses.replace(view, candidates=body["candidates"])
        latency, failures = timed_requests_for(client, user_ids, options)
    finally:
        client.close()

    say("  for a few users: what they clicked, what each recovered interest retrieves, and")
    say(f"  the recall service's top candidates (GET /v1/users/ID/candidates?n={CANDIDATES_N})")
    for view in chosen:
        demo_show.format_user(by_user[view.user_id], items, say)

    summary = []
    match = None
    if planted is not None:
        names = sorted({c for c in categories.values() if c is not None})
        match = match_planted(views, names, seed=options.seed).to_json()
        summary.append(demo_show.match_text(match))
    elif any(c is not None for c in categories.values()):
        summary.append(
            f"interests whose majority category occurs in the user's window: "
            f"{window_overlap(views):.0%} of {sum(len(v.interests) for v in views):,} interests"
        )
    else:
        summary.append("this log names no item categories: interests are shown by their items")
    fresh = [float(r.updated_ms - r.event_ts) for r in records.values()]
    freshness = [{"name": "Redis updated_ms - newest click time, per user", "samples_ms": fresh}]
    worker_hist = _worker_histogram(worker_url)
    if worker_hist is not None:
        freshness.append(worker_hist)
    summary.append(
        "freshness, click sent -> interests in Redis (per user): "
        + demo_show.quantiles_text(freshness[0])
    )
    if worker_hist is not None:
        summary.append(
            f"freshness, worker histogram (per event): {demo_show.quantiles_text(worker_hist)}"
        )
    summary.append(f"recall: candidates for {served:,}/{len(user_ids):,} users with a record "
                   f"({len(replay.per_user):,} users clicked)")  # fmt: skip
    summary.append(
        f"recall latency, GET candidates n={CANDIDATES_N} over HTTP keep-alive: "
        f"p50 {latency.get('p50_ms', float('nan')):.1f} ms · p99 "
        f"{latency.get('p99_ms', float('nan')):.1f} ms ({latency.get('count', 0)} requests"
        f"{f', {failures} failed' if failures else ''})"
    )
    stats = replay.stats
    drain_s = stats.seconds + drained.seconds
    throughput = [
        {
            "name": "publish, acknowledged by the broker",
            "events_per_s": round(stats.rate, 1),
            "events": stats.acknowledged,
            "seconds": round(stats.seconds, 2),
        },
        {
            "name": "stream worker, replay start to all in Redis",
            "events_per_s": round(drained.applied / drain_s, 1) if drain_s > 0 else 0.0,
            "events": drained.applied,
            "seconds": round(drain_s, 2),
        },
    ]
    summary.append(
        f"throughput: published {throughput[0]['events_per_s']:,.0f} events/s (paced at "
        f"{_rate(options)}); all in Redis at {throughput[1]['events_per_s']:,.0f} events/s "
        "overall"
    )
    results = new_results(
        "demo",
        throughput=throughput,
        latency=[{"name": f"GET /v1/users/ID/candidates n={CANDIDATES_N} (demo)", **latency}],
        freshness=freshness,
        interests=[by_user[v.user_id].to_json() for v in reported],
        interest_match=match,
        notes=[
            f"log: {log.data.name}",
            f"rate: {_rate(options)}; partitions {settings.topic_partitions}; one worker",
        ],
    )
    path = write_results(options.results / "demo" / "demo.json", results)
    return Outcome(summary, path, served, len(user_ids))


def timed_requests_for(
    client: Any, user_ids: Sequence[str], options: DemoOptions
) -> tuple[dict[str, Any], int]:
    from mindstream.app.demo_show import timed_requests

    shuffled = list(user_ids)
    random.Random(options.seed).shuffle(shuffled)
    count = LATENCY_REQUESTS // 3 if options.quick else LATENCY_REQUESTS
    return timed_requests(client, shuffled, CANDIDATES_N, count)


def _worker_histogram(worker_url: str) -> dict[str, Any] | None:
    from mindstream.app.demo_show import worker_freshness

    try:
        with urllib.request.urlopen(worker_url + "/metrics", timeout=5) as response:  # noqa: S310
            return worker_freshness(response.read().decode())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        logger.warning("could not read the worker's metrics: %s", exc)
        return None


def choose_users(views: Sequence[Any], count: int, seed: int) -> list[Any]:
    """Users worth showing: the most planted interests (or window categories) first, seeded."""
    rng = random.Random(seed)
    shuffled = list(views)
    rng.shuffle(shuffled)

    def richness(view: Any) -> tuple[int, int]:
        if view.planted is not None:
            return (len(view.planted), min(view.planted_counts().values(), default=0) >= 5)
        return (min(len(view.window), 5), sum(n for _, n in view.window))

    return sorted(shuffled, key=richness, reverse=True)[:count]


def register_options(parser: Any) -> None:
    """The demo's command-line options (used by :mod:`mindstream.app.jobs`)."""
    parser.add_argument("--quick", action="store_true", help="a smaller log (about a minute)")
    parser.add_argument("--data", type=Path, default=None, help="a real log instead")
    parser.add_argument(
        "--format", choices=("auto", "movielens", "amazon", "taobao"), default="auto"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=500.0,
        help="replay rate, events/s (default 500; 0 = as fast as possible)",
    )
    parser.add_argument("--max-events", type=int, default=None, help="replay the first N clicks")
    parser.add_argument("--show", type=int, default=4, help="users shown in detail (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="generator and training seed")
    parser.add_argument("--dim", type=int, default=32, help="embedding width (default 32)")
    parser.add_argument("--epochs", type=int, default=None, help="most training epochs")
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="services, bundle, logs (default var/demo)"
    )
    parser.add_argument(
        "--results", type=Path, default=Path("results"), help="results folder (default results)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def options_from_args(args: Any) -> DemoOptions:
    for name in ("rate", "max_events"):
        value = getattr(args, name)
        if value is not None and value < 0:
            raise MindstreamError(f"--{name.replace('_', '-')} {value}: expected >= 0")
    return DemoOptions(
        data=args.data,
        data_format=args.format,
        quick=args.quick,
        rate=args.rate,
        max_events=args.max_events,
        show=args.show,
        seed=args.seed,
        dim=args.dim,
        epochs=args.epochs,
        work_dir=args.work_dir,
        results=args.results,
        progress=not args.no_progress,
    )


def main(args: Any, settings: Settings) -> int:
    """Entry point of ``mindstream demo`` (see :mod:`mindstream.app.jobs`)."""
    return run(options_from_args(args), settings)
