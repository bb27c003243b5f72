"""How the test suite picks its Kafka and Redis."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.testing import ServiceEndpoints, Source, choose, env_for_tests, provide
from mindstream.errors import ConfigError
from mindstream.settings import Settings

BOTH = {
    "MINDSTREAM_TEST_KAFKA_BOOTSTRAP_SERVERS": "k:9092",
    "MINDSTREAM_TEST_REDIS_URL": "redis://r:6379/1",
}


def _no_docker() -> bool:
    return False


def _docker() -> bool:
    return True


def _must_not_ask() -> bool:
    raise AssertionError("docker was probed although the choice was already made")


def _kafka_tools() -> str | None:
    return None


def _no_java() -> str:
    return "the local Apache Kafka broker needs Java (not on PATH); install it with: apt-get"


def test_environment_wins_then_docker_then_apache_kafka_then_tansu() -> None:
    assert choose(BOTH, _must_not_ask, _kafka_tools).source is Source.ENV
    assert choose({}, _docker, _kafka_tools).source is Source.DOCKER
    assert choose({}, _no_docker, _kafka_tools).source is Source.KAFKA
    fallback = choose({}, _no_docker, _no_java)
    assert fallback.source is Source.TANSU and not fallback.explicit
    # The header says why it fell back to Tansu, with the launcher's install advice.
    assert "falling back to Tansu" in fallback.reason and "needs Java" in fallback.reason


def test_forcing_a_source() -> None:
    forced = choose({**BOTH, "MINDSTREAM_TEST_SERVICES": "tansu"}, _must_not_ask, _no_java)
    assert forced.source is Source.TANSU and forced.explicit
    kafka = choose({"MINDSTREAM_TEST_SERVICES": "kafka"}, _must_not_ask, _no_java)
    assert kafka.source is Source.KAFKA and kafka.explicit  # chosen even without java
    assert choose({"MINDSTREAM_TEST_SERVICES": "Docker"}, _no_docker).source is Source.DOCKER
    with pytest.raises(ConfigError, match="expected one of"):
        choose({"MINDSTREAM_TEST_SERVICES": "cloud"}, _no_docker)
    with pytest.raises(ConfigError, match=r"kafka \(Apache Kafka\) or tansu"):
        choose({"MINDSTREAM_TEST_SERVICES": "local"}, _no_docker)
    with pytest.raises(ConfigError, match="set both"):
        choose({"MINDSTREAM_TEST_SERVICES": "env"}, _no_docker)


def test_half_a_configuration_is_refused() -> None:
    with pytest.raises(ConfigError, match="MINDSTREAM_TEST_REDIS_URL"):
        choose({"MINDSTREAM_TEST_KAFKA_BOOTSTRAP_SERVERS": "k:9092"}, _no_docker)


def test_settings_come_from_test_variables_only() -> None:
    env = {
        **BOTH,
        "MINDSTREAM_TEST_KAFKA_PROFILE": "local",
        "MINDSTREAM_TEST_KAFKA_SECURITY_PROTOCOL": "SSL",
        "MINDSTREAM_TEST_SERVICES": "env",
        "MINDSTREAM_TEST_UNKNOWN": "x",
        "KAFKA_BOOTSTRAP_SERVERS": "developer:9092",
        "MINDSTREAM_KAFKA_PROFILE": "standard",
    }
    assert env_for_tests(env) == {
        "KAFKA_BOOTSTRAP_SERVERS": "k:9092",
        "REDIS_URL": "redis://r:6379/1",
        "MINDSTREAM_KAFKA_PROFILE": "local",
        "MINDSTREAM_KAFKA_SECURITY_PROTOCOL": "SSL",
    }


def test_environment_services_are_used_as_given() -> None:
    with provide(Source.ENV, BOTH, local_root=Path("unused")) as endpoints:
        assert endpoints == ServiceEndpoints(
            Source.ENV, "k:9092", "redis://r:6379/1", "standard", endpoints.detail
        )
    settings = endpoints.apply(Settings(app_id="mine"))
    assert settings.kafka_bootstrap_servers == "k:9092"
    assert settings.redis_url == "redis://r:6379/1"
    assert settings.kafka_profile == "standard" and settings.app_id == "mine"
    with pytest.raises(ConfigError, match="MINDSTREAM_TEST_KAFKA_PROFILE"):
        provide(
            Source.ENV,
            {**BOTH, "MINDSTREAM_TEST_KAFKA_PROFILE": "tansu"},
            local_root=Path("unused"),
        )
