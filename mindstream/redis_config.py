"""Redis clients from :class:`~mindstream.settings.Settings`: URL, ACL user, TLS files.

The one place that turns the Redis settings into redis-py clients, so every process connects
the same way (the Kafka side has ``mindstream.kafka_config``):

- ``REDIS_URL`` carries host, port, database and credentials: ``redis://host:6379/0``,
  ``redis://:password@host:6379/0`` (``requirepass``/AUTH), ``redis://user:password@host/0``
  (an ACL user) or ``rediss://...`` for TLS. Percent-encode reserved characters in the password.
- ``MINDSTREAM_REDIS_SSL_CA_FILE``, ``..._CERT_FILE``, ``..._KEY_FILE`` add the CA that verifies
  the server and, for servers with ``tls-auth-clients yes``, the client certificate. With
  ``rediss://`` the server certificate and host name are always verified (redis-py's defaults,
  kept on purpose); the settings refuse TLS files with a plain ``redis://`` URL.

:func:`check_redis` pings once and turns the two failures an operator meets first (wrong
credentials, no TLS where TLS was expected and the reverse) into :class:`RedisConfigError`
messages that name the setting to fix, without echoing the password, and checks that the
server's cluster mode is the one ``MINDSTREAM_REDIS_CLUSTER`` says. :func:`unrecoverable_reason`
tells the errors that retrying cannot fix (their name) from those a retry may outlast (None).
"""

from __future__ import annotations

import logging
import re
import ssl
from typing import Any, cast
from urllib.parse import urlsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, SlotNotCoveredError
from redis.retry import Retry

from mindstream.errors import ConfigError
from mindstream.settings import Settings

logger = logging.getLogger(__name__)


class RedisConfigError(ConfigError):
    """Redis refused the connection as configured (credentials, TLS); the message says why."""


def redis_client_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``Redis.from_url(settings.redis_url, **kwargs)`` (sync or asyncio).

    Only TLS options come from here; the URL holds everything else. Callers add their own
    timeouts, retries and ``decode_responses``.
    """
    if not settings.redis_url.startswith("rediss://"):
        return {}
    options: dict[str, Any] = {}
    if settings.redis_ssl_ca_file:
        options["ssl_ca_certs"] = settings.redis_ssl_ca_file
    if settings.redis_ssl_cert_file:
        options["ssl_certfile"] = settings.redis_ssl_cert_file
        options["ssl_keyfile"] = settings.redis_ssl_key_file
    return options


# Every error a Redis call can raise: the cluster client's own errors do not derive from
# RedisError.
REDIS_ERRORS = (redis.RedisError, RedisClusterException)


# The factories return a cluster client typed as the plain one: it offers the same commands
# (pipelines included, grouped per node), but the installed type stubs know few of them.


def redis_client(settings: Settings, **overrides: Any) -> redis.Redis:
    """A synchronous client (bytes in, bytes out unless ``decode_responses`` is overridden);
    a cluster client when ``MINDSTREAM_REDIS_CLUSTER`` is set."""
    options = {**redis_client_kwargs(settings), **overrides}
    if settings.redis_cluster:
        return cast(redis.Redis, redis.cluster.RedisCluster.from_url(settings.redis_url, **options))
    return redis.Redis.from_url(settings.redis_url, **options)


def async_redis_client(settings: Settings, **overrides: Any) -> redis.asyncio.Redis:
    """An asyncio client with the same connection options as :func:`redis_client`."""
    options = {**redis_client_kwargs(settings), **overrides}
    if settings.redis_cluster:
        return cast(
            redis.asyncio.Redis,
            redis.asyncio.cluster.RedisCluster.from_url(settings.redis_url, **options),
        )
    return redis.asyncio.Redis.from_url(settings.redis_url, **options)


def is_cluster(client: object) -> bool:
    """Whether ``client`` is a cluster client (sync or asyncio)."""
    return isinstance(client, redis.cluster.RedisCluster | redis.asyncio.cluster.RedisCluster)


# Server error codes a retry can outlast: a server loading its data, a script or a failover
# in progress, a replica not yet promoted, memory or persistence trouble that an operator or
# eviction may clear. Every other error reply means the request itself is refused.
_TRANSIENT_CODES = frozenset(
    {"LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "READONLY", "OOM", "MISCONF",
     "NOREPLICAS", "UNBLOCKED"}
)  # fmt: skip
_TRANSIENT_ERRORS = (
    redis.exceptions.ReadOnlyError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,  # MASTERDOWN too
    redis.exceptions.OutOfMemoryError,  # type: ignore[attr-defined]  # stubs lack it
    redis.exceptions.BusyLoadingError,
)
_NAMED_ERRORS: dict[type[Exception], str] = {
    redis.exceptions.NoPermissionError: "NOPERM",
    redis.exceptions.ClusterCrossSlotError: "CROSSSLOT",
    redis.exceptions.NoScriptError: "NOSCRIPT",
}
# redis-py prefixes an error of a pipelined command with the command it came from.
_PIPELINE_PREFIX = re.compile(r"^Command # \d+ \(.*?\) of pipeline caused error: ", re.S)


def error_text(exc: BaseException) -> str:
    """The error as the server or the client said it, without the command redis-py prefixes
    to an error of a pipelined command (its arguments may be long or binary)."""
    return _PIPELINE_PREFIX.sub("", str(exc))


def unrecoverable_reason(exc: BaseException, *, cluster: bool = False) -> str | None:
    """The name of an error that retrying the same request cannot fix, or None when a retry
    may succeed (nothing listening, a timeout, a failover in progress).

    Unrecoverable: a TLS certificate that does not verify, a TLS handshake the server refuses
    (no client certificate, TLS to a plain port), a refused password or user, an error reply
    such as NOAUTH, NOPERM, CROSSSLOT, WRONGTYPE, an unknown command or a script that will not
    load, a cluster without full slot coverage; with a non-cluster client (``cluster`` False)
    also MOVED/ASK, which mean ``REDIS_URL`` is a cluster node.
    """
    for cause in _chain(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return "TLS certificate verify failed"
        if isinstance(cause, ssl.SSLError) and not isinstance(
            cause, ssl.SSLEOFError | ssl.SSLZeroReturnError | ssl.SSLWantReadError
        ):
            return f"TLS {cause.reason or 'handshake failed'}"
    if isinstance(exc, SlotNotCoveredError):
        return None  # the slot map is refreshed on the next try
    if isinstance(exc, RedisClusterException):
        text = str(exc)
        # no startup node answers (all down, or a failover in progress): retry
        if "cannot be connected" in text:
            return None
        # the client refused the request itself (keys of two slots, a blocked command) or the
        # cluster cannot serve it (uncovered slots, not a cluster)
        return f"cluster: {text[:120]}"
    if isinstance(exc, redis.AuthenticationError | redis.exceptions.AuthorizationError):
        return getattr(exc, "status_code", None) or "authentication refused"
    if isinstance(exc, _TRANSIENT_ERRORS):
        return None
    if isinstance(exc, redis.exceptions.AskError):  # MOVED too
        return None if cluster else "MOVED (REDIS_URL is a cluster node)"
    if not isinstance(exc, redis.ResponseError):
        return None
    for kind, name in _NAMED_ERRORS.items():
        if isinstance(exc, kind):
            return name
    text = error_text(exc)
    code = getattr(exc, "status_code", None) or text.split(" ", 1)[0]
    if code in _TRANSIENT_CODES:
        return None
    if code in {"MOVED", "ASK"}:
        return None if cluster else f"{code} (REDIS_URL is a cluster node)"
    if code == "ERR" or not code.isupper():
        lowered = text.lower()
        return "unknown command" if "unknown command" in lowered else f"ERR {text[:80]}"
    return code


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def redacted_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for logs and error messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port is not None else ""
    return parts._replace(netloc=f"{user}:***@{host}{port}").geturl()


def check_redis(settings: Settings, *, timeout_s: float = 5.0) -> None:
    """PING the node of ``REDIS_URL`` with the configured credentials and TLS, and check its
    cluster mode against ``MINDSTREAM_REDIS_CLUSTER`` (and, for a cluster, that every slot is
    served); raise RedisConfigError if anything is refused or does not match.

    Connection failures that are not about configuration (nothing listening, a timeout) are
    re-raised as they are: a retry may cure them, a wrong password never does.
    """
    # A plain client to the node named by the URL, so that the mode can be checked before a
    # cluster client would fail on its own terms. No retries: redis-py counts a refused AUTH as
    # a connection error and would retry it with backoff (about 4 s) although a wrong password
    # never heals.
    client = redis.Redis.from_url(
        settings.redis_url,
        **redis_client_kwargs(settings),
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )
    where = redacted_url(settings.redis_url)
    user = urlsplit(settings.redis_url).username or "default"
    try:
        client.ping()
        _check_cluster_mode(client, settings, where)
    except redis.AuthenticationError as exc:
        raise RedisConfigError(
            f"Redis at {where} refused user {user!r}: {exc} - check the user and password in "
            "REDIS_URL (redis://USER:PASSWORD@host:port/db, password percent-encoded) and the "
            "user's ACL (ACL GETUSER on the server: 'on', its password, +@all or the commands "
            "mindstream uses, ~<MINDSTREAM_REDIS_PREFIX>* keys)"
        ) from None
    except redis.ResponseError as exc:
        text = str(exc)
        if text.startswith(("NOAUTH", "NOPERM", "WRONGPASS")):
            raise RedisConfigError(
                f"Redis at {where} (user {user!r}) said {text!r} - set the user and password in "
                "REDIS_URL, and grant the user the commands and keys mindstream needs"
            ) from None
        raise
    except redis.ConnectionError as exc:
        cause = repr(exc.__cause__ or exc.__context__ or exc)
        if "SSL" in cause or "certificate" in cause.lower() or "ssl" in str(exc).lower():
            raise RedisConfigError(
                f"TLS with Redis at {where} failed: {exc} ({cause}) - the server certificate "
                "must be signed by MINDSTREAM_REDIS_SSL_CA_FILE and name the host of REDIS_URL; "
                "use rediss:// only for a TLS port and redis:// only for a plain one"
            ) from None
        raise
    finally:
        client.close()
    logger.info("redis reachable url=%s user=%s cluster=%s", where, user, settings.redis_cluster)


# The write by node (stream/record.py) uses script flags, which Redis 7.0 introduced.
CLUSTER_MIN_VERSION = (7, 0)


def cluster_version_supported(version: str) -> bool:
    """Whether a Redis Cluster of server version ``version`` ("7.0.15") serves the worker's
    writes; an unparsable version is let through (the first write then tells)."""
    try:
        parsed = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        return True
    return len(parsed) < 2 or parsed >= CLUSTER_MIN_VERSION


def _check_cluster_mode(client: redis.Redis, settings: Settings, where: str) -> None:
    try:
        enabled = bool(int(client.info("cluster").get("cluster_enabled", 0)))
    except redis.exceptions.NoPermissionError:
        # INFO is an @dangerous command that a restricted user may lack; the first write then
        # tells (MOVED or CROSSSLOT, named in the log).
        logger.warning("redis cluster mode not checked url=%s: INFO refused by the ACL", where)
        return
    if enabled != settings.redis_cluster:
        if enabled:
            raise RedisConfigError(
                f"Redis at {where} is a Redis Cluster node but MINDSTREAM_REDIS_CLUSTER is "
                "false: set MINDSTREAM_REDIS_CLUSTER=true (a plain client cannot follow the "
                "cluster's slots)"
            )
        raise RedisConfigError(
            f"MINDSTREAM_REDIS_CLUSTER is true but Redis at {where} is not in cluster mode "
            "(cluster_enabled:0): unset MINDSTREAM_REDIS_CLUSTER, or point REDIS_URL at a "
            "cluster node"
        )
    if not enabled:
        return
    version = str(client.info("server").get("redis_version", ""))
    if not cluster_version_supported(version):
        raise RedisConfigError(
            f"the Redis Cluster of {where} (MINDSTREAM_REDIS_CLUSTER=true) runs Redis {version}: "
            f"cluster mode needs Redis {'.'.join(map(str, CLUSTER_MIN_VERSION))} or later (the "
            "worker writes each master's share of a batch with a script flagged "
            "allow-cross-slot-keys); upgrade the cluster or use a single Redis"
        )
    raw = client.execute_command("CLUSTER", "INFO")
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    info = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    assigned = int(info.get("cluster_slots_assigned", "0"))
    if assigned < 16384:
        raise RedisConfigError(
            f"the Redis Cluster of {where} (MINDSTREAM_REDIS_CLUSTER=true) serves {assigned} "
            "of 16384 slots: assign every slot to a master (redis-cli --cluster fix or "
            "CLUSTER ADDSLOTS) before starting mindstream"
        )
