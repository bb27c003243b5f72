"""Precompute refuses a Redis Cluster at start, naming the setting, instead of failing later."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mindstream.settings import Settings
from recall.exceptions import RecallError
from recall.precompute import precompute_forever


def test_precompute_refuses_cluster_mode_naming_the_setting() -> None:
    registry: Any = None  # never reached
    settings = Settings(redis_cluster=True)
    with pytest.raises(RecallError, match="MINDSTREAM_REDIS_CLUSTER=true"):
        asyncio.run(precompute_forever(settings, registry, full=False, n=None, exclude_seen=True))
