"""Item index: automatic choice, exact search against numpy, cache reuse and refusal, the
exact re-rank, ANN recall against brute force."""

from __future__ import annotations

import dataclasses
import shutil
import threading

import faiss
import numpy as np
import pytest

import recall.index as index_module
from benchmarks.catalogue import gaussian_mixture_catalogue, interest_vectors
from mindstream.settings import Settings
from model_export.bundle import verify_bundle
from recall.exceptions import IndexMismatchError, ItemIndexError
from recall.index import (
    IndexSpec,
    ItemIndex,
    build_index,
    cache_paths,
    choose_spec,
    load_index,
    open_index,
    rerank_exact,
)


def test_auto_choice_is_exact_up_to_the_limit_and_ivfpq_above():
    settings = Settings(recall_exact_max_items=1000)
    assert choose_spec(1000, settings).kind == "flat"
    above = choose_spec(1001, settings)
    assert above.kind == "ivfpq"
    # 4·√1001 = 127 lists would hold 8 items each: capped at 39 points per list.
    assert above.build == {"nlist": 1001 // 39, "pq_m": 0, "residual": 1}
    assert above.search == {
        "nprobe": min(settings.recall_ivfpq_nprobe, 1001 // 39),
        "rerank": settings.recall_rerank_factor,
    }
    assert choose_spec(10, settings, "hnsw").kind == "hnsw"
    assert choose_spec(10**7, dataclasses.replace(settings, recall_index="flat")).kind == "flat"
    assert choose_spec(10**6, settings).build == {"nlist": 1000, "pq_m": 0, "residual": 1}
    assert choose_spec(10**6, settings).search == {"nprobe": 20, "rerank": 2}
    assert choose_spec(10**6, settings, "ivf").build == {"nlist": 4000}
    assert choose_spec(10**6, settings, "ivf").search == {"nprobe": 64}
    fixed = dataclasses.replace(settings, recall_ivf_nlist=1000)
    assert choose_spec(10**6, fixed, "ivf").build == {"nlist": 1000}


def test_unknown_kind_is_refused():
    with pytest.raises(ItemIndexError, match="expected auto or one of"):
        choose_spec(10, Settings(), "lsh")


def test_search_params_do_not_name_the_cache_file_but_build_params_do():
    base = Settings()
    a = choose_spec(10**6, base, "hnsw")
    b = choose_spec(10**6, dataclasses.replace(base, recall_hnsw_ef_search=512), "hnsw")
    c = choose_spec(10**6, dataclasses.replace(base, recall_hnsw_m=16), "hnsw")
    assert a.params_hash == b.params_hash != c.params_hash


def test_flat_index_equals_numpy_brute_force(make_bundle):
    rng = np.random.default_rng(3)
    bundle = make_bundle(rng.standard_normal((500, 16)).astype(np.float32))
    item_index = open_index(bundle, Settings(), progress=False)
    assert item_index.kind == "flat" and item_index.exact
    queries = rng.standard_normal((7, 16)).astype(np.float32)
    scores, rows = item_index.search(queries, 20)
    expected = queries @ bundle.item_embeddings.T
    top = np.argsort(-expected, axis=1)[:, :20]
    np.testing.assert_array_equal(rows, top)
    np.testing.assert_allclose(scores, np.take_along_axis(expected, top, 1), rtol=1e-5, atol=1e-5)
    # More than the catalogue: padded with -1.
    _, all_rows = item_index.search(queries[:1], 600)
    assert (all_rows[0, :500] >= 0).all() and (all_rows[0, 500:] == -1).all()


def test_rows_of_maps_producer_ids_and_skips_unknown(make_bundle):
    bundle = make_bundle(np.eye(5, dtype=np.float32))
    item_index = open_index(bundle, Settings(), progress=False)
    assert item_index.rows_of(["i0", "i4", "nope"]) == {0, 4}
    assert item_index.item_ids[4] == "i4"


def test_query_of_wrong_dimension_is_refused(make_bundle):
    item_index = open_index(make_bundle(np.eye(5, dtype=np.float32)), Settings(), progress=False)
    with pytest.raises(ItemIndexError, match=r"expected \[m, 5\]"):
        item_index.search(np.ones((1, 4), np.float32), 3)


@pytest.mark.parametrize("kind", ["ivf", "ivfpq", "hnsw"])
def test_cache_is_reused_and_lives_beside_the_bundle(make_bundle, monkeypatch, kind):
    rng = np.random.default_rng(5)
    bundle = make_bundle(rng.standard_normal((2000, 8)).astype(np.float32))
    settings = Settings(recall_index=kind)
    first = open_index(bundle, settings, progress=False)
    assert first.source == "built"
    index_path, sidecar_path = cache_paths(bundle.path.parent, bundle.version, first.spec)
    assert index_path.is_file() and sidecar_path.is_file()
    # Bundles are immutable: nothing was written inside it.
    assert sorted(p.name for p in bundle.path.iterdir()) == sorted(
        ["manifest.json", "user_tower.onnx", "item_embeddings.npy", "item_ids"]
    )
    verify_bundle(bundle.path)

    def no_build(*args, **kwargs):
        raise AssertionError("the cached index should have been loaded")

    monkeypatch.setattr(index_module, "build_index", no_build)
    second = open_index(bundle, settings, progress=False)
    assert second.source == "cache"
    queries = rng.standard_normal((4, 8)).astype(np.float32)
    for a, b in zip(first.search(queries, 10), second.search(queries, 10), strict=True):
        np.testing.assert_array_equal(a, b)


def test_cache_dir_setting_is_used(make_bundle, tmp_path):
    bundle = make_bundle(np.random.default_rng(0).standard_normal((300, 4)).astype(np.float32))
    settings = Settings(recall_index="ivf", recall_index_dir=str(tmp_path / "cache"))
    built = open_index(bundle, settings, progress=False)
    assert cache_paths(tmp_path / "cache", bundle.version, built.spec)[0].is_file()


def test_index_of_another_bundle_version_is_refused(tmp_path, make_bundle):
    rng = np.random.default_rng(7)
    old = make_bundle(rng.standard_normal((1000, 8)).astype(np.float32))
    new = make_bundle(rng.standard_normal((1000, 8)).astype(np.float32))
    assert old.version != new.version
    settings = Settings(recall_index="ivf")
    spec = choose_spec(old.n_items, settings)
    cache = tmp_path / "cache"
    open_index(old, settings, cache_dir=cache, progress=False)
    # Put the old version's files where the new version's would be.
    for src, dst in zip(
        cache_paths(cache, old.version, spec), cache_paths(cache, new.version, spec), strict=True
    ):
        shutil.copy(src, dst)
    with pytest.raises(IndexMismatchError, match=f"does not belong to bundle {new.version}"):
        load_index(new, spec, cache)
    # open_index does not serve it either: it rebuilds for the new version over the bad file.
    rebuilt = open_index(new, settings, cache_dir=cache, progress=False)
    assert rebuilt.source == "built" and rebuilt.version == new.version
    assert load_index(new, spec, cache).version == new.version
    # An in-memory index of one version cannot be wrapped as another version's.
    other = make_bundle(rng.standard_normal((999, 8)).astype(np.float32))
    with pytest.raises(IndexMismatchError, match="999 items"):
        ItemIndex(rebuilt.index, rebuilt.spec, other)


def test_damaged_cache_file_is_refused(make_bundle, tmp_path):
    bundle = make_bundle(np.random.default_rng(9).standard_normal((1000, 8)).astype(np.float32))
    settings = Settings(recall_index="ivf")
    spec = choose_spec(bundle.n_items, settings)
    open_index(bundle, settings, cache_dir=tmp_path, progress=False)
    index_path, _ = cache_paths(tmp_path, bundle.version, spec)
    data = bytearray(index_path.read_bytes())
    data[-10] ^= 0xFF
    index_path.write_bytes(bytes(data))
    with pytest.raises(IndexMismatchError, match="do not match its sidecar"):
        load_index(bundle, spec, tmp_path)


def test_unwritable_cache_costs_only_a_rebuild(make_bundle, tmp_path):
    bundle = make_bundle(np.random.default_rng(2).standard_normal((400, 4)).astype(np.float32))
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    item_index = open_index(
        bundle, Settings(recall_index="ivf"), cache_dir=blocker / "cache", progress=False
    )
    assert item_index.source == "built"


@pytest.mark.parametrize("kind", ["ivf", "ivfpq", "hnsw"])
def test_ann_recall_at_50_against_exact_at_default_params(make_bundle, kind):
    catalogue = gaussian_mixture_catalogue(20_000, 32, n_clusters=200, seed=11)
    bundle = make_bundle(catalogue.embeddings)
    settings = Settings(recall_index=kind)
    approx = build_index(bundle, choose_spec(bundle.n_items, settings), progress=False)
    exact = build_index(bundle, choose_spec(bundle.n_items, settings, "flat"), progress=False)
    queries = interest_vectors(catalogue, 100, 4, seed=12).reshape(-1, 32)
    _, got = approx.search(queries, 50)
    _, want = exact.search(queries, 50)
    recall = np.mean([len(set(g) & set(w)) / 50 for g, w in zip(got, want, strict=True)])
    assert recall >= 0.95, f"{kind} recall@50 {recall:.3f}"


def test_ivfpq_scores_are_exact_inner_products_best_first(make_bundle):
    catalogue = gaussian_mixture_catalogue(5_000, 16, n_clusters=50, seed=4)
    bundle = make_bundle(catalogue.embeddings)
    item_index = build_index(
        bundle, choose_spec(bundle.n_items, Settings(), "ivfpq"), progress=False
    )
    queries = interest_vectors(catalogue, 10, 2, seed=5).reshape(-1, 16)
    scores, rows = item_index.search(queries, 30)
    assert scores.shape == rows.shape == (20, 30) and scores.dtype == np.float32
    assert (rows >= 0).all()
    want = np.einsum("mkd,md->mk", catalogue.embeddings[rows], queries)
    np.testing.assert_allclose(scores, want, rtol=1e-5, atol=1e-6)
    assert (np.diff(scores, axis=1) <= 0).all()


def test_ivfpq_codes_are_residuals_and_stay_so_through_the_cache(make_bundle, tmp_path):
    catalogue = gaussian_mixture_catalogue(5_000, 16, n_clusters=50, seed=4)
    bundle = make_bundle(catalogue.embeddings)
    settings = Settings(recall_index_dir=str(tmp_path / "cache"))
    built = open_index(bundle, settings, kind="ivfpq", progress=False)
    cached = open_index(bundle, settings, kind="ivfpq", progress=False)
    assert (built.source, cached.source) == ("built", "cache")
    for item_index in (built, cached):
        assert faiss.extract_index_ivf(item_index.index).by_residual
    queries = interest_vectors(catalogue, 10, 2, seed=5).reshape(-1, 16)
    np.testing.assert_array_equal(built.search(queries, 30)[1], cached.search(queries, 30)[1])
    # An index cached with codes of the items themselves has another name: it is not reused.
    plain = IndexSpec("ivfpq", build={**built.spec.build, "residual": 0})
    assert plain.params_hash != built.spec.params_hash


def test_ivfpq_fast_scan_choice_changes_speed_only(make_bundle):
    """Small calls search one query at a time, large ones through the twin that groups queries
    by list; every shortlist's scores equal those of Faiss's own choice (rows may differ only
    among equal scores)."""
    catalogue = gaussian_mixture_catalogue(5_000, 16, n_clusters=50, seed=6)
    item_index = open_index(make_bundle(catalogue.embeddings), Settings(), kind="ivfpq")
    few = faiss.downcast_index(item_index.index)
    many = item_index._many_searcher
    assert (few.implem, many.implem) == (index_module.FAST_SCAN_FEW, index_module.FAST_SCAN_MANY)
    assert not many.own_invlists and many.invlists.this == few.invlists.this
    queries = interest_vectors(catalogue, 20, 4, seed=7).reshape(-1, 16)
    assert len(queries) > index_module.FEW_QUERIES
    reference = faiss.clone_index(item_index.index)
    reference.implem = 0
    for k in (1, 20, 21, 140):
        faiss_default, default_rows = reference.search(queries, k)
        for searcher in (few, many):
            ours, our_rows = searcher.search(queries, k)
            np.testing.assert_array_equal(ours, faiss_default)
            # Equal scores at each position, so a row that differs belongs to a tie; a tie
            # that does not reach the last place holds the same rows on both sides.
            for q, j in zip(*np.nonzero(our_rows != default_rows), strict=True):
                tie = ours[q] == ours[q, j]
                if ours[q, j] != ours[q, -1]:
                    assert sorted(our_rows[q][tie]) == sorted(default_rows[q][tie])


def test_ivfpq_small_and_large_calls_from_threads_at_once_answer_as_alone(make_bundle):
    """The service searches small calls on its event loop while large ones run in worker
    threads, both over the one set of lists: at once they answer as they do one by one."""
    catalogue = gaussian_mixture_catalogue(5_000, 16, n_clusters=50, seed=8)
    item_index = open_index(make_bundle(catalogue.embeddings), Settings(), kind="ivfpq")
    calls = [
        interest_vectors(catalogue, users, 4, seed=seed).reshape(-1, 16)
        for seed, users in enumerate((1, 2, 30, 1, 50, 3, 40, 1))
    ]
    assert {len(c) <= index_module.FEW_QUERIES for c in calls} == {True, False}
    alone = [item_index.search(c, 25) for c in calls]
    differing: list[int] = []
    done: list[int] = []

    def run() -> None:
        for _ in range(5):
            for position, queries in enumerate(calls):
                scores, rows = item_index.search(queries, 25)
                same = np.array_equal(scores, alone[position][0])
                if not (same and np.array_equal(rows, alone[position][1])):
                    differing.append(position)
                done.append(position)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(done) == 4 * 5 * len(calls) and differing == []


def test_rerank_exact_against_brute_force_over_the_shortlist():
    rng = np.random.default_rng(21)
    vectors = rng.standard_normal((200, 8)).astype(np.float32)
    queries = rng.standard_normal((3, 8)).astype(np.float32)
    rows = np.stack([rng.choice(200, 12, replace=False) for _ in range(3)]).astype(np.int64)
    rows[2, 5:] = -1  # the third query's shortlist holds only 5 items
    scores, best = rerank_exact(queries, rows, vectors, 7)
    for q in range(3):
        shortlist = rows[q][rows[q] >= 0]
        exact = vectors[shortlist] @ queries[q]
        order = np.argsort(-exact)[:7]
        kept = len(order)
        np.testing.assert_array_equal(best[q, :kept], shortlist[order])
        np.testing.assert_allclose(scores[q, :kept], exact[order], rtol=1e-6)
        assert (best[q, kept:] == -1).all() and np.isneginf(scores[q, kept:]).all()
    # Asking for more than the shortlist holds returns the whole shortlist, ranked.
    scores, best = rerank_exact(queries, rows, vectors, 40)
    assert best.shape == (3, 12) and (best[2, 5:] == -1).all()


def test_pq_size_must_divide_the_dimension(make_bundle):
    bundle = make_bundle(np.random.default_rng(1).standard_normal((1000, 12)).astype(np.float32))
    spec = choose_spec(bundle.n_items, Settings(recall_pq_m=5), "ivfpq")
    with pytest.raises(ItemIndexError, match="MINDSTREAM_RECALL_PQ_M=5"):
        build_index(bundle, spec, progress=False)


def test_processes_opening_one_index_at_once_build_it_once(make_bundle, monkeypatch):
    bundle = make_bundle(np.random.default_rng(8).standard_normal((2000, 8)).astype(np.float32))
    settings = Settings(recall_index="ivf")
    builds: list[str] = []
    real_build = index_module.build_index

    def counting_build(*args, **kwargs):
        builds.append(threading.current_thread().name)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(index_module, "build_index", counting_build)
    opened: dict[str, ItemIndex] = {}
    threads = [
        threading.Thread(
            target=lambda name=name: opened.__setitem__(
                name, open_index(bundle, settings, progress=False)
            ),
            name=name,
        )
        for name in ("a", "b", "c")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(builds) == 1, builds
    assert sorted(i.source for i in opened.values()) == ["built", "cache", "cache"]
