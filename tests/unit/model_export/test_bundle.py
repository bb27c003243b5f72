"""Bundles written from a real tower: round trip, integrity checks and the ``current`` link."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from model_export.bundle import (
    CURRENT_LINK,
    EMBEDDINGS,
    ITEM_CATEGORIES,
    ITEM_IDS,
    MANIFEST,
    TOWER,
    UNVERSIONED_FIELDS,
    BundleLink,
    load_bundle,
    point_current,
)
from model_export.exceptions import BundleError
from model_export.export import export_bundle
from model_export.model import MindConfig, build_tower
from model_export.onnx_tower import OnnxUserTower

N_ITEMS = 40


def tower_and_ids(seed=0, kind="mind"):
    config = MindConfig(n_items=N_ITEMS, dim=8, k=4, max_len=10, seed=seed, kind=kind)
    return build_tower(config).eval(), [f"item-{i}" for i in range(N_ITEMS)]


@pytest.fixture
def bundle(tmp_path):
    tower, ids = tower_and_ids()
    path = export_bundle(tower, ids, tmp_path / "bundles", metrics={"hr@50": 0.25})
    return tower, ids, path


def test_round_trip(bundle):
    tower, ids, path = bundle
    loaded = load_bundle(path)
    assert loaded.item_ids == ids
    assert loaded.version == path.name
    assert (loaded.dim, loaded.k, loaded.max_len) == (8, 4, 10)
    assert loaded.config["kind"] == "mind"
    assert loaded.config["routing_iterations"] == 3
    assert loaded.manifest["metrics"] == {"hr@50": 0.25}
    with torch.no_grad():
        want = tower.item_vectors()[1:].numpy()
    np.testing.assert_array_equal(loaded.item_embeddings, want)
    seq = np.array([[1, 2, 3, 4, 0], [5, 0, 0, 0, 0]], dtype=np.int64)
    got, mask = OnnxUserTower(loaded.onnx_path)(seq)
    with torch.no_grad():
        ref, ref_mask = tower(torch.from_numpy(seq))
    assert np.abs(got - ref.numpy()).max() <= 1e-5
    np.testing.assert_array_equal(mask, ref_mask.numpy())
    # The exported item vectors are the ones the tower pools behaviours from.
    assert loaded.item_index["item-0"] == 1


def test_youtube_dnn_bundle_has_one_interest(tmp_path):
    tower, ids = tower_and_ids(kind="youtube_dnn")
    loaded = load_bundle(export_bundle(tower, ids, tmp_path))
    assert loaded.k == 1
    got, mask = OnnxUserTower(loaded.onnx_path)(np.array([[3, 4, 0]]))
    assert got.shape == (1, 1, 8) and mask.tolist() == [[True]]


def test_same_content_gives_the_same_version(tmp_path, bundle):
    tower, ids, path = bundle
    again = export_bundle(tower, ids, path.parent, metrics={"hr@50": 0.25})
    assert again == path
    elsewhere = export_bundle(tower, ids, tmp_path / "other", metrics={"hr@50": 0.25})
    assert elsewhere.name == path.name
    # The metrics are part of the manifest, hence of the version.
    assert export_bundle(tower, ids, tmp_path / "other", metrics={"hr@50": 0.5}) != elsewhere


@pytest.mark.parametrize("name", [TOWER, EMBEDDINGS, ITEM_IDS])
def test_tampered_file_is_refused(bundle, name):
    _, _, path = bundle
    target = path / name
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(path)


@pytest.mark.parametrize("name", [TOWER, EMBEDDINGS, ITEM_IDS])
def test_truncated_file_is_refused(bundle, name):
    _, _, path = bundle
    target = path / name
    target.write_bytes(target.read_bytes()[:-7])
    with pytest.raises(BundleError, match="truncated"):
        load_bundle(path)


def test_missing_manifest_is_refused(bundle):
    _, _, path = bundle
    (path / MANIFEST).unlink()
    with pytest.raises(BundleError, match="missing"):
        load_bundle(path)


def test_missing_content_file_is_refused(bundle):
    _, _, path = bundle
    (path / TOWER).unlink()
    with pytest.raises(BundleError, match="missing"):
        load_bundle(path)


def test_wrong_format_is_refused(bundle):
    _, _, path = bundle
    manifest = json.loads((path / MANIFEST).read_text())
    manifest["format"] = "mindstream-bundle/99"
    (path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="format"):
        load_bundle(path)


def _edit_manifest(path, edit):
    manifest = json.loads((path / MANIFEST).read_text())
    edit(manifest)
    (path / MANIFEST).write_text(json.dumps(manifest))


def _set(*keys, value):
    def edit(manifest):
        node = manifest
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value

    return edit


# Edits of every field the version covers, by top-level field ("format" is refused by its own
# check below; UNVERSIONED_FIELDS are checked below as well).
MANIFEST_EDITS = {
    "model-k": ("model", _set("model", "k", value=8)),
    "model-kind": ("model", _set("model", "kind", value="youtube_dnn")),
    "model-routing_iterations": ("model", _set("model", "routing_iterations", value=1)),
    "model-added-key": ("model", _set("model", "temperature", value=2.0)),
    "metrics-changed": ("metrics", _set("metrics", "hr@50", value=0.99)),
    "metrics-added": ("metrics", _set("metrics", "ndcg@50", value=0.5)),
    "metrics-emptied": ("metrics", _set("metrics", value={})),
    "n_items": ("n_items", _set("n_items", value=N_ITEMS + 1)),
    "files-extra-entry": ("files", _set("files", "notes.txt", value={"sha256": "0", "bytes": 1})),
    "added-top-level-field": ("producer", _set("producer", value="someone")),
    "version": ("version", _set("version", value="mind-00000000000000000000")),
}


@pytest.mark.parametrize("name", MANIFEST_EDITS)
def test_every_edited_manifest_field_is_refused(bundle, name):
    _, _, path = bundle
    _edit_manifest(path, MANIFEST_EDITS[name][1])
    # A file the format does not know is refused by name, before the version is checked.
    match = "unknown files" if name == "files-extra-entry" else "does not match its content"
    with pytest.raises(BundleError, match=match):
        load_bundle(path)


def test_the_edits_above_cover_every_versioned_field(bundle):
    _, _, path = bundle
    fields = set(json.loads((path / MANIFEST).read_text()))
    edited = {field for field, _ in MANIFEST_EDITS.values()}
    assert fields - UNVERSIONED_FIELDS - {"format"} <= edited
    assert {"version", "created_at"} == UNVERSIONED_FIELDS


def test_created_at_is_not_versioned_but_must_be_a_time(bundle):
    _, _, path = bundle
    _edit_manifest(path, _set("created_at", value="2020-01-01T00:00:00+00:00"))
    assert load_bundle(path).version == path.name  # when this copy was written may differ
    _edit_manifest(path, _set("created_at", value="yesterday"))
    with pytest.raises(BundleError, match="created_at"):
        load_bundle(path)


@pytest.mark.parametrize("field", ["version", "created_at", "metrics", "n_items", "files"])
def test_a_missing_manifest_field_is_refused(bundle, field):
    _, _, path = bundle
    _edit_manifest(path, lambda manifest: manifest.pop(field))
    with pytest.raises(BundleError, match=f"missing key '{field}'"):
        load_bundle(path)


def test_a_renamed_bundle_folder_is_refused(bundle, tmp_path):
    _, _, path = bundle
    renamed = path.rename(path.with_name("mind-11111111111111111111"))
    with pytest.raises(BundleError, match="folder name 'mind-11111111111111111111' is not"):
        load_bundle(renamed)
    # Served through a link, the folder it resolves to is what counts.
    (tmp_path / "link").symlink_to(renamed)
    with pytest.raises(BundleError, match="folder name"):
        load_bundle(tmp_path / "link")
    assert load_bundle(renamed.rename(path)).version == path.name


def test_a_bundle_of_the_previous_format_is_refused(bundle):
    _, _, path = bundle
    _edit_manifest(path, _set("format", value="mindstream-bundle/1"))
    with pytest.raises(BundleError, match="format 'mindstream-bundle/1', expected"):
        load_bundle(path)


def test_current_link_switches_to_the_newest_export(tmp_path):
    root = tmp_path / "bundles"
    first = export_bundle(*tower_and_ids(seed=1), root)
    assert load_bundle(root / CURRENT_LINK).version == first.name
    second = export_bundle(*tower_and_ids(seed=2), root)
    assert second != first
    assert load_bundle(root / CURRENT_LINK).version == second.name
    kept = export_bundle(*tower_and_ids(seed=3), root, make_current=False)
    assert load_bundle(root / CURRENT_LINK).version == second.name
    assert load_bundle(kept).version == kept.name
    assert (root / CURRENT_LINK).is_symlink()
    assert not [p.name for p in root.iterdir() if p.name.startswith(".")]


def test_serving_modules_do_not_import_torch(bundle):
    _, _, path = bundle
    code = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        from model_export.bundle import load_bundle
        from model_export.onnx_tower import OnnxUserTower
        b = load_bundle({str(path)!r})
        OnnxUserTower(b.onnx_path)(np.array([[1, 2]]))
        heavy = sorted(m for m in ("torch", "onnx", "onnxscript") if m in sys.modules)
        print(",".join(heavy))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == ""


def test_bundle_link_answers_each_new_target_once(tmp_path):
    a, b, c = (tmp_path / name for name in ("a", "b", "c"))
    for folder in (a, b, c):
        folder.mkdir()
    point_current(tmp_path, a)
    link = BundleLink(tmp_path / CURRENT_LINK)
    assert link.target() == a.resolve()
    assert link.new_target(in_use=a.resolve()) is None  # the bundle in use is not new
    point_current(tmp_path, b)
    assert link.new_target(in_use=a.resolve()) == b.resolve()
    # b failed to load (still a in use): not answered again until the link moves
    assert link.new_target(in_use=a.resolve()) is None
    point_current(tmp_path, a)
    assert link.new_target(in_use=a.resolve()) is None
    point_current(tmp_path, c)
    assert link.new_target(in_use=a.resolve()) == c.resolve()
    c.rmdir()  # the link now points nowhere
    assert link.target() is None and link.new_target(in_use=a.resolve()) is None
    assert BundleLink(tmp_path / "nowhere" / CURRENT_LINK).target() is None


# --- item categories (optional) ------------------------------------------------------------


def categories_of(n):
    # Labels with spaces and non-ASCII, and items without a category (empty lines).
    return ["" if i % 5 == 0 else f"genre:{i % 3} – é" for i in range(n)]


def test_item_categories_round_trip_and_are_versioned(tmp_path, bundle):
    tower, ids, plain = bundle
    labels = categories_of(N_ITEMS)
    path = export_bundle(
        tower, ids, tmp_path / "cat", metrics={"hr@50": 0.25}, item_categories=labels
    )
    loaded = load_bundle(path)
    assert loaded.item_categories == labels
    assert ITEM_CATEGORIES in loaded.manifest["files"]
    # The file is part of the content: a bundle with categories is another version, and one
    # without them loads with none.
    assert path.name != plain.name
    assert load_bundle(plain).item_categories is None
    last_empty = ["a"] * (N_ITEMS - 1) + [""]
    again = export_bundle(tower, ids, tmp_path / "cat2", item_categories=last_empty)
    assert load_bundle(again).item_categories == last_empty


@pytest.mark.parametrize(
    "labels, match",
    [(["a"] * (N_ITEMS - 1), "39 item categories for 40 items"), (["a\nb"] * N_ITEMS, "single")],
)
def test_item_categories_that_do_not_fit_are_refused_before_writing(tmp_path, labels, match):
    tower, ids = tower_and_ids()
    with pytest.raises(BundleError, match=match):
        export_bundle(tower, ids, tmp_path / "b", item_categories=labels)
    assert not any((tmp_path / "b").glob("*-*"))


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_damaged_item_categories_are_refused(tmp_path, damage):
    tower, ids = tower_and_ids()
    path = export_bundle(tower, ids, tmp_path, item_categories=categories_of(N_ITEMS))
    target = path / ITEM_CATEGORIES
    if damage == "flip":
        data = bytearray(target.read_bytes())
        data[3] ^= 0x01
        target.write_bytes(bytes(data))
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[:-2])
    else:
        target.unlink()
    with pytest.raises(
        BundleError, match={"flip": "sha256", "truncate": "truncated"}.get(damage, "missing")
    ):
        load_bundle(path)


def test_a_manifest_listing_an_unknown_file_is_refused(bundle):
    _, _, path = bundle
    manifest = json.loads((path / MANIFEST).read_text())
    manifest["files"]["../elsewhere"] = {"sha256": "0" * 64, "bytes": 1}
    (path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="unknown files"):
        load_bundle(path)


def test_a_checkpoint_keeps_the_categories_for_its_bundle(tmp_path):
    from model_export.checkpoint import load_checkpoint, save_checkpoint

    tower, ids = tower_and_ids()
    labels = categories_of(N_ITEMS)
    saved = save_checkpoint(tmp_path / "ckpt", tower, ids, {}, item_categories=labels)
    restored = load_checkpoint(saved)
    assert restored.item_categories == labels
    bundle_path = export_bundle(
        restored.tower, restored.item_ids, tmp_path / "b", item_categories=restored.item_categories
    )
    assert load_bundle(bundle_path).item_categories == labels
    assert load_checkpoint(save_checkpoint(tmp_path / "plain", tower, ids)).item_categories is None
