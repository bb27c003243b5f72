"""Redis ACL users and TLS through ``mindstream.redis_config``, against real redis-servers.

Each test starts its own redis-server with ``infra.launch`` (loopback, a free port): one with
an ACL user restricted to a key prefix and the default user switched off, one serving only TLS
with client certificates required (certificates made here with the ``openssl`` command). The
project's client helper must authenticate from a ``REDIS_URL`` alone, the stream's monotonic
record write must work under the restricted user, and every misconfiguration must fail with a
clear :class:`RedisConfigError` that never echoes the password.

Then the product as a user runs it: the stream worker writes records over TLS (with and
without a client certificate), the recall service and ``mindstream stream show`` read them;
Redis errors that retrying cannot fix (NOPERM, an unknown command, an untrusted certificate)
are named in the log and on ``/health`` and end the worker with exit status 78, while a Redis
outage is retried for as long as it lasts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from benchmarks.harness import WorkerProcess, publish
from infra import processes
from infra.exceptions import ServiceStartError
from infra.launch import ServiceDefinition, ServiceRecord, launch
from infra.ports import LOOPBACK, accepts_connections
from infra.redis_server import find_redis_server, redis_argv, redis_env
from mindstream.errors import ConfigError
from mindstream.redis_config import (
    RedisConfigError,
    async_redis_client,
    check_redis,
    redacted_url,
    redis_client,
)
from mindstream.settings import Settings
from stream.record import InterestRecord, read_interests, write_records
from tests.integration.streamcheck import (
    assert_equal_to_batch_recompute,
    click_records,
    expected_windows,
    recall_interests,
    run_worker_until_written,
    stream_show,
    synthetic_clicks,
    wait_for_records,
)
from tests.requirements import missing

pytestmark = pytest.mark.integration

USER = "mind"
PASSWORD = "s3cret-pw"
PREFIX = "acl-test:"
NO_RETRY = Retry(NoBackoff(), 0)
TlsRedis = tuple[ServiceRecord, dict[str, Path]]
# What a mindstream process needs: its own keys only, no admin or dangerous commands.
ACL_RULES = ["on", f">{PASSWORD}", f"~{PREFIX}*", "+@all", "-@admin", "-@dangerous"]


def _alive_probe(check: Callable[[str, int], object]) -> Callable[[str, int], bool]:
    def probe(host: str, port: int) -> bool:
        if not accepts_connections(host, port):
            return False
        try:
            return bool(check(host, port))
        except (redis.AuthenticationError, redis.ResponseError):
            return True  # it answered: only the credentials were refused
        except (redis.RedisError, OSError):
            return False

    return probe


def _launch(definition: ServiceDefinition, workdir: Path) -> Iterator[ServiceRecord]:
    record = launch(definition, workdir, host=LOOPBACK, timeout_s=20.0)
    try:
        yield record
    finally:
        processes.stop(record.process, timeout_s=5.0)


@pytest.fixture
def acl_redis(tmp_path: Path) -> Iterator[ServiceRecord]:
    """redis-server whose only usable user is ``mind`` (the default user is off)."""

    def argv(binary: Path, host: str, port: int, workdir: Path) -> list[str]:
        return [
            *redis_argv(binary, host, port, workdir),
            *("--user", USER, *ACL_RULES),
            *("--user", "default", "off"),
        ]

    definition = ServiceDefinition(
        name="redis-acl",
        find_binary=find_redis_server,
        argv=argv,
        env=redis_env,
        probe=_alive_probe(
            lambda h, p: redis.Redis(host=h, port=p, socket_timeout=1, retry=NO_RETRY).ping()
        ),
    )
    yield from _launch(definition, tmp_path)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _settings(url: str, **tls: Any) -> Settings:
    settings = dataclasses.replace(Settings(redis_url=url, redis_prefix=PREFIX), **tls)
    settings.validate()
    return settings


def _record(user: str, seq: int) -> InterestRecord:
    vectors = np.arange(8, dtype=np.float32).reshape(2, 4) + seq
    return InterestRecord(
        user_id=user,
        vectors=vectors,
        k=2,
        dim=4,
        model="v-test",
        event_ts=1_700_000_000_000 + seq,
        updated_ms=1_700_000_000_000,
        n_behaviours=3,
        seq=seq,
        src=f"clicks/0/{seq}",
        items=("i1", "i2", "i3"),
    )


def test_acl_user_from_the_url_authenticates_and_writes_records(acl_redis: ServiceRecord) -> None:
    url = f"redis://{USER}:{PASSWORD}@{LOOPBACK}:{acl_redis.port}/0"
    settings = _settings(url)
    check_redis(settings)
    client = redis_client(settings)
    try:
        assert _text(client.acl_whoami()) == USER
        # The stream's monotonic Lua write and the recall read work under the restricted user.
        assert write_records(client, PREFIX, [_record("u1", 5)]) == [True]
        assert write_records(client, PREFIX, [_record("u1", 4)]) == [False]  # older: kept
        got = read_interests(client, PREFIX, "u1")
        assert got is not None and got.seq == 5
        np.testing.assert_array_equal(got.vectors, _record("u1", 5).vectors)
        # The ACL is really enforced: keys outside the prefix and admin commands are refused.
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.set("elsewhere", b"x")
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.config_get("requirepass")
    finally:
        client.close()

    async def ping_async() -> bytes | str:
        aclient = async_redis_client(settings)
        try:
            return await aclient.acl_whoami()
        finally:
            await aclient.aclose()  # type: ignore[attr-defined]  # stubs predate redis 5

    assert _text(asyncio.run(ping_async())) == USER


@pytest.mark.parametrize(
    ("credentials", "expected"),
    [
        (f"{USER}:wrong-password@", "refused user 'mind'"),
        (f"nobody:{PASSWORD}@", "refused user 'nobody'"),
        ("", "refused user 'default'"),
    ],
    ids=["wrong-password", "unknown-user", "no-credentials"],
)
def test_bad_credentials_fail_clearly_without_leaking_the_password(
    acl_redis: ServiceRecord, credentials: str, expected: str
) -> None:
    url = f"redis://{credentials}{LOOPBACK}:{acl_redis.port}/0"
    with pytest.raises(RedisConfigError) as info:
        check_redis(_settings(url))
    message = str(info.value)
    assert expected in message
    assert "REDIS_URL" in message
    assert "wrong-password" not in message and PASSWORD not in message


def test_redacted_url_hides_only_the_password() -> None:
    assert redacted_url("rediss://u:p%40ss@h:6380/2") == "rediss://u:***@h:6380/2"
    assert redacted_url("redis://:pw@[::1]:7/0") == "redis://:***@[::1]:7/0"
    assert redacted_url("redis://h:6379/0") == "redis://h:6379/0"


# --- TLS -------------------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")


def _certificates(root: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    root.mkdir(parents=True, exist_ok=True)
    _openssl(
        *("req", "-x509", *EC_KEY, "-nodes", "-days", "2"),
        *("-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=mindstream-test-ca"),
        cwd=root,
    )
    for name, extra in (
        ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        _openssl(
            *("req", *EC_KEY, "-nodes", "-keyout", f"{name}.key"),
            *("-out", f"{name}.csr", "-subj", f"/CN=mindstream-test-{name}"),
            cwd=root,
        )
        (root / f"{name}.ext").write_text(extra + "\n")
        _openssl(
            *("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key"),
            *("-CAcreateserial", "-days", "2", "-out", f"{name}.crt"),
            *("-extfile", f"{name}.ext"),
            cwd=root,
        )
    (root / "other").mkdir()
    _openssl(
        *("req", "-x509", *EC_KEY, "-nodes", "-days", "2"),
        *("-keyout", "other/ca.key", "-out", "other/ca.crt", "-subj", "/CN=another-ca"),
        cwd=root,
    )
    return {
        name: root / name
        for name in ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")
    } | {"other-ca.crt": root / "other" / "ca.crt"}


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[TlsRedis]:
    """redis-server on a TLS-only port, client certificates required, ACL user as above."""
    yield from _tls_redis(tmp_path, auth_clients=True)


@pytest.fixture(params=[True, False], ids=["client-certificate", "ca-only"])
def any_tls_redis(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TlsRedis]:
    """The TLS-only server with and without ``--tls-auth-clients yes``."""
    yield from _tls_redis(tmp_path, auth_clients=request.param)


def _tls_redis(tmp_path: Path, *, auth_clients: bool) -> Iterator[TlsRedis]:
    if shutil.which("openssl") is None:
        missing("the openssl command is not installed: cannot make test certificates")
    certs = _certificates(tmp_path / "certs")
    if not auth_clients:
        certs = {k: v for k, v in certs.items() if not k.startswith("client.")}

    def argv(binary: Path, host: str, port: int, workdir: Path) -> list[str]:
        base = redis_argv(binary, host, port, workdir)
        base[base.index("--port") + 1] = "0"  # no plain-text port at all
        return [
            *base,
            *("--tls-port", str(port)),
            *("--tls-cert-file", str(certs["server.crt"])),
            *("--tls-key-file", str(certs["server.key"])),
            *("--tls-ca-cert-file", str(certs["ca.crt"])),
            *("--tls-auth-clients", "yes" if auth_clients else "no"),
            *("--user", USER, *ACL_RULES),
            *("--user", "default", "off"),
        ]

    def tls_ping(host: str, port: int) -> bool:
        client = redis.Redis(
            host=host,
            port=port,
            ssl=True,
            ssl_ca_certs=str(certs["ca.crt"]),
            ssl_certfile=str(certs["client.crt"]) if auth_clients else None,
            ssl_keyfile=str(certs["client.key"]) if auth_clients else None,
            socket_timeout=1,
            retry=NO_RETRY,
        )
        try:
            return bool(client.ping())
        finally:
            client.close()

    definition = ServiceDefinition(
        name="redis-tls", find_binary=find_redis_server, argv=argv, env=redis_env,
        probe=_alive_probe(tls_ping),
    )  # fmt: skip
    try:
        record = launch(definition, tmp_path, host=LOOPBACK, timeout_s=20.0)
    except ServiceStartError as exc:
        # A redis-server built without TLS exits at once, saying so in its log.
        if "tls" in str(exc).lower() and "support" in str(exc).lower():
            missing(f"redis-server was built without TLS support: {exc}")
        raise
    try:
        yield record, certs
    finally:
        processes.stop(record.process, timeout_s=5.0)


def test_tls_with_ca_and_client_certificate(tls_redis: TlsRedis) -> None:
    record, certs = tls_redis
    url = f"rediss://{USER}:{PASSWORD}@{LOOPBACK}:{record.port}/0"
    settings = _settings(
        url,
        redis_ssl_ca_file=str(certs["ca.crt"]),
        redis_ssl_cert_file=str(certs["client.crt"]),
        redis_ssl_key_file=str(certs["client.key"]),
    )
    check_redis(settings)
    client = redis_client(settings)
    try:
        assert write_records(client, PREFIX, [_record("u2", 1)]) == [True]
        got = read_interests(client, PREFIX, "u2")
        assert got is not None and got.seq == 1
        assert _text(client.acl_whoami()) == USER
    finally:
        client.close()


def test_tls_misconfigurations_fail_clearly(tls_redis: TlsRedis) -> None:
    record, certs = tls_redis
    tls_url = f"rediss://{USER}:{PASSWORD}@{LOOPBACK}:{record.port}/0"
    client_cert = {
        "redis_ssl_cert_file": str(certs["client.crt"]),
        "redis_ssl_key_file": str(certs["client.key"]),
    }
    # A CA that did not sign the server certificate (or none: the system CAs).
    for ca in (str(certs["other-ca.crt"]), ""):
        with pytest.raises(RedisConfigError, match="MINDSTREAM_REDIS_SSL_CA_FILE"):
            check_redis(_settings(tls_url, redis_ssl_ca_file=ca, **client_cert))
    # The server requires a client certificate.
    with pytest.raises(RedisConfigError, match="TLS with Redis"):
        check_redis(_settings(tls_url, redis_ssl_ca_file=str(certs["ca.crt"])))
    # Plain text to a TLS-only port: the server hangs up; not a credentials problem.
    plain = f"redis://{USER}:{PASSWORD}@{LOOPBACK}:{record.port}/0"
    with pytest.raises(redis.ConnectionError):
        check_redis(_settings(plain), timeout_s=2.0)
    # TLS files with a plain URL are refused before any connection.
    with pytest.raises(ConfigError, match="not rediss://"):
        _settings(plain, redis_ssl_ca_file=str(certs["ca.crt"]))


# --- the worker, recall and `stream show` over TLS; errors retrying cannot fix ---------------

REFUSED_EXIT_S = 3.0


def test_worker_writes_and_recall_and_show_read_over_tls(
    any_tls_redis: TlsRedis, stream_settings: Settings, bundle_dir: Path, tmp_path: Path
) -> None:
    """Every process gets its Redis client from the one factory, so the TLS files count: the
    worker writes over TLS (with a client certificate where the server asks for one), recall
    and ``stream show`` read what it wrote."""
    record, certs = any_tls_redis
    tls: dict[str, str] = {"redis_ssl_ca_file": str(certs["ca.crt"])}
    if "client.crt" in certs:
        tls |= {
            "redis_ssl_cert_file": str(certs["client.crt"]),
            "redis_ssl_key_file": str(certs["client.key"]),
        }
    settings = dataclasses.replace(
        stream_settings,
        redis_url=f"rediss://{USER}:{PASSWORD}@{LOOPBACK}:{record.port}/0",
        redis_prefix=f"{PREFIX}{uuid.uuid4().hex[:8]}:",
        **tls,
    )
    settings.validate()
    clicks = synthetic_clicks()
    expected = expected_windows(clicks)
    records, _ = run_worker_until_written(settings, clicks, tmp_path / "worker.log")
    assert_equal_to_batch_recompute(bundle_dir, records, expected)
    users = sorted(expected)[:5]
    shown = stream_show(settings, users)
    served = asyncio.run(recall_interests(settings, users))
    for user in users:
        assert shown[user]["seq"] == served[user]["seq"] == records[user].seq, user
        assert shown[user]["items"] == served[user]["items"] == list(records[user].items)


def _wait_exit(worker: WorkerProcess, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while worker.running:
        assert time.monotonic() < deadline, f"worker still running:\n{worker.log_tail()}"
        time.sleep(0.1)
    return int(worker.returncode or 0)


@pytest.mark.parametrize(
    ("server_args", "reason"),
    [
        # the user may PING (so the start-up check passes) but not run the write script
        (("--user", USER, *ACL_RULES, "-evalsha", "-eval"), "NOPERM"),
        # a server that does not offer the command at all
        (("--user", USER, *ACL_RULES, "--rename-command", "EVALSHA", '""'), "unknown command"),
    ],
    ids=["noperm", "unknown-command"],
)
def test_a_refused_write_is_named_unhealthy_and_ends_the_worker(
    server_args: tuple[str, ...],
    reason: str,
    stream_settings: Settings,
    tmp_path: Path,
) -> None:
    def argv(binary: Path, host: str, port: int, workdir: Path) -> list[str]:
        return [*redis_argv(binary, host, port, workdir), *server_args, "--user", "default", "off"]

    definition = ServiceDefinition(
        name="redis-refusing",
        find_binary=find_redis_server,
        argv=argv,
        env=redis_env,
        probe=_alive_probe(
            lambda h, p: redis.Redis(host=h, port=p, socket_timeout=1, retry=NO_RETRY).ping()
        ),
    )
    server = launch(definition, tmp_path / "redis", host=LOOPBACK, timeout_s=20.0)
    try:
        settings = dataclasses.replace(
            stream_settings,
            redis_url=f"redis://{USER}:{PASSWORD}@{LOOPBACK}:{server.port}/0",
            redis_prefix=f"{PREFIX}{uuid.uuid4().hex[:8]}:",
            stream_redis_refused_exit_s=REFUSED_EXIT_S,
        )
        with WorkerProcess(settings, tmp_path / "worker.log") as worker:
            worker.start()
            worker.wait_ready()
            publish(settings, click_records(synthetic_clicks(5)))
            deadline = time.monotonic() + 60
            while (answer := worker.health()) is None or answer[0] == 200:
                assert worker.running and time.monotonic() < deadline, worker.log_tail()
                time.sleep(0.1)
            refused_at = time.monotonic()
            status, body = answer
            assert status == 503 and body["status"] == "refused", body
            assert body["refused"] == {"redis": reason}, body
            code = _wait_exit(worker, REFUSED_EXIT_S + 30)
            took = time.monotonic() - refused_at
            log = worker.log_path.read_text(errors="replace")
    finally:
        processes.stop(server.process, timeout_s=5.0)
    assert code == 78, log[-3000:]
    assert f"reason={reason!r}" in log and "retrying cannot fix it" in log
    assert "MINDSTREAM_REDIS" in log.split("exiting without committing")[-1]
    assert took < REFUSED_EXIT_S + 20, took


def test_an_untrusted_certificate_stops_the_worker_at_start_naming_the_setting(
    tls_redis: TlsRedis, stream_settings: Settings, tmp_path: Path
) -> None:
    record, certs = tls_redis
    settings = dataclasses.replace(
        stream_settings,
        redis_url=f"rediss://{USER}:{PASSWORD}@{LOOPBACK}:{record.port}/0",
        redis_ssl_ca_file=str(certs["other-ca.crt"]),
        redis_ssl_cert_file=str(certs["client.crt"]),
        redis_ssl_key_file=str(certs["client.key"]),
    )
    with WorkerProcess(settings, tmp_path / "worker.log") as worker:
        worker.start()
        code = _wait_exit(worker, 90)
        log = worker.log_path.read_text(errors="replace")
    assert code == 78, log[-3000:]
    assert "certificate" in log and "MINDSTREAM_REDIS_SSL_CA_FILE" in log


def test_a_redis_outage_is_retried_past_the_refused_exit_time(
    stream_settings: Settings, own_redis: Callable[..., object], tmp_path: Path
) -> None:
    """Connection refused is transient: the worker reports it (degraded) and keeps retrying
    for longer than MINDSTREAM_STREAM_REDIS_REFUSED_EXIT_S, then writes once Redis is back."""
    client = own_redis("start")
    assert isinstance(client, redis.Redis)
    settings = dataclasses.replace(
        stream_settings,
        redis_url=str(own_redis("url")),
        stream_redis_refused_exit_s=REFUSED_EXIT_S,
        stream_retry_max_s=0.5,
    )
    clicks = synthetic_clicks(10)
    expected = expected_windows(clicks)
    with WorkerProcess(settings, tmp_path / "worker.log") as worker:
        worker.start()
        worker.wait_ready()
        own_redis("kill")
        publish(settings, click_records(clicks))
        deadline = time.monotonic() + 60
        while (answer := worker.health()) is None or answer[0] == 200:
            assert worker.running and time.monotonic() < deadline, worker.log_tail()
            time.sleep(0.1)
        assert answer[1]["status"] == "degraded" and answer[1]["refused"] == {}, answer
        failing_from = time.monotonic()
        # past the refused-exit time the worker is still there, still retrying
        while time.monotonic() - failing_from < REFUSED_EXIT_S + 2:
            assert worker.running, worker.log_tail()
            answer = worker.health()
            assert answer is not None and answer[1]["status"] == "degraded", answer
            time.sleep(0.5)
        client = own_redis("start")
        assert isinstance(client, redis.Redis)
        records = wait_for_records(settings, client, expected, worker=worker)
        assert worker.wait_ready(timeout_s=30)["refused"] == {}
        assert worker.starts == 1 and worker.running
    assert sum(r.seq for r in records.values()) == len(clicks)
    assert "retrying cannot fix it" not in worker.log_path.read_text(errors="replace")
