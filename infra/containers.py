"""Apache Kafka (KRaft, the official ``apache/kafka`` image) and Redis in throw-away containers.

Used by the test suite where a Docker engine is reachable (``testcontainers``, a ``dev``
dependency, is imported only when a container is started). The same images and broker
settings as ``docker-compose.yml``, so tests there run against real Apache Kafka.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

KAFKA_IMAGE = "apache/kafka:3.9.1"
REDIS_IMAGE = "redis:7.2-alpine"
KAFKA_START_TIMEOUT_S = 90
_KAFKA_PORT = 9093  # the listener advertised to the host (testcontainers' default)


def docker_engine_reachable(timeout_s: float = 2.0) -> bool:
    """Whether a Docker engine answers a ping within ``timeout_s`` (never hangs longer)."""
    try:
        import docker
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=max(1, round(timeout_s)))
    except Exception as exc:  # DockerException, but also requests/urllib3 errors
        logger.debug("no docker engine: %r", exc)
        return False
    try:
        return bool(client.ping())
    except Exception as exc:
        logger.debug("docker engine did not answer a ping: %r", exc)
        return False
    finally:
        client.close()


def apache_kafka_start_script(host: str, port: int) -> str:
    """Shell script run inside the container once the host port of the listener is known.

    The advertised listener must name the host side of the port mapping, which exists only
    after the container has started; the image's own entry point then formats the KRaft
    storage and starts the broker.
    """
    return (
        "#!/bin/bash\n"
        f"export KAFKA_ADVERTISED_LISTENERS=PLAINTEXT://{host}:{port},"
        "BROKER://$(hostname -i | cut -d' ' -f1):9092\n"
        "exec /etc/kafka/docker/run\n"
    )


def _apache_kafka_container(image: str) -> Any:
    try:
        from testcontainers.community.kafka import KafkaContainer
    except ImportError:  # testcontainers < 4.14
        from testcontainers.kafka import KafkaContainer

    class ApacheKafkaContainer(KafkaContainer):
        """testcontainers' KafkaContainer (made for Confluent images) on ``apache/kafka``."""

        def configure(self) -> None:
            # KRaft listeners, node id and quorum from the base class; no Confluent boot script.
            self._configure_kraft()
            self.boot_command = ""
            self.with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
            self.with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")

        def tc_start(self) -> None:
            host = self.get_container_host_ip()
            port = self.get_exposed_port(self.port)
            script = apache_kafka_start_script(host, int(port))
            self.create_file(script.encode(), self.TC_START_SCRIPT)

    return ApacheKafkaContainer(image=image, port=_KAFKA_PORT)


@dataclass(frozen=True)
class ContainerEndpoints:
    bootstrap_servers: str
    redis_url: str
    kafka_container_id: str
    redis_container_id: str


@contextlib.contextmanager
def kafka_and_redis(
    kafka_image: str = KAFKA_IMAGE, redis_image: str = REDIS_IMAGE
) -> Iterator[ContainerEndpoints]:
    """Start Apache Kafka and Redis containers; remove both on exit."""
    try:
        from testcontainers.community.redis import RedisContainer
    except ImportError:  # testcontainers < 4.14
        from testcontainers.redis import RedisContainer

    with contextlib.ExitStack() as stack:
        kafka = _apache_kafka_container(kafka_image)
        kafka.start(timeout=KAFKA_START_TIMEOUT_S)
        stack.callback(kafka.stop)
        redis = RedisContainer(image=redis_image)
        redis.start()
        stack.callback(redis.stop)
        redis_host = redis.get_container_host_ip()
        redis_port = redis.get_exposed_port(redis.port)
        endpoints = ContainerEndpoints(
            bootstrap_servers=kafka.get_bootstrap_server(),
            redis_url=f"redis://{redis_host}:{redis_port}/0",
            kafka_container_id=kafka.get_wrapped_container().short_id,
            redis_container_id=redis.get_wrapped_container().short_id,
        )
        logger.info(
            "containers kafka=%s (%s) redis=%s (%s)",
            endpoints.bootstrap_servers,
            kafka_image,
            endpoints.redis_url,
            redis_image,
        )
        yield endpoints
