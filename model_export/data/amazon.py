"""Amazon review sequences as prepared for S3-Rec (e.g. ``Beauty.txt``: ``user item item ...``,
one time-ordered line per user, no timestamps), with ``<name>_item2attributes.json`` (item ->
attribute ids) as a multi-valued ``attribute`` feature.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from model_export.data.assemble import (
    MAX_EXAMPLES,
    BadLines,
    LoadResult,
    assemble,
    feature_matrix,
    ordered_ids,
)
from model_export.exceptions import DataFormatError

logger = logging.getLogger(__name__)

ATTRIBUTES_SUFFIX = "_item2attributes.json"
# Beauty has at most 6 attributes per item, so this cap cuts nothing there; it bounds the
# feature width on other categories.
DEFAULT_MAX_ATTRIBUTES = 8


def read_amazon(
    path: str | Path,
    *,
    attributes: str | Path | None = None,
    max_attributes: int = DEFAULT_MAX_ATTRIBUTES,
    skip_bad: bool = False,
    name: str | None = None,
) -> LoadResult:
    """Load an S3-Rec sequence file (or a folder holding exactly one) and its attributes.

    ``attributes`` defaults to ``<stem>_item2attributes.json`` beside the sequence file; when
    absent the items get no features. An item's attributes keep their JSON order and are cut
    to ``max_attributes`` (the cut is counted in ``counts``). The file has no timestamps, so
    ``timestamps`` is None and line order is event order.
    """
    seq_path = _locate(Path(path))
    bad = BadLines(skip_bad)
    users: list[str] = []
    items: list[str] = []
    first_line: dict[str, int] = {}
    rows = 0
    with seq_path.open(encoding="utf-8", newline="") as handle:
        for line_no, raw in enumerate(handle, start=1):
            line = raw.strip()
            if not line:
                continue
            rows += 1
            tokens = line.split()
            if len(tokens) < 2:
                bad.reject(seq_path, line_no, "a user id followed by at least one item id", line)
                continue
            user = tokens[0]
            if user in first_line:
                bad.reject(
                    seq_path,
                    line_no,
                    f"one line per user (user {user} is already on line {first_line[user]})",
                    line,
                )
                continue
            first_line[user] = line_no
            users.extend([user] * (len(tokens) - 1))
            items.extend(tokens[1:])
    bad.log_summary(seq_path)

    item_ids = ordered_ids(items)
    name = name or seq_path.stem
    attr_path = Path(attributes) if attributes is not None else _attributes_beside(seq_path)
    counts: dict[str, int] = {}
    if attr_path is None:
        logger.info("no %s beside %s: loading without attributes", ATTRIBUTES_SUFFIX, seq_path)
        interactions = assemble(name, users, items, None, item_ids=item_ids)
        return LoadResult(
            interactions, "amazon", str(seq_path), rows, bad.count, bad.examples[:MAX_EXAMPLES]
        )

    item_attributes = _read_attributes(attr_path)
    missing = sum(1 for item in item_ids if item not in item_attributes)
    if missing:
        counts["items without attributes"] = missing
        logger.warning("items without attributes in %s: %d", attr_path, missing)
    matrix, vocab, truncated = feature_matrix(item_ids, item_attributes, max_width=max_attributes)
    if truncated:
        counts["attributes beyond max_attributes"] = truncated
        logger.info("attributes cut by max_attributes=%d: %d", max_attributes, truncated)
    interactions = assemble(
        name,
        users,
        items,
        None,
        item_ids=item_ids,
        item_features={"attribute": matrix},
        feature_sizes={"attribute": len(vocab) + 1},
    )
    return LoadResult(
        interactions,
        "amazon",
        str(seq_path),
        rows,
        bad.count,
        bad.examples,
        counts,
        {"attribute": vocab},
    )


def _locate(path: Path) -> Path:
    if path.is_file():
        return path
    if path.is_dir():
        candidates = sorted(p for p in path.glob("*.txt") if p.is_file())
        paired = [p for p in candidates if _attributes_beside(p) is not None]
        # A folder may hold a README.txt too: the file with an attribute file wins.
        for group in (paired, candidates):
            if len(group) == 1:
                return group[0]
        raise DataFormatError(
            f"{path}: expected one <name>.txt sequence file (or one with a <name>"
            f"{ATTRIBUTES_SUFFIX}), found "
            f"{[p.name for p in candidates]}; pass the file itself"
        )
    raise DataFormatError(f"{path}: no such file or directory")


def _attributes_beside(seq_path: Path) -> Path | None:
    candidate = seq_path.with_name(seq_path.stem + ATTRIBUTES_SUFFIX)
    return candidate if candidate.is_file() else None


def _read_attributes(path: Path) -> dict[str, list[str]]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(raw, dict):
        raise DataFormatError(
            f"{path}: expected a JSON object item -> [attribute ids], got {type(raw).__name__}"
        )
    result: dict[str, list[str]] = {}
    for item, values in raw.items():
        if not isinstance(values, list) or not all(
            isinstance(v, int | str) and not isinstance(v, bool) for v in values
        ):
            raise DataFormatError(
                f"{path}: item {item!r}: expected a list of attribute ids, got {values!r}"
            )
        result[str(item)] = [str(v) for v in values]
    return result
