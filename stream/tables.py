"""The per-user behaviour window table (``stream.window`` encodings; changelog-backed)."""

from __future__ import annotations

from stream.app import app, settings
from stream.rekey import WINDOW_TABLE

# Raw bytes keys and values: JSON keys would make recovery of bytes keys hang
# (docs/ARCHITECTURE.md, "Faust"), and the window has its own compact encoding. The changelog
# partition of a user is the partition of the event being applied (no partitioner), like the
# source topics' (see stream.rekey).
windows = app.Table(
    WINDOW_TABLE,
    key_type=bytes,
    value_type=bytes,
    partitions=settings.topic_partitions,
)
