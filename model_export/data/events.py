"""Interactions replayed as click events in the stream's contract form (README, "Click event"),
in global event-time order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from model_export.dataset import Interactions


def iter_click_events(
    data: Interactions,
    *,
    event: str = "click",
    category_feature: str | None = "category",
    category_names: Sequence[str] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield ``{"user_id", "item_id", "ts", "event"[, "category"]}`` for every behaviour.

    Events come in timestamp order; equal timestamps in user order, then sequence order, so
    each user's events keep their sequence order. ``category`` is added when ``data`` has the
    single-valued feature ``category_feature``: ``category_names[id - 1]`` or the feature id
    as a string; items with no category get none. Needs timestamps.
    """
    if data.timestamps is None:
        raise ValueError(f"{data.name} has no timestamps: it cannot be replayed as events")
    if not data.sequences:
        return
    lengths = np.array([len(s) for s in data.sequences], dtype=np.int64)
    ts = np.concatenate(data.timestamps).astype(np.int64)
    items = np.concatenate(data.sequences).astype(np.int64)
    users = np.repeat(np.arange(len(lengths)), lengths)
    position = np.arange(len(ts))  # global position: orders a user's equal timestamps too
    order = np.lexsort((position, users, ts))

    categories = None
    if category_feature is not None and category_feature in data.item_features:
        categories = data.item_features[category_feature][:, 0]

    for i in order.tolist():
        item = int(items[i])
        record: dict[str, Any] = {
            "user_id": data.users[users[i]],
            "item_id": data.item_ids[item - 1],
            "ts": int(ts[i]),
            "event": event,
        }
        if categories is not None and categories[item] > 0:
            fid = int(categories[item])
            record["category"] = category_names[fid - 1] if category_names else str(fid)
        yield record
