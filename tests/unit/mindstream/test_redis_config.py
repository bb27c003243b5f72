"""mindstream.redis_config: the Redis versions cluster mode accepts; how a pipelined error reads."""

from __future__ import annotations

import pytest
import redis.exceptions

from mindstream.redis_config import CLUSTER_MIN_VERSION, cluster_version_supported, error_text


@pytest.mark.parametrize(
    ("version", "supported"),
    [
        ("7.0.15", True),
        ("7.2.4", True),
        ("8.0.0", True),
        ("6.2.14", False),
        ("6.0.0", False),
        ("5.0.7", False),
        ("", True),  # not reported: the first write tells
        ("unstable", True),
    ],
)
def test_cluster_mode_needs_script_flags(version: str, supported: bool) -> None:
    assert CLUSTER_MIN_VERSION == (7, 0)
    assert cluster_version_supported(version) is supported


def test_error_text_drops_the_pipelined_command_and_its_binary_arguments() -> None:
    exc = redis.exceptions.ResponseError(
        "Command # 2 (EVALSHA beeb 0 \x00\xdd\x01binary\n...) of pipeline caused error: "
        "('Script attempted to access a non local key in a cluster node script: beeb',)"
    )
    text = error_text(exc)
    assert text.startswith("('Script attempted to access a non local key")
    assert "EVALSHA" not in text and "binary" not in text
    assert error_text(redis.exceptions.ResponseError("NOPERM no")) == "NOPERM no"
