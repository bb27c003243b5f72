"""The bundle format: what the model stage hands to serving, written atomically, verified on load.

A bundle is a directory named after its version::

    manifest.json        format, version, created_at, model config (dim, k, max_len, ...),
                         n_items, metrics, and sha256 + size of every other file
    user_tower.onnx      inputs  item_seq int64 [batch, seq] (model indices, right-padded, 0 = pad)
                         outputs interests float32 [batch, k, dim], interest_mask bool [batch, k]
    item_embeddings.npy  float32 [n_items, dim]; row i-1 is model index i
    item_ids             UTF-8, one producer item id per line, same order as the embeddings
    item_categories      optional: UTF-8, one category label per line in item_ids' order (an
                         empty line = no category); equal labels are one category to the
                         recall service's diversity-aware merge

A bundle without ``item_categories`` is complete; the manifest lists the file when it is there.

The version is a hash of the whole manifest except two fields: ``version`` itself, and
``created_at``, which says when this copy was written and must be free to differ between two
exports of the same model so that re-exporting it gives the same version (bundles are
content-addressed: the worker's reload, recall's index cache and the records' ``model`` field
all key on the version). Because the manifest holds every file's sha256, the version covers the
files too. A reader refuses a bundle whose files, manifest or folder name disagree with its
version.

This module is imported by the serving side and must never import torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from model_export.exceptions import BundleError

logger = logging.getLogger(__name__)

# A reader accepts only this format; a bundle of another one is refused with a message to
# re-export it (/1 bundles had a version over the files and model config alone).
FORMAT = "mindstream-bundle/2"
MANIFEST = "manifest.json"
TOWER = "user_tower.onnx"
EMBEDDINGS = "item_embeddings.npy"
ITEM_IDS = "item_ids"
ITEM_CATEGORIES = "item_categories"
CONTENT_FILES = (TOWER, EMBEDDINGS, ITEM_IDS)
OPTIONAL_FILES = (ITEM_CATEGORIES,)
# The tower graph's input and outputs, by name (shapes in the module docstring): the export
# writes them, the serving runner and the offline runner check and feed them.
TOWER_INPUT = "item_seq"
TOWER_OUTPUTS = ("interests", "interest_mask")
REQUIRED_CONFIG = ("kind", "dim", "k", "max_len", "routing_iterations")
CURRENT_LINK = "current"
# Manifest fields the version does not cover (see the module docstring).
UNVERSIONED_FIELDS = frozenset({"version", "created_at"})


@dataclass(frozen=True)
class Bundle:
    """A verified bundle, ready to serve."""

    path: Path
    manifest: dict[str, Any]
    item_ids: list[str]
    item_embeddings: np.ndarray
    # One label per item ("" = none), or None when the bundle carries no categories.
    item_categories: list[str] | None = None

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.manifest["model"])

    @property
    def dim(self) -> int:
        return int(self.manifest["model"]["dim"])

    @property
    def k(self) -> int:
        return int(self.manifest["model"]["k"])

    @property
    def max_len(self) -> int:
        return int(self.manifest["model"]["max_len"])

    @property
    def onnx_path(self) -> Path:
        return self.path / TOWER

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @cached_property
    def item_index(self) -> dict[str, int]:
        """Producer item id -> model index (1-based; 0 is padding)."""
        return {item: i + 1 for i, item in enumerate(self.item_ids)}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def content_version(manifest: Mapping[str, Any]) -> str:
    """The bundle version: a hash of every manifest field but ``UNVERSIONED_FIELDS``.

    The name starts with the model kind (mind-, youtube-dnn-, comirec-sa-...) so a listing of
    bundles says what each one serves.
    """
    covered = {key: value for key, value in manifest.items() if key not in UNVERSIONED_FIELDS}
    payload = json.dumps(covered, sort_keys=True, separators=(",", ":"))
    model = manifest.get("model")
    kind = str(model.get("kind", "mind") if isinstance(model, Mapping) else "mind")
    return f"{kind.replace('_', '-')}-" + hashlib.sha256(payload.encode()).hexdigest()[:20]


def write_bundle(
    out_root: Path,
    *,
    onnx_model: bytes,
    item_embeddings: np.ndarray,
    item_ids: Sequence[str],
    model: Mapping[str, Any],
    metrics: Mapping[str, Any] | None = None,
    make_current: bool = True,
    item_categories: Sequence[str] | None = None,
) -> Path:
    """Write a bundle under ``out_root/<version>`` atomically and return its path.

    ``item_categories`` (one label per item, "" for none) is written when given.

    Files go to a temporary folder next to the target, are fsynced, and the folder is renamed
    into place, so a reader never sees a half-written bundle. With ``make_current`` the
    ``out_root/current`` link is switched to the new bundle with an atomic rename as well.
    """
    missing = [key for key in REQUIRED_CONFIG if key not in model]
    if missing:
        raise BundleError(f"model config lacks {missing}; expected keys {list(REQUIRED_CONFIG)}")
    embeddings = np.ascontiguousarray(item_embeddings, dtype=np.float32)
    if embeddings.ndim != 2 or embeddings.shape != (len(item_ids), int(model["dim"])):
        raise BundleError(
            f"item_embeddings has shape {embeddings.shape}; expected "
            f"({len(item_ids)}, {model['dim']}) = (len(item_ids), dim)"
        )
    bad_ids = [i for i in item_ids if not i or "\n" in i or "\r" in i]
    if bad_ids:
        raise BundleError(f"item ids must be non-empty single lines; got {bad_ids[:3]!r}")
    if len(set(item_ids)) != len(item_ids):
        raise BundleError("item ids must be unique")
    if item_categories is not None:
        check_item_categories(item_categories, len(item_ids))
    written = CONTENT_FILES if item_categories is None else (*CONTENT_FILES, ITEM_CATEGORIES)

    out_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".bundle-", dir=out_root))
    try:
        (tmp / TOWER).write_bytes(onnx_model)
        with (tmp / EMBEDDINGS).open("wb") as fh:
            np.save(fh, embeddings, allow_pickle=False)
        (tmp / ITEM_IDS).write_text("".join(f"{i}\n" for i in item_ids), encoding="utf-8")
        if item_categories is not None:
            write_category_lines(tmp / ITEM_CATEGORIES, item_categories)
        files = {
            name: {"sha256": sha256_file(tmp / name), "bytes": (tmp / name).stat().st_size}
            for name in written
        }
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "model": json.loads(json.dumps(dict(model))),
            "n_items": len(item_ids),
            "metrics": json.loads(json.dumps(dict(metrics or {}))),
            "files": files,
        }
        version = content_version(manifest)
        manifest["version"] = version
        manifest["created_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        for name in (*written, MANIFEST):
            fsync_file(tmp / name)
        target = out_root / version
        if target.exists():
            # Same version: the same manifest is already there (bundles are immutable).
            logger.info("bundle already present version=%s path=%s", version, target)
            shutil.rmtree(tmp)
        else:
            # mkdtemp makes 0700; serving processes may run as another user.
            os.chmod(tmp, 0o755)  # noqa: S103
            tmp.rename(target)
            logger.info("bundle written version=%s path=%s", version, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if make_current:
        point_current(out_root, target)
    return target


def check_item_categories(item_categories: Sequence[str], n_items: int) -> None:
    """Refuse category labels that do not fit the bundle: one single-line label per item."""
    if len(item_categories) != n_items:
        raise BundleError(f"{len(item_categories)} item categories for {n_items} items")
    bad = [c for c in item_categories if not isinstance(c, str) or "\n" in c or "\r" in c]
    if bad:
        raise BundleError(f"item categories must be single-line strings; got {bad[:3]!r}")


def write_category_lines(path: Path, item_categories: Sequence[str]) -> None:
    path.write_text("".join(f"{c}\n" for c in item_categories), encoding="utf-8")


def read_category_lines(path: Path, n_items: int) -> list[str]:
    """The labels of an ``item_categories`` file, one per item (BundleError if they are not)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BundleError(f"{path}: not UTF-8 ({exc})") from exc
    # Lines by "\n" alone (an empty label is an empty line); the last newline ends a line.
    labels = text.split("\n")
    if labels[-1] == "":
        labels.pop()
    if len(labels) != n_items:
        raise BundleError(f"{path}: {len(labels)} lines, expected one per item ({n_items})")
    return labels


def point_current(out_root: Path, target: Path) -> None:
    """Atomically point ``out_root/current`` at ``target`` (a relative symlink)."""
    link = out_root / CURRENT_LINK
    tmp_link = out_root / f".{CURRENT_LINK}-{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        tmp_link.unlink()
    tmp_link.symlink_to(target.name)
    tmp_link.replace(link)


class BundleLink:
    """A bundle path as a long-running reader follows it (``MINDSTREAM_BUNDLE``, usually the
    ``current`` link that :func:`point_current` moves).

    :meth:`new_target` answers where the path points when that is neither the bundle in use nor
    the last target it answered, so each new target is tried once: a bundle that fails to load
    is not retried until the link moves, and a check while a load is in progress does not
    start a second one. A path that points nowhere has no target.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._tried: Path | None = None

    def target(self) -> Path | None:
        """Where the path points now (None when it points nowhere)."""
        try:
            return self.path.resolve(strict=True)
        except (OSError, RuntimeError):
            return None

    def new_target(self, in_use: Path | None) -> Path | None:
        """The bundle to load now, or None; ``in_use`` is the bundle the reader runs."""
        target = self.target()
        if target is None or target == in_use or target == self._tried:
            return None
        self._tried = target
        return target


def read_manifest(path: Path) -> dict[str, Any]:
    manifest_path = Path(path) / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(
            f"{path} is not a bundle: {MANIFEST} is missing (train and export one with "
            "`mindstream train` / `mindstream export`, or set MINDSTREAM_BUNDLE)"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{manifest_path}: not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise BundleError(
            f"{manifest_path}: format {got!r}, expected {FORMAT!r} (re-export the bundle with "
            "`mindstream export --checkpoint …` or train a new one with `mindstream train`)"
        )
    for key in ("version", "created_at", "model", "files", "n_items", "metrics"):
        if key not in manifest:
            raise BundleError(f"{manifest_path}: missing key {key!r}")
    try:
        datetime.fromisoformat(str(manifest["created_at"]))
    except ValueError as exc:
        raise BundleError(
            f"{manifest_path}: created_at {manifest['created_at']!r} is not an ISO-8601 time"
        ) from exc
    return manifest


def verify_bundle(path: Path) -> dict[str, Any]:
    """Check every file against the manifest; return the manifest or raise BundleError."""
    path = Path(path)
    manifest = read_manifest(path)
    files = manifest["files"]
    if not isinstance(files, Mapping):
        raise BundleError(f"{path}: the manifest's files is not an object")
    for name in CONTENT_FILES:
        if name not in files:
            raise BundleError(f"{path}: manifest lists no {name}")
    unknown = sorted(set(files) - set(CONTENT_FILES) - set(OPTIONAL_FILES))
    if unknown:
        raise BundleError(
            f"{path}: manifest lists unknown files {unknown} (written by a newer mindstream? "
            "re-export the bundle with this one)"
        )
    for name in files:
        _verify_file(path, name, files[name])
    expected = content_version(manifest)
    if manifest["version"] != expected:
        raise BundleError(
            f"{path}: version {manifest['version']} does not match its content ({expected}): "
            "the manifest was edited; re-export the bundle"
        )
    if path.name != expected:
        raise BundleError(
            f"{path}: the folder name {path.name!r} is not the bundle's version {expected!r} "
            "(a bundle is served only from a folder named after its version; rename it back "
            "or re-export)"
        )
    return manifest


def _verify_file(path: Path, name: str, listed: Any) -> None:
    if (
        not isinstance(listed, Mapping)
        or not isinstance(listed.get("bytes"), int)
        or not isinstance(listed.get("sha256"), str)
    ):
        raise BundleError(f"{path}: the manifest's entry for {name} lacks its bytes and sha256")
    file_path = path / name
    if not file_path.is_file():
        raise BundleError(f"{path}: {name} is missing")
    size = file_path.stat().st_size
    if size != listed["bytes"]:
        raise BundleError(
            f"{path}: {name} has {size} bytes, manifest says {listed['bytes']} "
            "(truncated or replaced; re-export the bundle)"
        )
    digest = sha256_file(file_path)
    if digest != listed["sha256"]:
        raise BundleError(
            f"{path}: {name} sha256 {digest[:12]}… does not match the manifest's "
            f"{listed['sha256'][:12]}… (tampered or corrupt; re-export the bundle)"
        )


def load_bundle(path: Path | str) -> Bundle:
    """Resolve ``path`` (a bundle folder or a ``current`` link), verify it and load it."""
    resolved = Path(path).resolve()
    if not resolved.is_dir():
        raise BundleError(f"bundle {path} does not exist (resolved to {resolved})")
    manifest = verify_bundle(resolved)
    model = manifest["model"]
    try:
        embeddings = np.load(resolved / EMBEDDINGS, allow_pickle=False)
    except ValueError as exc:
        raise BundleError(f"{resolved}: {EMBEDDINGS} unreadable ({exc})") from exc
    item_ids = (resolved / ITEM_IDS).read_text(encoding="utf-8").splitlines()
    n_items = int(manifest["n_items"])
    if embeddings.dtype != np.float32 or embeddings.shape != (n_items, int(model["dim"])):
        raise BundleError(
            f"{resolved}: {EMBEDDINGS} is {embeddings.dtype} {embeddings.shape}, expected "
            f"float32 ({n_items}, {model['dim']})"
        )
    if len(item_ids) != n_items:
        raise BundleError(f"{resolved}: {ITEM_IDS} has {len(item_ids)} lines, expected {n_items}")
    item_categories = None
    if ITEM_CATEGORIES in manifest["files"]:
        item_categories = read_category_lines(resolved / ITEM_CATEGORIES, n_items)
    logger.info("bundle loaded version=%s path=%s items=%d", manifest["version"], resolved, n_items)
    return Bundle(
        path=resolved,
        manifest=manifest,
        item_ids=item_ids,
        item_embeddings=embeddings,
        item_categories=item_categories,
    )


def fsync_file(path: Path) -> None:
    """Flush ``path``'s contents to disk (before the rename that publishes it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
