"""Redis clients from :class:`~mindstream.settings.Settings`: URL, ACL user, TLS files.

The one place that turns the Redis settings into redis-py clients, so every process connects
the same way (the Kafka side has ``infra.kafka_config``):

- ``REDIS_URL`` carries host, port, database and credentials: ``redis://host:6379/0``,
  ``redis://:password@host:6379/0`` (``requirepass``/AUTH), ``redis://user:password@host/0``
  (an ACL user) or ``rediss://...`` for TLS. Percent-encode reserved characters in the password.
- ``MINDSTREAM_REDIS_SSL_CA_FILE``, ``..._CERT_FILE``, ``..._KEY_FILE`` add the CA that verifies
  the server and, for servers with ``tls-auth-clients yes``, the client certificate. With
  ``rediss://`` the server certificate and host name are always verified (redis-py's defaults,
  kept on purpose); the settings refuse TLS files with a plain ``redis://`` URL.

:func:`check_redis` pings once and turns the two failures an operator meets first (wrong
credentials, no TLS where TLS was expected and the reverse) into :class:`RedisConfigError`
messages that name the setting to fix, without echoing the password.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry

from infra.exceptions import InfraError
from mindstream.settings import Settings

logger = logging.getLogger(__name__)


class RedisConfigError(InfraError):
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


def redis_client(settings: Settings, **overrides: Any) -> redis.Redis:
    """A synchronous client (bytes in, bytes out unless ``decode_responses`` is overridden)."""
    return redis.Redis.from_url(
        settings.redis_url, **{**redis_client_kwargs(settings), **overrides}
    )


def async_redis_client(settings: Settings, **overrides: Any) -> redis.asyncio.Redis:
    """An asyncio client with the same connection options as :func:`redis_client`."""
    return redis.asyncio.Redis.from_url(
        settings.redis_url, **{**redis_client_kwargs(settings), **overrides}
    )


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
    """PING Redis with the configured credentials and TLS; raise RedisConfigError if refused.

    Connection failures that are not about configuration (nothing listening, a timeout) are
    re-raised as they are: a retry may cure them, a wrong password never does.
    """
    # No retries: redis-py counts a refused AUTH as a connection error and would retry it with
    # backoff (about 4 s) although a wrong password never heals.
    client = redis_client(
        settings,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )
    where = redacted_url(settings.redis_url)
    user = urlsplit(settings.redis_url).username or "default"
    try:
        client.ping()
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
    logger.info("redis reachable url=%s user=%s", where, user)
