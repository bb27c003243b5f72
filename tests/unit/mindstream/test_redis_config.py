"""Which Redis versions cluster mode accepts (``mindstream.redis_config``)."""

from __future__ import annotations

import pytest

from mindstream.redis_config import CLUSTER_MIN_VERSION, cluster_version_supported


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
