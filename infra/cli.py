"""Subcommands of the ``infra`` stage (imports only the standard library at import time).

``mindstream services up|down|status`` runs the local broker (Tansu, or Apache Kafka with
``--broker kafka``) and Redis without Docker;
``mindstream services create-topics`` creates the click and dead-letter topics on whatever
broker the settings point at.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from mindstream.settings import Settings

# `status` exit code when the services do not all run (as in the LSB init-script convention).
NOT_RUNNING = 3


def register(sub: Any) -> None:
    """Add this stage's subcommands to the ``mindstream`` parser."""
    services = sub.add_parser(
        "services",
        help="run the local Kafka-compatible broker and Redis (no Docker)",
        description="Start, stop or inspect a local broker (Tansu, or Apache Kafka with --broker "
        "kafka) and redis-server, each on a free loopback port. "
        '`eval "$(mindstream services up)"` points this shell at them.',
    )
    actions = services.add_subparsers(dest="services_command", metavar="ACTION", required=True)

    up = actions.add_parser("up", help="start both (unless running) and print shell exports")
    _data_dir_option(up)
    up.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds to wait for each (default: 30 for tansu, 120 for kafka)",
    )
    up.add_argument(
        "--broker",
        choices=("tansu", "kafka"),
        default="tansu",
        help="tansu: the in-memory Tansu broker (profile local; default); kafka: Apache Kafka "
        "in KRaft mode as local JVM processes (profile standard; needs java and mvn, fetches "
        "the jars once)",
    )
    up.add_argument(
        "--nodes",
        type=int,
        choices=(1, 3),
        default=1,
        help="Apache Kafka nodes: 1, or 3 (replication factor 3, min.insync.replicas 2)",
    )
    up.add_argument(
        "--redis-cluster",
        action="store_true",
        help="a local Redis Cluster (3 masters, 3 replicas) instead of one redis-server; "
        "the exports then set MINDSTREAM_REDIS_CLUSTER=true",
    )
    up.set_defaults(handler=_up)

    down = actions.add_parser("down", help="stop both and forget them")
    _data_dir_option(down)
    down.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="seconds between SIGTERM and SIGKILL (default: 10)",
    )
    down.set_defaults(handler=_down)

    status = actions.add_parser(
        "status", help=f"show what runs (exit status {NOT_RUNNING} when not everything runs)"
    )
    _data_dir_option(status)
    status.set_defaults(handler=_status)

    topics = actions.add_parser(
        "create-topics",
        help="create topics on the configured broker (existing ones are left alone)",
    )
    topics.add_argument(
        "topics",
        nargs="*",
        metavar="TOPIC",
        help="topics to create (default: $MINDSTREAM_CLICKS_TOPIC and $MINDSTREAM_DLQ_TOPIC)",
    )
    topics.add_argument(
        "--partitions",
        type=int,
        default=None,
        help="partitions per topic (default: $MINDSTREAM_TOPIC_PARTITIONS)",
    )
    topics.set_defaults(handler=_create_topics)


def _quiet_kafka_client() -> None:
    # kafka-python logs every connection at INFO; the probes and admin calls here make many.
    kafka_logger = logging.getLogger("kafka")
    kafka_logger.setLevel(max(kafka_logger.getEffectiveLevel(), logging.WARNING))


def _data_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="folder for the state file and logs (default: $MINDSTREAM_DATA_DIR, `var`)",
    )


def _data_dir(args: argparse.Namespace, settings: Settings) -> Path:
    return Path(args.data_dir) if args.data_dir is not None else settings.data_path


def _describe(services: Any) -> str:
    return ", ".join(
        f"{name} pid {r.process.pid} on {r.host}:{r.port}" for name, r in services.items()
    )


def _up(args: argparse.Namespace, settings: Settings) -> int:
    from infra import services

    _quiet_kafka_client()
    data_dir = _data_dir(args, settings)
    if args.nodes != 1 and args.broker != "kafka":
        print("--nodes needs --broker kafka", file=sys.stderr)
        return 2
    timeout = (
        args.timeout if args.timeout is not None else (120.0 if args.broker == "kafka" else 30.0)
    )
    result = services.up(
        data_dir,
        timeout_s=timeout,
        broker=args.broker,
        nodes=args.nodes,
        redis_cluster=args.redis_cluster,
    )
    state = result.services
    if result.started:
        print(f"started {_describe(state.services)}", file=sys.stderr)
        timings = ", ".join(f"{name} {s:.1f}s" for name, s in result.startup_s.items())
        print(f"start-up: {timings}", file=sys.stderr)
    else:
        print(
            f"already running ({_describe(state.services)}); not starting another",
            file=sys.stderr,
        )
    print(
        f"logs in {services.services_dir(data_dir) / 'logs'}; "
        f"stop with: mindstream services down"
        + ("" if args.data_dir is None else f" --data-dir {data_dir}"),
        file=sys.stderr,
    )
    sys.stdout.write(services.shell_exports(state.connection_env()))
    return 0


def _down(args: argparse.Namespace, settings: Settings) -> int:
    from infra import services

    outcomes = services.down(_data_dir(args, settings), timeout_s=args.timeout)
    if not outcomes:
        print("no local services recorded; nothing to stop", file=sys.stderr)
    for name, outcome in outcomes.items():
        print(f"{name}: {outcome.value}", file=sys.stderr)
    return 0


def _status(args: argparse.Namespace, settings: Settings) -> int:
    from infra import services

    data_dir = _data_dir(args, settings)
    state = services.read_state(data_dir)
    if state is None:
        print(f"not running (no state in {services.services_dir(data_dir)})")
        return NOT_RUNNING
    alive = services.running(state)
    for name, record in state.services.items():
        word = "running" if alive[name] else "DEAD"
        print(
            f"{name:<8} {word:<8} pid {record.process.pid:<8} "
            f"{record.host}:{record.port}  log {record.log_path}"
        )
    if alive and all(alive.values()):
        sys.stdout.write(services.shell_exports(state.connection_env()))
        return 0
    return NOT_RUNNING


def _create_topics(args: argparse.Namespace, settings: Settings) -> int:
    from mindstream.topics import ensure_topics

    _quiet_kafka_client()
    names = args.topics or [settings.clicks_topic, settings.dlq_topic]
    partitions = args.partitions if args.partitions is not None else settings.topic_partitions
    for outcome in ensure_topics(settings, dict.fromkeys(names, partitions)):
        verb = "created" if outcome.created else "exists "
        print(f"{verb} {outcome.name} ({outcome.partitions} partitions)")
    return 0
