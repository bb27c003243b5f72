"""Index registry: versions kept, eviction, rollback, and readers unaffected by swaps."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import recall.registry as registry_module
from mindstream.errors import ConfigError
from mindstream.settings import Settings
from model_export.bundle import point_current
from recall.exceptions import ModelVersionUnavailable
from recall.registry import BundleWatcher, IndexRegistry


def embeddings(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((200, 8)).astype(np.float32)


def test_newest_is_current_and_old_versions_are_evicted_beyond_the_limit(make_bundle):
    bundles = [make_bundle(embeddings(s)) for s in range(3)]
    registry = IndexRegistry(Settings(recall_keep_versions=2))
    seen = []
    registry.on_swap(lambda index, evicted: seen.append((index.version, evicted)))
    for bundle in bundles:
        registry.load(bundle.path)
    a, b, c = (bundle.version for bundle in bundles)
    assert registry.current.version == c
    assert registry.versions == [b, c]
    assert seen == [(a, []), (b, []), (c, [a])]
    with pytest.raises(ModelVersionUnavailable) as caught:
        registry.require(a)
    assert caught.value.loaded == [b, c] and a in str(caught.value)
    assert registry.require(b).version == b


def test_rollback_to_a_loaded_version_reuses_its_index(make_bundle, monkeypatch):
    first, second = make_bundle(embeddings(0)), make_bundle(embeddings(1))
    registry = IndexRegistry(Settings(recall_keep_versions=3))
    registry.load(first.path)
    held = registry.current
    registry.load(second.path)
    opened = []
    real_open = registry_module.open_index
    monkeypatch.setattr(
        registry_module, "open_index", lambda *a, **kw: opened.append(1) or real_open(*a, **kw)
    )
    assert registry.load(first.path) is held
    assert opened == []
    assert registry.versions == [second.version, first.version]


def test_a_reader_holding_an_evicted_index_still_searches(make_bundle):
    first = make_bundle(embeddings(0))
    registry = IndexRegistry(Settings(recall_keep_versions=1))
    registry.load(first.path)
    held = registry.require(first.version)
    registry.load(make_bundle(embeddings(1)).path)
    assert registry.get(first.version) is None
    query = first.item_embeddings[:1]
    _, rows = held.search(query, 3)
    # Still the first bundle's items.
    assert rows[0].tolist() == np.argsort(-(query @ first.item_embeddings.T)[0])[:3].tolist()


def test_readers_always_see_a_consistent_snapshot(make_bundle):
    bundles = [make_bundle(embeddings(s)) for s in range(4)]
    registry = IndexRegistry(Settings(recall_keep_versions=2))
    registry.load(bundles[0].path)
    indexes = [registry.current]
    for bundle in bundles[1:]:
        registry.load(bundle.path)
        indexes.append(registry.current)
    errors = []
    stop = threading.Event()

    def read():
        while not stop.is_set():
            current = registry.current
            versions = registry.versions
            if current is None or current.version not in versions or len(versions) > 2:
                errors.append((current, versions))

    readers = [threading.Thread(target=read) for _ in range(2)]
    for t in readers:
        t.start()
    for i in range(300):
        registry.install(indexes[i % 4])
    stop.set()
    for t in readers:
        t.join()
    assert errors == []


def test_keep_versions_below_one_is_refused():
    with pytest.raises(ConfigError, match="MINDSTREAM_RECALL_KEEP_VERSIONS=0"):
        IndexRegistry(Settings(recall_keep_versions=0))


def test_a_failing_swap_listener_does_not_stop_the_swap(make_bundle):
    registry = IndexRegistry(Settings())
    registry.on_swap(lambda index, evicted: 1 / 0)
    bundle = make_bundle(embeddings(0))
    registry.load(bundle.path)
    assert registry.current.version == bundle.version


async def test_watcher_follows_the_link_and_ignores_a_missing_one(make_bundle, tmp_path):
    registry = IndexRegistry(Settings())
    missing = BundleWatcher(registry, tmp_path / "nowhere" / "current", 0)
    assert missing.target() is None and await missing.check() is None
    first = make_bundle(embeddings(0))
    link = first.path.parent / "current"
    registry.load(link)
    watcher = BundleWatcher(registry, link, 0)
    assert await watcher.check() is None  # the loaded bundle is not new
    second = make_bundle(embeddings(1), make_current=False)
    assert await watcher.check() is None  # not pointed at yet
    point_current(link.parent, second.path)
    assert (await watcher.check()).version == second.version
    assert registry.current.version == second.version
    watcher.close()
    missing.close()
