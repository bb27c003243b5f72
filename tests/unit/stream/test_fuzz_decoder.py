"""The click-event decoder against an independent reference, at >= 10,000 generated records.

Hypothesis builds records close to the contract's edge (right and wrong types, ids at the
length limit, whitespace and control characters, every event type and near misses, ts around
both bounds, extra and missing fields, duplicate keys, keys that match or not, values around
the size limit) and the decoder's verdict is compared with a reference written here from the
contract's text (``stream.events`` docstring), not from the decoder's code: it must accept
exactly what the reference accepts, return exactly the fields given, and reject everything
else with :class:`BadEvent` and a reason from ``REASONS``, never with another exception.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.events import MAX_EVENT_BYTES, REASONS, ClickEvent, decode_event
from stream.exceptions import BadEvent

NOW = 1_750_000_000_000
SKEW = 300_000
LOWEST = 946_684_800_000  # 2000-01-01 in epoch ms
EXAMPLES = 50
PER_EXAMPLE = 200  # EXAMPLES * PER_EXAMPLE >= 10,000 records
TYPES = ("click", "pv", "view", "cart", "fav", "buy")


def _as_pairs(pairs: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    return pairs


def _refuse(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def reference_verdict(key: bytes | None, value: bytes | None) -> ClickEvent | None:
    """The contract, read literally: the event, or None for a bad record."""
    if value is None or len(value) > MAX_EVENT_BYTES or key == b"":
        return None
    try:
        text = value.decode("utf-8")
        pairs = json.loads(text, object_pairs_hook=_as_pairs, parse_constant=_refuse)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(pairs, list) or text.lstrip()[:1] != "{":
        return None  # not an object (the hook turned every object into a list of pairs)
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        return None
    obj = dict(pairs)
    if not set(obj) <= {"user_id", "item_id", "ts", "event", "category"}:
        return None
    if not {"user_id", "item_id", "ts"} <= set(obj):
        return None

    def good_text(v: Any) -> bool:
        if not isinstance(v, str) or not 1 <= len(v) <= 128 or v != v.strip():
            return False
        for ch in v:
            category = unicodedata.category(ch)
            if category in {"Cc", "Cs", "Zl", "Zp"}:  # controls, surrogates, separators
                return False
        return True

    if not (good_text(obj["user_id"]) and good_text(obj["item_id"])):
        return None
    ts = obj["ts"]
    if type(ts) is not int or not LOWEST <= ts <= NOW + SKEW:
        return None
    kind = obj.get("event", "click")
    if kind not in TYPES or not isinstance(kind, str):
        return None
    if "category" in obj and obj["category"] is not None and not good_text(obj["category"]):
        return None
    if key is not None and key != obj["user_id"].encode("utf-8"):
        return None
    return ClickEvent(obj["user_id"], obj["item_id"], ts, kind, obj.get("category"))


edge_text = st.one_of(
    st.sampled_from(["u42", "i9001", "c3", "ü", "用户", "a b", "x" * 128, "y" * 129]),
    st.sampled_from([" u", "u ", "", "\t", "a\nb", "a\x00b", "a\u2028b", "a\x85b", "\u00a0u"]),
    st.text(max_size=12),
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=6),
)
edge_ts = st.one_of(
    st.sampled_from(
        [LOWEST - 1, LOWEST, NOW, NOW + SKEW, NOW + SKEW + 1, 1_700_000_000, -5, 0, 10**30]
    ),
    st.integers(LOWEST, NOW),
)
json_value = st.one_of(
    edge_text,
    edge_ts,
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([*TYPES, "Click", "hover", "buy "]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
safe_text = st.text(st.characters(categories=("L", "N", "P", "S")), min_size=1, max_size=20).filter(
    lambda t: t == t.strip()
)
VALID = {
    "user_id": st.one_of(st.sampled_from(["u42", "ü", "用户", "a b", "x" * 128]), safe_text),
    "item_id": st.one_of(st.sampled_from(["i9001", "i-1", "y" * 128]), safe_text),
    "ts": st.integers(LOWEST, NOW + SKEW),
    "event": st.sampled_from(TYPES),
    "category": st.one_of(st.none(), safe_text),
}
EDGE = {
    "user_id": st.one_of(edge_text, json_value),
    "item_id": st.one_of(edge_text, json_value),
    "ts": st.one_of(edge_ts, json_value),
    "event": st.one_of(st.sampled_from(["hover", "Click", "buy "]), json_value),
    "category": st.one_of(edge_text, json_value),
}


def _mostly_valid(name: str) -> st.SearchStrategy[Any]:
    """A field's value: valid 4 times in 5, else an edge or hostile value."""
    return st.integers(0, 4).flatmap(lambda n: VALID[name] if n else EDGE[name])


FIELD = {name: _mostly_valid(name) for name in VALID}


@st.composite
def records(draw: st.DrawFn) -> tuple[bytes | None, bytes | None]:
    """(key, value) near the contract's edges; most are valid or one step from it."""
    present = draw(st.fixed_dictionaries({name: st.booleans() for name in FIELD}))
    for required in ("user_id", "item_id", "ts"):
        present[required] = present[required] or draw(st.integers(0, 9)) > 0
    fields = [(name, draw(FIELD[name])) for name, on in present.items() if on]
    if draw(st.integers(0, 19)) == 0:  # an unknown field, or "ts" twice
        fields.append((draw(st.sampled_from(["evnt", "user", "ts"])), 1))
    fields = draw(st.permutations(fields))
    ascii_only = draw(st.booleans())
    body = ",".join(f"{json.dumps(n)}:{json.dumps(v, ensure_ascii=ascii_only)}" for n, v in fields)
    value = ("{" + body + "}").encode("utf-8", "surrogatepass")
    shape = draw(st.integers(0, 29))
    if shape == 0:
        value = value + b" " * (MAX_EVENT_BYTES + 1 - len(value))  # one byte over
    elif shape == 1:
        value = value + b" " * max(0, MAX_EVENT_BYTES - len(value))  # exactly at the limit
    elif shape == 2:
        value = b"[" + value + b"]"
    elif shape == 3:
        value = value[: draw(st.integers(0, max(0, len(value) - 1)))]
    elif shape == 4:
        return None, None  # a tombstone
    user = dict(fields).get("user_id")
    key_kind = draw(st.integers(0, 9))
    if key_kind == 0:
        key: bytes | None = None
    elif key_kind == 1:
        key = b""
    elif key_kind == 2:
        key = draw(st.binary(min_size=1, max_size=8))
    elif isinstance(user, str):
        key = user.encode("utf-8", "surrogatepass")
    else:
        key = b"u42"
    return key, value


def test_fuzz_decoder_matches_the_reference() -> None:
    counts = {"records": 0, "valid": 0, "bad": 0}
    reasons: set[str] = set()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.lists(records(), min_size=PER_EXAMPLE, max_size=PER_EXAMPLE))
    def check(batch: list[tuple[bytes | None, bytes | None]]) -> None:
        for key, value in batch:
            want = reference_verdict(key, value)
            try:
                got = decode_event(key, value, now_ms=NOW, max_future_skew_ms=SKEW)
            except BadEvent as exc:
                assert exc.reason in REASONS
                assert want is None, (key, value, exc.reason, exc.detail)
                reasons.add(exc.reason)
                counts["bad"] += 1
            else:
                assert got == want, (key, value)
                counts["valid"] += 1
            counts["records"] += 1

    check()
    assert counts["records"] >= EXAMPLES * PER_EXAMPLE >= 10_000
    # both verdicts were exercised in bulk, and most ways of being bad
    assert counts["valid"] >= 1000 and counts["bad"] >= 1000, counts
    assert len(reasons) >= 10, sorted(reasons)
