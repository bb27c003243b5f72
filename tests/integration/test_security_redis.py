"""Redis ACL users and TLS through ``infra.redis_config``, against real redis-servers.

Each test starts its own redis-server with ``infra.launch`` (loopback, a free port): one with
an ACL user restricted to a key prefix and the default user switched off, one serving only TLS
with client certificates required (certificates made here with the ``openssl`` command). The
project's client helper must authenticate from a ``REDIS_URL`` alone, the stream's monotonic
record write must work under the restricted user, and every misconfiguration must fail with a
clear :class:`RedisConfigError` that never echoes the password.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from infra import processes
from infra.exceptions import ServiceStartError
from infra.launch import ServiceDefinition, ServiceRecord, launch
from infra.ports import LOOPBACK, accepts_connections
from infra.redis_config import (
    RedisConfigError,
    async_redis_client,
    check_redis,
    redacted_url,
    redis_client,
)
from infra.redis_server import find_redis_server, redis_argv, redis_env
from mindstream.errors import ConfigError
from mindstream.settings import Settings
from stream.record import InterestRecord, read_interests, write_records

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
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed: cannot make test certificates")
    certs = _certificates(tmp_path / "certs")

    def argv(binary: Path, host: str, port: int, workdir: Path) -> list[str]:
        base = redis_argv(binary, host, port, workdir)
        base[base.index("--port") + 1] = "0"  # no plain-text port at all
        return [
            *base,
            *("--tls-port", str(port)),
            *("--tls-cert-file", str(certs["server.crt"])),
            *("--tls-key-file", str(certs["server.key"])),
            *("--tls-ca-cert-file", str(certs["ca.crt"])),
            *("--tls-auth-clients", "yes"),
            *("--user", USER, *ACL_RULES),
            *("--user", "default", "off"),
        ]

    def tls_ping(host: str, port: int) -> bool:
        client = redis.Redis(
            host=host,
            port=port,
            ssl=True,
            ssl_ca_certs=str(certs["ca.crt"]),
            ssl_certfile=str(certs["client.crt"]),
            ssl_keyfile=str(certs["client.key"]),
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
            pytest.skip(f"redis-server was built without TLS support: {exc}")
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
