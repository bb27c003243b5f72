"""Subcommands of the ``stream`` stage (imports only the standard library at import time).

``mindstream stream worker`` runs the Faust worker (also ``python -m stream worker``, or the
Faust CLI: ``faust -A stream.agents:app -L uvloop worker``); ``mindstream stream show USER``
prints users' interest records from Redis.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from typing import Any

from mindstream.settings import Settings


def register(sub: Any) -> None:
    """Add this stage's subcommands to the ``mindstream`` parser."""
    stream = sub.add_parser(
        "stream",
        help="the streaming interest updater (Kafka clicks -> windows -> tower -> Redis)",
        description="Run the stream worker, or read interest records from Redis.",
    )
    actions = stream.add_subparsers(dest="stream_command", metavar="ACTION", required=True)
    worker = actions.add_parser(
        "worker",
        help="run the Faust worker (topics from MINDSTREAM_CLICKS_TOPIC, bundle from "
        "MINDSTREAM_BUNDLE, Redis from REDIS_URL)",
    )
    worker.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default=None,
        help="event loop (default: uvloop when installed)",
    )
    worker.add_argument(
        "--without-web",
        action="store_true",
        help="no health/metrics endpoint (default: on MINDSTREAM_WORKER_WEB_PORT)",
    )
    worker.add_argument(
        "--skip-preflight",
        action="store_true",
        help="do not create/check topics or verify the bundle before starting",
    )
    worker.set_defaults(handler=_worker)

    show = actions.add_parser("show", help="print users' interest records (JSON lines)")
    show.add_argument("users", nargs="+", metavar="USER")
    show.add_argument("--vectors", action="store_true", help="include the vectors")
    show.set_defaults(handler=_show)


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from stream.config import processing_guarantee

    loop = args.loop or ("uvloop" if importlib.util.find_spec("uvloop") else "asyncio")
    # Faust calls the standard asyncio loop "aio".
    faust_loop = {"asyncio": "aio"}.get(loop, loop)
    # Faust applies its ``-L`` option when ``faust`` is first imported, and the checks below
    # import it before Faust's CLI runs: set the loop policy now, before anything creates the
    # main thread's loop, or ``-L uvloop`` would leave the worker on asyncio's own loop.
    import mode.loop

    mode.loop.use(faust_loop)
    # refused before waiting for a broker
    processing_guarantee(settings)
    if not args.skip_preflight:
        from stream.preflight import preflight

        preflight(settings)
    from stream.agents import app

    web = (
        ["--without-web"]
        if args.without_web
        else [
            "--web-port",
            str(settings.worker_web_port),
            "--web-bind",
            settings.worker_web_host,
            "--web-host",
            settings.worker_web_host,
        ]
    )
    # Faust's CLI names two levels its own way.
    level = {"warning": "warn", "critical": "crit"}.get(
        settings.log_level.lower(), settings.log_level.lower()
    )
    sys.argv = ["mindstream stream", "-L", faust_loop, "worker", "-l", level, *web]
    app.main()
    return 0


def _show(args: argparse.Namespace, settings: Settings) -> int:
    from mindstream.redis_config import check_redis, redis_client
    from stream.record import read_many, record_json

    check_redis(settings)
    client = redis_client(settings)
    missing = 0
    for user, record in zip(
        args.users, read_many(client, settings.redis_prefix, args.users), strict=True
    ):
        if record is None:
            print(json.dumps({"user_id": user, "record": None}))
            missing += 1
            continue
        out = record_json(record, vectors="vectors" if args.vectors else None)
        print(json.dumps(out, ensure_ascii=False))
    return 1 if missing == len(args.users) else 0
