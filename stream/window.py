"""Per-user behaviour windows: pure functions, no I/O, the same result for any arrival order.

A window holds a user's last ``max_len`` behaviours in event-time order (producer item ids, not
model indices), drops behaviours older than ``horizon_ms`` before the user's newest event, and
remembers, per source partition, the last offset it applied, so that a replayed event is a
no-op. ``seq`` counts the events ever applied (replays excluded): it is the window's version and
the monotonic version of the user's Redis record.

Definition (what the streaming update equals, see :func:`batch_window`): sort every applied event
by (ts, arrival order), keep those with ``ts >= newest_ts - horizon_ms``, keep the last
``max_len`` of them. An event that arrives late is inserted in place; one that is already older
than the horizon, or older than ``max_len`` newer ones, changes nothing but ``seq`` and the
source offset.

A "source" is the partition where the event was first published (``"<topic>/<partition>"``),
or, for events re-keyed through another topic, that origin partition marked as re-keyed
(``"<topic>/<partition>+rekey"``); re-keyed events keep their original offsets, so replays of
either topic are recognised. Two kinds of source:

- ordered (the default): its events reach the window in offset order, so "offset <= last
  applied" means "replay";
- unordered (``Behaviour.ordered=False``, the re-keyed path): after a crash an event can arrive
  after a newer one of its origin partition (the copy forwarded again on replay overtakes an
  original that was never delivered). The window keeps the exact set of the last
  ``RECENT_OFFSETS`` offsets it applied from such a source: an offset in the set is a replay,
  one missing from it is applied, however late. Only an offset below the whole (full) set is
  taken for a replay without proof, which needs ``RECENT_OFFSETS`` newer events of the same user
  from the same partition to have overtaken it.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import orjson

from stream.exceptions import StreamError

FORMAT_VERSION = 1
# per unordered source, the newest applied offsets a window remembers exactly
RECENT_OFFSETS = 32


@dataclass(frozen=True, slots=True)
class BehaviourWindow:
    """One user's window. Treat as immutable: updates return a new window."""

    items: tuple[str, ...] = ()
    ts: tuple[int, ...] = ()
    # source ("topic/partition", or "topic/partition+rekey") -> last offset applied from it
    offsets: Mapping[str, int] = field(default_factory=dict)
    seq: int = 0
    # unordered source -> its last RECENT_OFFSETS applied offsets, ascending
    recent: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def newest_ts(self) -> int | None:
        return self.ts[-1] if self.ts else None

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True, slots=True)
class Behaviour:
    """One event as the window sees it: what, when, and where it was first published."""

    item_id: str
    ts: int
    source: str
    offset: int
    ordered: bool = True


def is_replay(
    offsets: Mapping[str, int], recent: Mapping[str, tuple[int, ...]], b: Behaviour
) -> bool:
    """Whether ``b`` was applied already, by its source's kind (see the module docstring)."""
    if b.ordered:
        return b.offset <= offsets.get(b.source, -1)
    seen = recent.get(b.source, ())
    if len(seen) >= RECENT_OFFSETS and b.offset < seen[0]:
        return True
    at = bisect_right(seen, b.offset)
    return at > 0 and seen[at - 1] == b.offset


def remember(offsets: dict[str, int], recent: dict[str, tuple[int, ...]], b: Behaviour) -> None:
    """Record ``b`` (not a replay) as applied."""
    offsets[b.source] = max(b.offset, offsets.get(b.source, -1))
    if not b.ordered:
        seen = list(recent.get(b.source, ()))
        seen.insert(bisect_right(seen, b.offset), b.offset)
        recent[b.source] = tuple(seen[-RECENT_OFFSETS:])


def apply_batch(
    window: BehaviourWindow | None,
    behaviours: Iterable[Behaviour],
    *,
    max_len: int,
    horizon_ms: int,
) -> tuple[BehaviourWindow, list[bool]]:
    """Apply ``behaviours`` in arrival order; return the new window and, per behaviour, whether
    it was new (False: a replay, skipped). When nothing is new, the same window is returned."""
    if max_len < 1 or horizon_ms < 0:
        raise ValueError(f"max_len must be >= 1 and horizon_ms >= 0, got {max_len}, {horizon_ms}")
    base = window if window is not None else BehaviourWindow()
    items = list(base.items)
    stamps = list(base.ts)
    offsets = dict(base.offsets)
    recent = dict(base.recent)
    new: list[bool] = []
    for b in behaviours:
        if is_replay(offsets, recent, b):
            new.append(False)
            continue
        remember(offsets, recent, b)
        new.append(True)
        if stamps and b.ts < stamps[-1]:
            at = bisect_right(stamps, b.ts)
            items.insert(at, b.item_id)
            stamps.insert(at, b.ts)
        else:
            items.append(b.item_id)
            stamps.append(b.ts)
        # Drop what fell out of the horizon, then what exceeds max_len (both from the oldest).
        threshold = stamps[-1] - horizon_ms
        cut = 0 if stamps[0] >= threshold else bisect_right(stamps, threshold - 1)
        cut = max(cut, len(stamps) - max_len)
        if cut:
            del items[:cut]
            del stamps[:cut]
    applied = sum(new)
    if not applied:
        return base, new
    updated = BehaviourWindow(tuple(items), tuple(stamps), offsets, base.seq + applied, recent)
    return updated, new


def apply_events(
    window: BehaviourWindow | None,
    behaviours: Iterable[Behaviour],
    *,
    max_len: int,
    horizon_ms: int,
) -> tuple[BehaviourWindow, int]:
    """Apply ``behaviours`` in arrival order; return the new window and how many were new.

    A replay (see :func:`is_replay`) is skipped. When nothing is new, the very same window
    object is returned.
    """
    updated, new = apply_batch(window, behaviours, max_len=max_len, horizon_ms=horizon_ms)
    return updated, sum(new)


def apply_event(
    window: BehaviourWindow | None,
    behaviour: Behaviour,
    *,
    max_len: int,
    horizon_ms: int,
) -> tuple[BehaviourWindow, bool]:
    """Apply one behaviour; ``changed`` is False only for a replay (the window is returned)."""
    new, applied = apply_events(window, (behaviour,), max_len=max_len, horizon_ms=horizon_ms)
    return new, applied > 0


def batch_window(
    behaviours: Sequence[Behaviour], *, max_len: int, horizon_ms: int
) -> BehaviourWindow:
    """The window defined directly from every event, in one pass (the reference for recompute).

    ``behaviours`` are in arrival order and may contain replays (see :func:`is_replay`), which
    are ignored as the streaming update ignores them.
    """
    offsets: dict[str, int] = {}
    recent: dict[str, tuple[int, ...]] = {}
    kept: list[tuple[int, int, str]] = []
    for arrival, b in enumerate(behaviours):
        if is_replay(offsets, recent, b):
            continue
        remember(offsets, recent, b)
        kept.append((b.ts, arrival, b.item_id))
    if not kept:
        return BehaviourWindow()
    applied = len(kept)
    kept.sort()
    newest = kept[-1][0]
    kept = [k for k in kept if k[0] >= newest - horizon_ms][-max_len:]
    items = tuple(k[2] for k in kept)
    return BehaviourWindow(items, tuple(k[0] for k in kept), offsets, applied, recent)


def encode_window(window: BehaviourWindow) -> bytes:
    """Compact JSON for the window table (one changelog record per dirty user per batch).

    ``r`` (the offsets of unordered sources) is written only when there are any, so windows of
    keyed clicks cost nothing extra.
    """
    obj: dict[str, object] = {
        "v": FORMAT_VERSION,
        "i": window.items,
        "t": window.ts,
        "o": window.offsets,
        "s": window.seq,
    }
    if window.recent:
        obj["r"] = window.recent
    # orjson writes what json.dumps(obj, separators=(",", ":"), ensure_ascii=False) does
    return orjson.dumps(obj)


def decode_window(raw: bytes) -> BehaviourWindow:
    """Inverse of :func:`encode_window`; raise StreamError on anything else."""
    try:
        obj = orjson.loads(raw)
        if obj["v"] != FORMAT_VERSION:
            raise StreamError(f"window format {obj['v']!r}, expected {FORMAT_VERSION}")
        items = tuple(obj["i"])
        stamps = tuple(obj["t"])
        offsets = {str(k): int(v) for k, v in obj["o"].items()}
        seq = int(obj["s"])
        recent = {str(k): tuple(sorted(int(o) for o in v)) for k, v in obj.get("r", {}).items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StreamError(f"undecodable window record ({exc!r}): {raw[:80]!r}") from None
    if len(items) != len(stamps):
        raise StreamError(f"window record has {len(items)} items but {len(stamps)} timestamps")
    return BehaviourWindow(items, stamps, offsets, seq, recent)
