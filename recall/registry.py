"""The indexes a recall process serves, by bundle version, and the hot swap between them.

Readers take one reference to the immutable version map and search the index they found, so a
swap (replacing that map) never disturbs a request in flight: it finishes on the index it
started with. The newest bundle is the current one; older versions stay loaded, up to
``recall_keep_versions`` in all, for users whose records still carry their vectors.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import MappingProxyType

from mindstream.errors import ConfigError
from mindstream.settings import Settings
from model_export.bundle import BundleLink, load_bundle
from recall.exceptions import ModelVersionUnavailable
from recall.index import ItemIndex, open_index

logger = logging.getLogger(__name__)

SwapListener = Callable[[ItemIndex, list[str]], None]


class IndexRegistry:
    """Loaded item indexes keyed by bundle version, the newest one current.

    ``freeze_gc``: call ``gc.freeze()`` after each install (what the serving processes do).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        kind: str | None = None,
        progress: bool = False,
        freeze_gc: bool = False,
    ) -> None:
        if settings.recall_keep_versions < 1:
            raise ConfigError(
                f"MINDSTREAM_RECALL_KEEP_VERSIONS={settings.recall_keep_versions}: expected >= 1"
            )
        self._settings = settings
        self._kind = kind
        self._progress = progress
        self._freeze_gc = freeze_gc
        self._write_lock = threading.Lock()
        # Replaced, never mutated: a reader's reference stays a consistent snapshot.
        self._indexes: Mapping[str, ItemIndex] = MappingProxyType({})
        self._current: ItemIndex | None = None
        self._listeners: list[SwapListener] = []

    @property
    def current(self) -> ItemIndex | None:
        return self._current

    @property
    def versions(self) -> list[str]:
        """Loaded versions, oldest first."""
        return list(self._indexes)

    def get(self, version: str) -> ItemIndex | None:
        return self._indexes.get(version)

    def require(self, version: str) -> ItemIndex:
        """The index of ``version``, or ModelVersionUnavailable naming what is loaded."""
        item_index = self._indexes.get(version)
        if item_index is None:
            raise ModelVersionUnavailable(version, self.versions)
        return item_index

    def on_swap(self, listener: SwapListener) -> None:
        """Call ``listener(new_current, evicted_versions)`` after every install."""
        self._listeners.append(listener)

    def load(self, bundle_path: Path | str) -> ItemIndex:
        """Load (or build) the index of the bundle at ``bundle_path`` and make it current. A
        bundle without item categories is refused while MINDSTREAM_RECALL_DIVERSITY is above 0.

        Slow (verifying the bundle, maybe building an index): call it from a worker thread.
        """
        bundle = load_bundle(bundle_path)
        if self._settings.recall_diversity > 0 and bundle.item_categories is None:
            # Every candidates request would be refused: refuse the bundle instead (at start,
            # or as a swap that keeps the loaded index serving).
            raise ConfigError(
                f"MINDSTREAM_RECALL_DIVERSITY={self._settings.recall_diversity} needs item "
                f"categories, and bundle {bundle.version} carries none: set it to 0 or export "
                "the model from data with a category or other item feature"
            )
        loaded = self._indexes.get(bundle.version)
        if loaded is None:
            loaded = open_index(bundle, self._settings, kind=self._kind, progress=self._progress)
        self.install(loaded)
        return loaded

    def install(self, item_index: ItemIndex) -> list[str]:
        """Make ``item_index`` current, evicting the oldest versions beyond the limit; return
        the evicted versions."""
        with self._write_lock:
            indexes = {v: i for v, i in self._indexes.items() if v != item_index.version}
            indexes[item_index.version] = item_index
            evicted: list[str] = []
            while len(indexes) > self._settings.recall_keep_versions:
                oldest = next(iter(indexes))
                del indexes[oldest]
                evicted.append(oldest)
            self._indexes = MappingProxyType(indexes)
            self._current = item_index
        if self._freeze_gc:
            # An index brings millions of long-lived objects (item ids, the id -> row dict); a
            # full GC pass over them took ~10 ms at 1M items, straight into request latency.
            # Freezing moves everything alive now out of the collector's scans (refcounting
            # still frees an evicted index). For serving processes only: it is process-wide.
            gc.freeze()
        logger.info(
            "index installed version=%s kind=%s loaded=%s evicted=%s",
            item_index.version,
            item_index.kind,
            list(indexes),
            evicted,
        )
        for listener in self._listeners:
            try:
                listener(item_index, evicted)
            except Exception:
                logger.exception("index swap listener failed version=%s", item_index.version)
        return evicted


class BundleWatcher:
    """Polls the bundle link and loads a new bundle's index in a background thread.

    A bundle that fails to load is logged and not retried until the link points elsewhere, so a
    bad bundle never takes the service down or turns the watcher into a busy loop.
    """

    def __init__(
        self,
        registry: IndexRegistry,
        bundle_path: Path | str,
        interval_s: float,
        *,
        on_error: Callable[[Path, BaseException], None] | None = None,
    ) -> None:
        self._registry = registry
        self._link = BundleLink(bundle_path)
        self._interval_s = interval_s
        self._on_error = on_error
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recall-index")

    def target(self) -> Path | None:
        """Where the link points now (None when it points nowhere)."""
        return self._link.target()

    async def check(self) -> ItemIndex | None:
        """Load the bundle the link points at if it is new; return its index if one was
        installed."""
        current = self._registry.current
        target = self._link.new_target(None if current is None else current.bundle_path)
        if target is None:
            return None
        loop = asyncio.get_running_loop()
        logger.info("new bundle found path=%s; loading its index in the background", target)
        try:
            return await loop.run_in_executor(self._executor, self._registry.load, target)
        except Exception as exc:
            logger.error("bundle not loaded path=%s error=%s", target, exc)
            if self._on_error is not None:
                self._on_error(target, exc)
            return None

    async def run(self) -> None:
        """Check every ``interval_s`` until cancelled."""
        if self._interval_s <= 0:
            return
        while True:
            await asyncio.sleep(self._interval_s)
            await self.check()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
