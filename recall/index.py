"""The item index: a Faiss inner-product index over one bundle's item embeddings.

Small catalogues get exact search (``IndexFlatIP``); larger ones an approximate index whose
parameters come from the settings: ``ivfpq`` (IVF lists of 4-bit fast-scan product-quantised
codes, whose shortlist is re-ranked exactly against the float embeddings), ``ivf`` (IVF lists
of float vectors) or ``hnsw``. A built index is cached as a Faiss file plus a JSON sidecar beside
the bundle (bundles themselves are immutable) and reused only when the sidecar names the same
bundle version, embeddings hash and build parameters; an index always carries the bundle
version it was built from, so user vectors are never searched against another version's items.
Faiss files are read with Faiss's own reader, never pickle. The float embeddings ``ivfpq``
re-ranks against are the bundle's own file, memory-mapped read-only, so every process serving
the same bundle shares one copy in the page cache. ``ivfpq`` scans a request's few vectors one
query at a time, and a batch's many grouped by list through a twin that shares the lists.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from mindstream.progress import progress_bar
from mindstream.settings import Settings
from model_export.bundle import EMBEDDINGS, Bundle, fsync_file, sha256_file
from recall.exceptions import IndexMismatchError, ItemIndexError
from recall.merge import category_codes

logger = logging.getLogger(__name__)

INDEX_FORMAT = "mindstream-item-index/1"
KINDS = ("flat", "hnsw", "ivf", "ivfpq")
# Kinds built over IVF lists (a coarse quantizer trained by k-means, ``nlist`` and ``nprobe``).
IVF_KINDS = ("ivf", "ivfpq")
# Fast-scan codes are 4 bits per sub-quantizer (16 centroids, looked up from SIMD registers).
PQ_BITS = 4
# Faiss's fast-scan searches (``implem``) for a shortlist above 20: 11 takes one query at a
# time into a reservoir of its best codes; 13 (Faiss's own pick) first groups the queries that
# probe the same list. Both give the same scores (rows differ only in the order of equal
# scores). On a request's 4 vectors 11 costs ~100 µs less of ~600; on batches of 64 and 100
# users it costs 20 % and 40 % more; they cost the same at 8 users (BENCHMARKS.md). So calls
# of up to FEW_QUERIES vectors take 11, larger ones 13.
FAST_SCAN_FEW = 11
FAST_SCAN_MANY = 13
FEW_QUERIES = 32
ADD_CHUNK = 65_536
# Faiss warns below 39 training points per list; k-means needs no more than ~256 per list.
IVF_MIN_POINTS_PER_LIST = 39
IVF_TRAIN_POINTS_PER_LIST = 256
# nlist = 4·√n: at 1M items 4,000 lists; measured recall@50 0.975 at nprobe 64 (BENCHMARKS.md).
IVF_LISTS_PER_SQRT_ITEM = 4
# nlist = √n for ivfpq: at 1M items 1,000 lists; with nprobe 20 and a 2x re-rank shortlist of
# residual codes recall@50 0.974 (ivf: 0.976) in 0.6 ms per 4-interest user (ivf: 2.4 ms);
# 4,000 lists cost 0.2 ms in the coarse search alone (BENCHMARKS.md).
IVFPQ_LISTS_PER_SQRT_ITEM = 1
# What ``auto`` picks above the exact-search limit (measured at 1M items, BENCHMARKS.md).
AUTO_APPROXIMATE = "ivfpq"


@dataclass(frozen=True)
class IndexSpec:
    """What to build (kind and build parameters) and how to query it (search parameters).

    Only ``kind`` and ``build`` name a cached file; search parameters are applied on load, so
    tuning ``nprobe`` or ``efSearch`` never forces a rebuild.
    """

    kind: str
    build: Mapping[str, int] = field(default_factory=dict)
    search: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ItemIndexError(f"index kind {self.kind!r}: expected one of {list(KINDS)}")

    @property
    def params_hash(self) -> str:
        payload = json.dumps({"kind": self.kind, "build": dict(self.build)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    @property
    def exact(self) -> bool:
        return self.kind == "flat"


def choose_spec(n_items: int, settings: Settings, kind: str | None = None) -> IndexSpec:
    """The index for a catalogue of ``n_items``: ``kind`` if given, else the settings' choice
    (``auto``: exact search up to ``recall_exact_max_items``, ``ivfpq`` above, the fastest kind
    that kept recall@50 above 0.95 at 1M items; HNSW's inner-product graph plateaued below it,
    see BENCHMARKS.md)."""
    wanted = kind or settings.recall_index
    if wanted == "auto":
        wanted = "flat" if n_items <= settings.recall_exact_max_items else AUTO_APPROXIMATE
    if wanted == "flat":
        return IndexSpec("flat")
    if wanted == "hnsw":
        return IndexSpec(
            "hnsw",
            build={
                "m": settings.recall_hnsw_m,
                "ef_construction": settings.recall_hnsw_ef_construction,
            },
            search={"ef_search": settings.recall_hnsw_ef_search},
        )
    if wanted == "ivf":
        nlist = ivf_nlist(n_items, settings.recall_ivf_nlist)
        return IndexSpec(
            "ivf",
            build={"nlist": nlist},
            search={"nprobe": min(settings.recall_ivf_nprobe, nlist)},
        )
    if wanted == "ivfpq":
        nlist = ivf_nlist(n_items, settings.recall_ivfpq_nlist, IVFPQ_LISTS_PER_SQRT_ITEM)
        return IndexSpec(
            "ivfpq",
            # pq_m 0 = one sub-quantizer per dimension, resolved at build time. Codes are of
            # each item's residual from its list centroid: at 1M items a 2x shortlist of them
            # keeps the recall@50 of a 3x shortlist of codes of the items themselves, at less
            # cost (BENCHMARKS.md). An index cached with the latter has another name.
            build={"nlist": nlist, "pq_m": settings.recall_pq_m, "residual": 1},
            search={
                "nprobe": min(settings.recall_ivfpq_nprobe, nlist),
                "rerank": settings.recall_rerank_factor,
            },
        )
    raise ItemIndexError(f"index kind {wanted!r}: expected auto or one of {list(KINDS)}")


def pq_subquantizers(dim: int, configured: int) -> int:
    """Sub-quantizers of an ``ivfpq`` code: ``configured``, or one per dimension when 0 (4 bits
    per dimension, d/2 bytes per item; at d = 64 one per 2 dimensions lost a fifth of recall@50
    before re-ranking, see BENCHMARKS.md)."""
    m = configured if configured > 0 else dim
    if dim % m:
        raise ItemIndexError(
            f"MINDSTREAM_RECALL_PQ_M={m}: the embedding dimension {dim} must be a multiple of it"
        )
    return m


def ivf_nlist(n_items: int, configured: int, per_sqrt_item: float = IVF_LISTS_PER_SQRT_ITEM) -> int:
    """IVF list count: ``configured``, or ``per_sqrt_item``·√n when 0 (4·√n, the usual Faiss
    starting point, for float lists; √n for fast-scan lists, whose scan is so cheap that the
    coarse search over the list centroids dominates); never more than n/39, since emptier lists
    leave k-means untrainable."""
    wanted = configured if configured > 0 else round(per_sqrt_item * math.sqrt(n_items))
    return max(1, min(wanted, n_items // IVF_MIN_POINTS_PER_LIST))


class ItemIndex:
    """A searchable index of one bundle version's items.

    Faiss labels are bundle rows: row ``r`` is model index ``r + 1`` and producer item id
    ``item_ids[r]``. Searching is thread-safe (Faiss searches a const index and releases the GIL).
    """

    def __init__(
        self,
        index: faiss.Index,
        spec: IndexSpec,
        bundle: Bundle,
        *,
        source: str = "built",
        search_threads: int = 0,
    ) -> None:
        if index.ntotal != bundle.n_items or index.d != bundle.dim:
            raise IndexMismatchError(
                f"index holds {index.ntotal} vectors of dim {index.d}; bundle {bundle.version} "
                f"has {bundle.n_items} items of dim {bundle.dim}"
            )
        self.index = index
        # Read once: each read of a SWIG attribute costs microseconds, and a request asks for
        # these several times (a loaded index is never added to).
        self._n_items = int(index.ntotal)
        self._dim = int(index.d)
        self.spec = spec
        self.version = bundle.version
        self.bundle_path = bundle.path
        self.k = bundle.k
        self.item_ids = bundle.item_ids
        self._model_index = bundle.item_index
        # Category code of each row for the diversity-aware merge (None: the bundle has none).
        self.categories: np.ndarray | None = (
            None if bundle.item_categories is None else category_codes(bundle.item_categories)
        )
        self.source = source
        # OpenMP thread counts are per calling thread, so each search sets its own (0 = leave
        # Faiss's default); see MINDSTREAM_RECALL_SEARCH_THREADS.
        self.search_threads = search_threads
        # ivfpq re-ranks its shortlist against the float embeddings: the bundle's file,
        # memory-mapped (bundles are immutable and were verified when loaded).
        self._vectors: np.ndarray | None = None
        if spec.kind == "ivfpq":
            mapped = np.load(bundle.path / EMBEDDINGS, mmap_mode="r", allow_pickle=False)
            # A plain ndarray over the mapping: np.memmap's own indexing adds ~0.1 ms a call.
            self._vectors = np.asarray(mapped)
            if self._vectors.shape != (bundle.n_items, bundle.dim):
                raise IndexMismatchError(
                    f"{bundle.path / EMBEDDINGS} holds {self._vectors.shape}, expected "
                    f"({bundle.n_items}, {bundle.dim})"
                )
        _apply_search_params(index, spec)
        # Small calls search the index itself, one query at a time; large calls a twin that
        # shares its lists (not a copy) and groups queries by list; self.index keeps the
        # lists alive.
        self._many_searcher: faiss.Index = index
        if spec.kind == "ivfpq":
            few: Any = faiss.downcast_index(index)
            few.implem = FAST_SCAN_FEW
            twin: Any = faiss.clone_index(index)
            # The twin frees its own copy of the lists and searches the original ones.
            twin.replace_invlists(faiss.extract_index_ivf(index).invlists, False)
            twin.implem = FAST_SCAN_MANY
            self._many_searcher = twin
            # The copy just freed (~37 MB per 1M items) would otherwise stay in the heap.
            _release_freed_memory()

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def exact(self) -> bool:
        return self.spec.exact

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def n_items(self) -> int:
        return self._n_items

    def search(self, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``n`` items per query: (scores float32 [m, n], rows int64 [m, n]); rows are -1
        where fewer than ``n`` items were found."""
        x = np.ascontiguousarray(queries, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ItemIndexError(f"queries have shape {x.shape}; expected [m, {self.dim}]")
        if n < 1:
            raise ItemIndexError(f"n={n}: expected at least 1")
        if self.search_threads > 0:
            faiss.omp_set_num_threads(self.search_threads)
        if self._vectors is None:
            scores, rows = self.index.search(x, n)
            return scores, rows
        shortlist = min(self.n_items, n * int(self.spec.search["rerank"]))
        searcher = self.index if len(x) <= FEW_QUERIES else self._many_searcher
        _, rows = searcher.search(x, shortlist)
        return rerank_exact(x, rows, self._vectors, n)

    def misfit(self, vectors: np.ndarray) -> str | None:
        """Why one user's interest vectors cannot be searched here (they are not [k, dim] of
        this index's dim), or None when they can."""
        shape = np.shape(vectors)
        if len(shape) == 2 and shape[1] == self.dim:
            return None
        return (
            f"vectors of shape {shape}, but the index of model {self.version} holds vectors "
            f"of dim {self.dim}"
        )

    def rows_of(self, item_ids: Iterable[str]) -> set[int]:
        """Bundle rows of the given producer item ids; ids unknown to this bundle are skipped."""
        found = map(self._model_index.get, item_ids)
        return {row - 1 for row in found if row is not None}

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.version,
            "kind": self.kind,
            "exact": self.exact,
            "n_items": self.n_items,
            "dim": self.dim,
            "build": dict(self.spec.build),
            "search": dict(self.spec.search),
            "source": self.source,
            "categories": self.categories is not None,
        }


def _release_freed_memory() -> None:
    """Hand memory freed to the C heap back to the system (glibc's malloc_trim; elsewhere a
    no-op)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


def rerank_exact(
    queries: np.ndarray, rows: np.ndarray, vectors: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """The best ``n`` of each query's shortlist by exact inner product with ``vectors``.

    ``rows`` int64 [m, w] (-1 = empty slot) index ``vectors`` [items, d]; returns (scores
    float32 [m, n], rows int64 [m, n]) best first, with -1 rows and -inf scores where the
    shortlist held fewer than ``n`` items, as a Faiss search does.
    """
    m, width = rows.shape
    found = rows >= 0
    # A full shortlist (the usual case) needs no masking of empty slots.
    complete = bool(found.all())
    gathered = vectors.take(rows if complete else np.where(found, rows, 0), axis=0)  # [m, w, d]
    scores = np.matmul(gathered, queries[:, :, None])[:, :, 0]
    if not complete:
        scores[~found] = -np.inf
    n = min(n, width)
    # One stable sort of the whole shortlist (a few hundred scores): cheaper here than a
    # partition followed by a sort of its head, and equal scores keep shortlist order.
    best = np.argsort(-scores, axis=1, kind="stable")[:, :n]
    along = np.arange(m)[:, None]
    out_scores = scores[along, best].astype(np.float32, copy=False)
    out_rows = rows[along, best]
    if complete:
        return out_scores, out_rows
    return out_scores, np.where(np.isneginf(out_scores), -1, out_rows)


def _apply_search_params(index: faiss.Index, spec: IndexSpec) -> None:
    if spec.kind == "hnsw":
        hnsw: Any = faiss.downcast_index(index)
        hnsw.hnsw.efSearch = int(spec.search["ef_search"])
    elif spec.kind in IVF_KINDS:
        faiss.extract_index_ivf(index).nprobe = int(spec.search["nprobe"])


def build_index(bundle: Bundle, spec: IndexSpec, *, progress: bool = True) -> ItemIndex:
    """Build ``spec`` over the bundle's embeddings (adding in chunks, with a progress bar)."""
    x = np.ascontiguousarray(bundle.item_embeddings, dtype=np.float32)
    n, dim = x.shape
    started = time.perf_counter()
    index: faiss.Index
    if spec.kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif spec.kind == "hnsw":
        hnsw = faiss.IndexHNSWFlat(dim, int(spec.build["m"]), faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = int(spec.build["ef_construction"])
        index = hnsw
    else:
        nlist = int(spec.build["nlist"])
        quantizer = faiss.IndexFlatIP(dim)
        # Faiss's Python wrapper keeps the quantizer alive as long as the IVF index.
        ivf: faiss.IndexIVF
        if spec.kind == "ivfpq":
            ivf = faiss.IndexIVFPQFastScan(
                quantizer,
                dim,
                nlist,
                pq_subquantizers(dim, int(spec.build["pq_m"])),
                PQ_BITS,
                faiss.METRIC_INNER_PRODUCT,
            )
            ivf.by_residual = bool(spec.build.get("residual", 0))
        else:
            ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        n_train = min(n, nlist * IVF_TRAIN_POINTS_PER_LIST)
        sample = x if n_train == n else x[_sample_rows(n, n_train, bundle.version)]
        logger.info(
            "training %s nlist=%d points=%d version=%s", spec.kind, nlist, n_train, bundle.version
        )
        ivf.train(sample)
        index = ivf
    with progress_bar(n, f"index {spec.kind}", "item", enabled=progress, leave=False) as bar:
        for start in range(0, n, ADD_CHUNK):
            chunk = x[start : start + ADD_CHUNK]
            index.add(chunk)
            bar.update(len(chunk))
    logger.info(
        "index built kind=%s items=%d dim=%d version=%s seconds=%.1f",
        spec.kind,
        n,
        dim,
        bundle.version,
        time.perf_counter() - started,
    )
    return ItemIndex(index, spec, bundle, source="built")


def _sample_rows(n: int, size: int, version: str) -> np.ndarray:
    # Seeded by the version so the same bundle always trains the same quantizer.
    seed = int(hashlib.sha256(version.encode()).hexdigest()[:8], 16)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


# --- cache -----------------------------------------------------------------------------------


def cache_dir_for(bundle: Bundle, settings: Settings) -> Path:
    """Where this bundle's indexes are cached: ``recall_index_dir`` or the bundle's parent."""
    return Path(settings.recall_index_dir) if settings.recall_index_dir else bundle.path.parent


def cache_paths(cache_dir: Path, version: str, spec: IndexSpec) -> tuple[Path, Path]:
    """(index file, JSON sidecar) for one bundle version and build spec."""
    stem = f".index-{version}-{spec.kind}-{spec.params_hash}"
    return cache_dir / f"{stem}.faiss", cache_dir / f"{stem}.json"


def _embeddings_sha(bundle: Bundle) -> str:
    return str(bundle.manifest["files"][EMBEDDINGS]["sha256"])


def save_index(item_index: ItemIndex, bundle: Bundle, cache_dir: Path) -> Path:
    """Write the index and its sidecar atomically (temporary file, fsync, rename); the sidecar
    is renamed last, so its presence means the index file is complete."""
    if item_index.version != bundle.version:
        raise IndexMismatchError(
            f"index of bundle {item_index.version} cannot be saved as bundle {bundle.version}'s"
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    index_path, sidecar_path = cache_paths(cache_dir, bundle.version, item_index.spec)
    fd, tmp_name = tempfile.mkstemp(prefix=".index-tmp-", suffix=".faiss", dir=cache_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        faiss.write_index(item_index.index, str(tmp))
        fsync_file(tmp)
        os.chmod(tmp, 0o644)
        sidecar = {
            "format": INDEX_FORMAT,
            "bundle_version": bundle.version,
            "embeddings_sha256": _embeddings_sha(bundle),
            "kind": item_index.spec.kind,
            "build": dict(item_index.spec.build),
            "params_hash": item_index.spec.params_hash,
            "n_items": item_index.n_items,
            "dim": item_index.dim,
            "faiss_version": faiss.__version__,
            "index_sha256": sha256_file(tmp),
            "index_bytes": tmp.stat().st_size,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        tmp.replace(index_path)
        _write_json_atomically(sidecar_path, sidecar)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    logger.info("index saved path=%s version=%s", index_path, bundle.version)
    return index_path


def load_index(bundle: Bundle, spec: IndexSpec, cache_dir: Path) -> ItemIndex:
    """Load the cached index of ``bundle`` and ``spec``; raise IndexMismatchError when the file
    belongs to another bundle version, other embeddings or other parameters, or is damaged."""
    index_path, sidecar_path = cache_paths(cache_dir, bundle.version, spec)
    if not sidecar_path.is_file() or not index_path.is_file():
        raise ItemIndexError(
            f"no cached {spec.kind} index for bundle {bundle.version} in {cache_dir}"
        )
    try:
        sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IndexMismatchError(f"{sidecar_path}: unreadable sidecar ({exc})") from exc
    expected = {
        "format": INDEX_FORMAT,
        "bundle_version": bundle.version,
        "embeddings_sha256": _embeddings_sha(bundle),
        "kind": spec.kind,
        "params_hash": spec.params_hash,
        "n_items": bundle.n_items,
        "dim": bundle.dim,
    }
    wrong = {
        key: (sidecar.get(key) if isinstance(sidecar, dict) else None, want)
        for key, want in expected.items()
        if not isinstance(sidecar, dict) or sidecar.get(key) != want
    }
    if wrong:
        detail = ", ".join(
            f"{k}: file has {got!r}, expected {want!r}" for k, (got, want) in wrong.items()
        )
        raise IndexMismatchError(
            f"{index_path} does not belong to bundle {bundle.version}: {detail}"
        )
    size = index_path.stat().st_size
    if size != sidecar.get("index_bytes") or sha256_file(index_path) != sidecar.get("index_sha256"):
        raise IndexMismatchError(
            f"{index_path}: contents do not match its sidecar (partly written or replaced)"
        )
    index = faiss.read_index(str(index_path))
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise IndexMismatchError(f"{index_path}: not an inner-product index")
    logger.info("index loaded path=%s version=%s kind=%s", index_path, bundle.version, spec.kind)
    return ItemIndex(index, spec, bundle, source="cache")


def open_index(
    bundle: Bundle,
    settings: Settings,
    *,
    kind: str | None = None,
    cache_dir: Path | None = None,
    progress: bool = True,
    save: bool = True,
) -> ItemIndex:
    """The bundle's index: loaded from the cache when a matching one is there, else built (and
    cached when ``save``). A damaged or foreign cache file is rebuilt over, with a warning; a
    cache folder that cannot be written only costs a rebuild next start. Processes opening the
    same index at once (the service's workers after a bundle swap) take turns on a lock file, so
    one builds it and the others load what it cached."""
    spec = choose_spec(bundle.n_items, settings, kind)
    directory = cache_dir if cache_dir is not None else cache_dir_for(bundle, settings)
    item_index: ItemIndex | None = None
    with _cache_lock(directory, bundle.version, spec, enabled=save and spec.kind != "flat"):
        if spec.kind != "flat":
            try:
                item_index = load_index(bundle, spec, directory)
            except IndexMismatchError as exc:
                logger.warning("cached index not used, rebuilding: %s", exc)
            except ItemIndexError:
                pass
        if item_index is None:
            item_index = build_index(bundle, spec, progress=progress)
            # Exact indexes are rebuilt faster than they are hashed and read back: never cached.
            if save and spec.kind != "flat":
                try:
                    save_index(item_index, bundle, directory)
                except OSError as exc:
                    logger.warning("index not cached dir=%s error=%s", directory, exc)
    item_index.search_threads = settings.recall_search_threads
    return item_index


@contextlib.contextmanager
def _cache_lock(directory: Path, version: str, spec: IndexSpec, *, enabled: bool) -> Iterator[None]:
    """An exclusive lock on ``<index file>.lock`` while the index is loaded or built; without a
    writable cache folder there is nothing to share, so no lock."""
    if not enabled:
        yield
        return
    index_path, _ = cache_paths(directory, version, spec)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(index_path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        logger.warning("index cache not lockable dir=%s error=%s", directory, exc)
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _write_json_atomically(path: Path, payload: Mapping[str, Any]) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=".index-tmp-", suffix=".json", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=2, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp_name, 0o644)
    Path(tmp_name).replace(path)
