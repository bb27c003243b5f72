"""Checks before the worker starts: topics exist with matching partitions, the bundle verifies."""

from __future__ import annotations

import logging

from infra.topics import ensure_topics
from mindstream.errors import ConfigError
from mindstream.settings import Settings
from model_export.bundle import load_bundle
from stream.rekey import rekey_topic_name

logger = logging.getLogger(__name__)


def preflight(settings: Settings) -> None:
    """Create the worker's topics if missing and refuse partition counts that cannot work."""
    bundle = load_bundle(settings.bundle_path)
    rekey = rekey_topic_name(settings.app_id, settings.clicks_topic)
    n = settings.topic_partitions
    outcomes = ensure_topics(settings, {settings.clicks_topic: n, rekey: n, settings.dlq_topic: n})
    have = {o.name: o.partitions for o in outcomes}
    for name in (settings.clicks_topic, rekey):
        if have[name] != n:
            raise ConfigError(
                f"topic {name} has {have[name]} partitions but MINDSTREAM_TOPIC_PARTITIONS={n}; "
                "the window changelog and re-key topic must match the clicks topic: set "
                f"MINDSTREAM_TOPIC_PARTITIONS={have[settings.clicks_topic]}"
            )
    logger.info(
        "preflight ok clicks=%s partitions=%d dlq=%s rekey=%s bundle=%s",
        settings.clicks_topic,
        n,
        settings.dlq_topic,
        rekey,
        bundle.version,
    )
