"""Security properties that hold for the whole source tree, not one package.

- No code path deserialises bytes with pickle: an AST scan of every Python file of the project
  flags pickle-family loaders, ``torch.load`` without ``weights_only=True``, ``np.load`` with
  ``allow_pickle`` other than False, unsafe YAML loaders and ``marshal`` loads. The scanner is
  itself tested on snippets, so the clean result means something.
- A bundle whose content does not match its manifest is refused at load, by the bundle reader
  and by both serving entry points (the stream's tower, recall's index registry), even when
  the attacker also rewrote the manifest's file hashes; a pickled object array planted as the
  embeddings is refused without running its payload.
- The recall service binds to loopback unless told otherwise (checked on the live socket); the
  stream worker's web endpoint too (``MINDSTREAM_WORKER_WEB_HOST``, default 127.0.0.1).
- Redis TLS settings without a ``rediss://`` URL are refused (no silent clear text).
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from benchmarks.catalogue import write_catalogue_bundle
from infra.ports import free_port
from mindstream.errors import ConfigError
from mindstream.redis_config import redis_client_kwargs
from mindstream.settings import Settings, known_env
from model_export.bundle import CONTENT_FILES, MANIFEST, content_version, load_bundle
from model_export.exceptions import BundleError

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("mindstream", "stream", "model_export", "recall", "infra", "tests", "benchmarks")

# module -> functions that turn bytes into arbitrary objects
PICKLE_MODULES = {
    "pickle": {"load", "loads", "Unpickler"},
    "_pickle": {"load", "loads", "Unpickler"},
    "cPickle": {"load", "loads", "Unpickler"},
    "dill": {"load", "loads", "Unpickler"},
    "cloudpickle": {"load", "loads"},
    "joblib": {"load"},
    "shelve": {"open", "Shelf", "DbfilenameShelf"},
    "marshal": {"load", "loads"},
    "jsonpickle": {"decode", "loads"},
}
UNSAFE_YAML = {"yaml.unsafe_load", "yaml.unsafe_load_all", "yaml.full_load", "yaml.full_load_all"}
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader"}


# --- the scanner -----------------------------------------------------------------------------


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_const(node: ast.expr | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def unsafe_deserialisation(source: str, filename: str = "<snippet>") -> list[str]:
    """``file:line what`` for every call or import that can unpickle untrusted bytes."""
    tree = ast.parse(source, filename)
    aliases: dict[str, str] = {}  # local name -> module or module.function
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                # "import a.b" binds "a"; "import a.b as c" binds c to a.b
                top = a.name.split(".")[0]
                aliases[a.asname or top] = a.name if a.asname else top
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    found: list[str] = []

    def flag(node: ast.AST, what: str) -> None:
        found.append(f"{filename}:{getattr(node, 'lineno', 0)} {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in PICKLE_MODULES:
            for a in node.names:
                if a.name in PICKLE_MODULES[node.module] or a.name == "*":
                    flag(node, f"from {node.module} import {a.name}")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if not name:
            continue
        head, _, rest = name.partition(".")
        full = f"{aliases.get(head, head)}.{rest}" if rest else aliases.get(head, head)
        module, _, function = full.rpartition(".")
        if module in PICKLE_MODULES and function in PICKLE_MODULES[module]:
            flag(node, f"{full}()")
        elif full == "torch.load" and not _is_const(_keyword(node, "weights_only"), True):
            flag(node, "torch.load() without weights_only=True")
        elif full in {"numpy.load", "np.load"}:
            allow = _keyword(node, "allow_pickle")
            if allow is not None and not _is_const(allow, False):
                flag(node, "numpy.load(allow_pickle=...) not False")
        elif function == "read_pickle" or full in UNSAFE_YAML:
            flag(node, f"{full}()")
        elif full in {"yaml.load", "yaml.load_all"}:
            loader = _keyword(node, "Loader")
            if loader is None and len(node.args) > 1:
                loader = node.args[1]
            if loader is None or _dotted(loader).rpartition(".")[2] not in SAFE_YAML_LOADERS:
                flag(node, f"{full}() without a safe Loader")
    return found


def _python_files() -> Iterator[Path]:
    for top in SCANNED:
        folder = ROOT / top
        if folder.is_dir():
            yield from sorted(folder.rglob("*.py"))


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("import pickle\npickle.loads(b)", "pickle.loads()"),
        ("import pickle as p\np.load(f)", "pickle.load()"),
        ("from pickle import loads\nloads(b)", "from pickle import loads"),
        ("from pickle import loads as l\nl(b)", "pickle.loads()"),
        ("import _pickle\n_pickle.Unpickler(f).load()", "_pickle.Unpickler()"),
        ("import dill\ndill.loads(b)", "dill.loads()"),
        ("import joblib\njoblib.load('m.joblib')", "joblib.load()"),
        ("import shelve\nshelve.open('db')", "shelve.open()"),
        ("import marshal\nmarshal.loads(b)", "marshal.loads()"),
        ("import torch\ntorch.load(p)", "torch.load() without weights_only=True"),
        ("import torch\ntorch.load(p, weights_only=False)", "torch.load() without"),
        ("from torch import load\nload(p)", "torch.load() without"),
        ("import numpy as np\nnp.load(p, allow_pickle=True)", "allow_pickle"),
        ("import numpy\nnumpy.load(p, allow_pickle=flag)", "allow_pickle"),
        ("import pandas as pd\npd.read_pickle(p)", "read_pickle"),
        ("import yaml\nyaml.load(s)", "yaml.load() without a safe Loader"),
        ("import yaml\nyaml.load(s, Loader=yaml.Loader)", "yaml.load() without"),
        ("import yaml\nyaml.unsafe_load(s)", "yaml.unsafe_load()"),
    ],
)
def test_scanner_flags_unsafe_deserialisation(snippet: str, expected: str) -> None:
    found = unsafe_deserialisation(snippet)
    assert len(found) >= 1 and any(expected in f for f in found), found


@pytest.mark.parametrize(
    "snippet",
    [
        "import pickle\ntry:\n    x = 1\nexcept pickle.UnpicklingError:\n    pass",
        "import torch\ntorch.load(p, map_location='cpu', weights_only=True)",
        "import numpy as np\nnp.load(p)\nnp.load(p, allow_pickle=False)",
        "import yaml\nyaml.safe_load(s)\nyaml.load(s, Loader=yaml.SafeLoader)",
        "import json\njson.loads(s)",
        "import faiss\nfaiss.read_index(p)",
    ],
)
def test_scanner_accepts_safe_code(snippet: str) -> None:
    assert unsafe_deserialisation(snippet) == []


def test_no_code_path_unpickles() -> None:
    files = list(_python_files())
    assert len(files) > 50  # the scan really covered the tree
    this = Path(__file__).resolve()
    found: list[str] = []
    for path in files:
        if path.resolve() == this:
            continue  # this file pickles a payload on purpose (and never loads it)
        found += unsafe_deserialisation(
            path.read_text(encoding="utf-8"), str(path.relative_to(ROOT))
        )
    assert found == [], "unsafe deserialisation:\n" + "\n".join(found)


# --- tampered bundles ------------------------------------------------------------------------


class _Payload:
    """Unpickling this creates ``marker``: proof that pickled code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.makedirs, (str(self.marker),))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _rewrite_manifest(bundle: Path, *, fix_version: bool) -> Path:
    """What an attacker with write access does: make the manifest match the new files.

    With ``fix_version`` the version is recomputed too and the folder renamed after it, so the
    bundle is consistent in every way the reader checks; returns the bundle's path.
    """
    manifest = json.loads((bundle / MANIFEST).read_text())
    for name in CONTENT_FILES:
        manifest["files"][name] = {
            "sha256": _sha256(bundle / name),
            "bytes": (bundle / name).stat().st_size,
        }
    if fix_version:
        manifest["version"] = content_version(manifest)
    (bundle / MANIFEST).write_text(json.dumps(manifest))
    return bundle.rename(bundle.with_name(manifest["version"])) if fix_version else bundle


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    embeddings = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    path = write_catalogue_bundle(tmp_path / "bundles", embeddings)
    copy = tmp_path / "copy" / path.name
    shutil.copytree(path, copy)
    return copy


def _serving_loaders(path: Path) -> list[tuple[str, object]]:
    """Each entry point that loads a bundle, with the error it raised (or None)."""
    from recall.registry import IndexRegistry
    from stream.tower import UserTower

    settings = Settings(bundle_path=str(path), recall_index_dir=str(path.parent / "idx"))
    out: list[tuple[str, object]] = []
    for name, load in (
        ("load_bundle", lambda: load_bundle(path)),
        ("stream UserTower.load", lambda: UserTower.load(path, provider="cpu", threads=1)),
        ("recall IndexRegistry.load", lambda: IndexRegistry(settings).load(str(path))),
    ):
        try:
            load()
        except BundleError as exc:
            out.append((name, exc))
        else:
            out.append((name, None))
    return out


@pytest.mark.parametrize("name", CONTENT_FILES)
def test_file_swapped_with_rewritten_hashes_is_refused(bundle: Path, name: str) -> None:
    target = bundle / name
    data = bytearray(target.read_bytes())
    data[-1] ^= 0x01  # one bit
    target.write_bytes(bytes(data))
    _rewrite_manifest(bundle, fix_version=False)  # hashes match, the version does not
    for loader, error in _serving_loaders(bundle):
        assert error is not None, f"{loader} accepted a tampered {name}"
        assert "does not match its content" in str(error), (loader, error)


def test_pickled_embeddings_are_refused_without_running_them(bundle: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = np.empty(1, dtype=object)
    payload[0] = _Payload(marker)
    with (bundle / "item_embeddings.npy").open("wb") as fh:
        np.save(fh, payload, allow_pickle=True)
    assert b"makedirs" in (bundle / "item_embeddings.npy").read_bytes()  # a real pickle payload
    # A fully consistent manifest: hashes and version recomputed over the planted file.
    bundle = _rewrite_manifest(bundle, fix_version=True)
    for loader, error in _serving_loaders(bundle):
        assert error is not None, f"{loader} accepted a pickled object array"
        assert "unreadable" in str(error) or "float32" in str(error), (loader, error)
    assert not marker.exists(), "the pickled payload ran"
    # Control: the payload does run when unpickled, so the check above can fail.
    pickle.loads(pickle.dumps(_Payload(marker)))  # noqa: S301
    assert marker.exists()


# --- network exposure and TLS settings -------------------------------------------------------


def _listening(port: int) -> set[str]:
    """Local addresses with a TCP socket in LISTEN state on ``port`` (from /proc/net)."""
    out: set[str] = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if fields[3] == "0A" and int(port_hex, 16) == port:
                if width == 8:
                    out.add(".".join(str(b) for b in bytes.fromhex(address)[::-1]))
                else:
                    out.add("::" if set(address) == {"0"} else address)
    return out


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc/net/tcp")
def test_recall_service_binds_to_loopback_by_default(tmp_path: Path) -> None:
    assert Settings().recall_host == "127.0.0.1"
    embeddings = np.random.default_rng(1).standard_normal((30, 8)).astype(np.float32)
    write_catalogue_bundle(tmp_path / "bundles", embeddings)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in known_env()}
    env.update(
        MINDSTREAM_BUNDLE=str(tmp_path / "bundles" / "current"),
        MINDSTREAM_RECALL_PORT=str(port),
        MINDSTREAM_RECALL_INDEX_DIR=str(tmp_path / "idx"),
        # never the developer's Redis: a closed port (the service connects lazily)
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        MINDSTREAM_DATA_DIR=str(tmp_path),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "recall", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while not (addresses := _listening(port)):
            assert proc.poll() is None, proc.communicate()[0].decode(errors="replace")[-2000:]
            assert time.monotonic() < deadline, "recall did not listen within 60 s"
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert addresses == {"127.0.0.1"}


def test_stream_worker_web_binds_to_loopback_by_default(tmp_path: Path) -> None:
    from stream.config import app_options

    assert Settings().worker_web_host == "127.0.0.1"
    options = app_options(dataclasses.replace(Settings(), data_dir=str(tmp_path)))
    assert options.get("web_bind") == "127.0.0.1"


@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL", "SASL_PLAINTEXT"])
def test_kafka_security_settings_reach_the_faust_worker(protocol: str, tmp_path: Path) -> None:
    """kafka-python and aiokafka get them from mindstream.kafka_config (tested in tests/unit/infra);
    the worker's third client, Faust, gets them as broker credentials."""
    import ssl

    import faust

    from stream.config import app_options

    ca = tmp_path / "ca.pem"
    shutil.copy(ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt", ca)
    settings = Settings.from_env(
        {
            "MINDSTREAM_KAFKA_SECURITY_PROTOCOL": protocol,
            "MINDSTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "MINDSTREAM_KAFKA_SASL_USERNAME": "svc",
            "MINDSTREAM_KAFKA_SASL_PASSWORD": "secret",
            "MINDSTREAM_KAFKA_SSL_CAFILE": str(ca),
            "MINDSTREAM_DATA_DIR": str(tmp_path),
        }
    )
    credentials = app_options(settings)["broker_credentials"]
    if protocol == "SSL":
        assert isinstance(credentials, faust.SSLCredentials)
        assert isinstance(credentials.context, ssl.SSLContext)
        assert credentials.context.verify_mode == ssl.CERT_REQUIRED
        return
    assert isinstance(credentials, faust.SASLCredentials)
    assert (credentials.username, credentials.password) == ("svc", "secret")
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    if protocol == "SASL_SSL":
        assert isinstance(credentials.ssl_context, ssl.SSLContext)
        assert credentials.ssl_context.verify_mode == ssl.CERT_REQUIRED
    else:
        assert credentials.ssl_context is None


def test_redis_tls_files_need_a_rediss_url() -> None:
    with pytest.raises(ConfigError, match="not rediss://"):
        Settings.from_env({"MINDSTREAM_REDIS_SSL_CA_FILE": "/etc/ca.pem"})
    with pytest.raises(ConfigError, match="go together"):
        Settings.from_env(
            {"REDIS_URL": "rediss://h:6380/0", "MINDSTREAM_REDIS_SSL_CERT_FILE": "/c.pem"}
        )
    settings = Settings.from_env(
        {
            "REDIS_URL": "rediss://u:p@h:6380/0",
            "MINDSTREAM_REDIS_SSL_CA_FILE": "/ca.pem",
            "MINDSTREAM_REDIS_SSL_CERT_FILE": "/c.pem",
            "MINDSTREAM_REDIS_SSL_KEY_FILE": "/k.pem",
        }
    )
    assert redis_client_kwargs(settings) == {
        "ssl_ca_certs": "/ca.pem",
        "ssl_certfile": "/c.pem",
        "ssl_keyfile": "/k.pem",
    }
    assert redis_client_kwargs(dataclasses.replace(Settings(), redis_url="redis://h/0")) == {}


def test_unrecoverable_redis_errors_are_named_and_transient_ones_are_not() -> None:
    import ssl

    from redis.exceptions import (
        AuthenticationError,
        BusyLoadingError,
        ClusterCrossSlotError,
        ClusterDownError,
        MovedError,
        NoPermissionError,
        NoScriptError,
        ReadOnlyError,
        RedisClusterException,
        ResponseError,
        SlotNotCoveredError,
        TryAgainError,
    )
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from mindstream.redis_config import unrecoverable_reason

    def wrapped(cause: BaseException) -> RedisConnectionError:
        try:
            raise cause
        except BaseException:
            try:
                raise RedisConnectionError("Error 1 connecting to 127.0.0.1:6380.")
            except RedisConnectionError as exc:
                return exc

    verify = ssl.SSLCertVerificationError(1, "certificate verify failed")
    assert unrecoverable_reason(wrapped(verify)) == "TLS certificate verify failed"
    refused = ssl.SSLError(1, "tlsv13 alert certificate required")
    refused.reason = "TLSV13_ALERT_CERTIFICATE_REQUIRED"
    assert unrecoverable_reason(wrapped(refused)) == "TLS TLSV13_ALERT_CERTIFICATE_REQUIRED"
    assert unrecoverable_reason(wrapped(ssl.SSLEOFError(8, "EOF"))) is None
    assert unrecoverable_reason(wrapped(ConnectionRefusedError(111, "refused"))) is None
    assert unrecoverable_reason(RedisTimeoutError("Timeout reading from socket")) is None
    assert unrecoverable_reason(OSError("unreachable")) is None
    wrongpass = AuthenticationError("invalid username-password pair", status_code="WRONGPASS")
    assert unrecoverable_reason(wrongpass) == "WRONGPASS"
    assert unrecoverable_reason(AuthenticationError("Authentication required.")) == (
        "authentication refused"
    )
    denied = NoPermissionError("no permissions to run the 'evalsha' command")
    denied.status_code = "NOPERM"
    assert unrecoverable_reason(denied) == "NOPERM"
    crossslot = ClusterCrossSlotError("Keys in request don't hash to the same slot")
    crossslot.status_code = "CROSSSLOT"
    assert unrecoverable_reason(crossslot) == "CROSSSLOT"
    # a pipelined command's error carries the command in front
    piped = ResponseError(
        "Command # 1 (EVALSHA abc 2 k1 k2) of pipeline caused error: WRONGTYPE Operation "
        "against a key holding the wrong kind of value"
    )
    assert unrecoverable_reason(piped) == "WRONGTYPE"
    unknown = ResponseError("unknown command 'EVALSHA', with args beginning with: ")
    assert unrecoverable_reason(unknown) == "unknown command"
    assert unrecoverable_reason(NoScriptError("No matching script.")) is not None
    for transient in (
        BusyLoadingError("Redis is loading the dataset in memory"),
        ReadOnlyError("You can't write against a read only replica."),
        TryAgainError("Multiple keys request during rehashing of slot"),
        ClusterDownError("The cluster is down"),
        ResponseError("BUSY Redis is busy running a script."),
        SlotNotCoveredError("Slot 7 not covered"),
        RedisClusterException("Redis Cluster cannot be connected. Please provide at least"),
    ):
        assert unrecoverable_reason(transient) is None, transient
    moved = MovedError("3999 127.0.0.1:6381")
    moved.status_code = "MOVED"
    assert unrecoverable_reason(moved, cluster=True) is None
    assert "cluster node" in str(unrecoverable_reason(moved, cluster=False))
    uncovered = RedisClusterException("All slots are not covered after query all startup_nodes.")
    assert str(unrecoverable_reason(uncovered)).startswith("cluster:")
