"""The worker's topics: clicks in (with the re-key topic), dead letters and re-keyed clicks out."""

from __future__ import annotations

from stream.app import app, settings
from stream.rekey import rekey_topic_name

RAW: dict = {
    "key_type": bytes,
    "value_type": bytes,
    "key_serializer": "raw",
    "value_serializer": "raw",
}
REKEY_TOPIC = rekey_topic_name(settings.app_id, settings.clicks_topic)

# One source for both, so that a user's window sees its keyed and re-keyed events in one
# stream; allow_empty lets tombstones through, to be dead-lettered and counted.
clicks_in = app.topic(settings.clicks_topic, REKEY_TOPIC, allow_empty=True, **RAW)
# Declared so that Faust creates it with the clicks topic's partitions; written by
# stream.batchwriter (in order, per micro-batch), not through this object.
rekey_out = app.topic(
    REKEY_TOPIC, partitions=settings.topic_partitions, internal=True, allow_empty=True, **RAW
)
dead_letters = app.topic(settings.dlq_topic, allow_empty=True, **RAW)
