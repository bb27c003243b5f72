"""The publish tool without a broker: sources, pacing, and the honest counting of deliveries."""

from __future__ import annotations

import time

import numpy as np
import pytest

from mindstream.app.cli import main
from model_export.data.synthetic import SyntheticConfig, click_events, generate
from model_export.dataset import Interactions
from stream.events import decode_event
from stream.publish import (
    Pacer,
    file_source,
    interactions_source,
    limited,
    publish,
    synthetic_source,
)

TAOBAO_ROWS = [
    "1,100,7,pv,1511848894",
    "1,101,7,cart,1511848900",
    "2,100,7,fav,1511848895",
    "this line is broken",
    "2,102,8,buy,1511848999",
    "3,103,9,pv,notatime",
]


class FakeFuture:
    def __init__(self, error: Exception | None) -> None:
        self.error = error

    def add_callback(self, fn):
        if self.error is None:
            fn(object())
        return self

    def add_errback(self, fn):
        if self.error is not None:
            fn(self.error)
        return self


class FakeProducer:
    """Records sends; fails the sends whose index is in ``fail``, refuses those in ``refuse``."""

    def __init__(self, fail=(), refuse=()) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.fail = set(fail)
        self.refuse = set(refuse)
        self.flushed = self.closed = False

    def send(self, topic, key, value):
        from kafka.errors import KafkaTimeoutError

        index = len(self.sent)
        self.sent.append((topic, key, value))
        if index in self.refuse:
            raise KafkaTimeoutError("metadata not available")
        return FakeFuture(RuntimeError("broker said no") if index in self.fail else None)

    def flush(self, timeout=None):
        self.flushed = True

    def close(self, timeout=None):
        self.closed = True


@pytest.fixture
def settings():
    from mindstream.settings import Settings

    return Settings()


def test_synthetic_source_is_the_generators_click_events_in_time_order():
    config = SyntheticConfig(n_users=20, n_items=50, n_clusters=5, seed=3)
    source = synthetic_source(config)
    events = list(source.events)
    data, _ = generate(config)
    assert events == list(click_events(data))
    assert source.total == len(events) == data.n_interactions
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)


def test_taobao_file_keeps_behaviour_types_and_counts_bad_lines(tmp_path):
    path = tmp_path / "UserBehavior.csv"
    path.write_text("\n".join(TAOBAO_ROWS) + "\n")
    source = file_source(path)
    events = list(source.events)
    assert source.bad_lines == 2
    assert len(source.bad_line_examples) == 2
    assert "this line is broken" in source.bad_line_examples[0]
    assert source.total == len(events) == 4
    assert [(e["user_id"], e["item_id"], e["event"], e["category"]) for e in events] == [
        ("1", "100", "click", "7"),
        ("2", "100", "fav", "7"),
        ("1", "101", "cart", "7"),
        ("2", "102", "buy", "8"),
    ]
    assert events[0]["ts"] == 1511848894000


def test_untimed_source_is_stamped_in_sequence_order_ending_now():
    data = Interactions(
        name="untimed",
        item_ids=["a", "b", "c"],
        users=["u1", "u2"],
        sequences=[np.array([1, 2, 3]), np.array([3, 1])],
        item_features={"genre": np.array([[0, 0], [1, 2], [2, 0], [0, 0]])},
        feature_sizes={"genre": 3},
    )
    source = interactions_source(
        data, category_names={"genre": ["Drama", "Comedy"]}, now_ms=1_700_000_000_000
    )
    events = list(source.events)
    assert any("no timestamps" in note for note in source.notes)
    by_user = {u: [e for e in events if e["user_id"] == u] for u in ("u1", "u2")}
    assert [e["item_id"] for e in by_user["u1"]] == ["a", "b", "c"]
    assert [e["item_id"] for e in by_user["u2"]] == ["c", "a"]
    assert by_user["u1"][-1]["ts"] == by_user["u2"][-1]["ts"] == 1_700_000_000_000
    assert by_user["u1"][0]["ts"] == 1_700_000_000_000 - 2000
    # The first genre names the category; an item without one gets none.
    assert by_user["u1"][0]["category"] == "Drama"
    assert by_user["u1"][1]["category"] == "Comedy"
    assert "category" not in by_user["u1"][2]


def test_limited_takes_the_first_events():
    config = SyntheticConfig(n_users=10, n_items=20, n_clusters=4)
    source = synthetic_source(config)
    everything = list(synthetic_source(config).events)
    cut = limited(source, 7)
    assert cut.total == 7
    assert list(cut.events) == everything[:7]


def test_pacer_holds_the_rate_and_zero_means_unpaced():
    pacer = Pacer(200.0)
    started = time.monotonic()
    for _ in range(41):
        pacer.wait()
    assert time.monotonic() - started >= 0.19  # 40 intervals of 5 ms
    pacer = Pacer(0)
    started = time.monotonic()
    for _ in range(10_000):
        pacer.wait()
    assert time.monotonic() - started < 0.5
    with pytest.raises(ValueError):
        Pacer(-1)


def test_publish_counts_acks_failures_refusals_and_bad_events(settings):
    good = {"user_id": "u1", "item_id": "i1", "ts": 1_700_000_000_000, "event": "click"}
    events = [
        good,
        {**good, "item_id": " padded"},  # bad id: never sent
        {**good, "item_id": "i2"},
        {**good, "ts": int(time.time() * 1000) + 3_600_000},  # an hour in the future: bad
        {**good, "item_id": "i3"},
        {**good, "item_id": "i4", "event": "cart", "category": "c1"},
        {"user_id": "u2", "ts": 1_700_000_000_000},  # no item: bad
    ]
    from stream.publish import EventSource

    producer = FakeProducer(fail={1}, refuse={2})
    source = EventSource("test", iter(events), total=len(events), bad_lines=4)
    stats = publish(
        settings, source, create_topic=False, progress=False, producer=producer, topic="t"
    )
    assert (stats.sent, stats.acknowledged, stats.failed) == (4, 2, 2)
    assert (stats.bad_events, stats.bad_lines) == (3, 4)
    assert producer.flushed and producer.closed
    assert any("broker said no" in e for e in stats.examples)
    assert any("metadata not available" in e for e in stats.examples)
    assert sum("bad event" in e for e in stats.examples) == 3
    assert "sent 4, acknowledged 2, failed 2, bad lines 4, bad events 3" in stats.summary()
    # What was sent is the contract's encoding, keyed by user id.
    for topic, key, value in producer.sent:
        assert topic == "t"
        assert decode_event(key, value).user_id == "u1"
    assert [decode_event(k, v).item_id for _, k, v in producer.sent] == ["i1", "i2", "i3", "i4"]
    assert decode_event(*producer.sent[3][1:]).category == "c1"


def test_restamp_uses_the_send_time_monotonically(settings):
    from stream.publish import EventSource

    events = [{"user_id": f"u{i}", "item_id": "i", "ts": 1_000_000_000_000 + i} for i in range(50)]
    producer = FakeProducer()
    seen: list[int] = []
    before = int(time.time() * 1000)
    stats = publish(
        settings,
        EventSource("t", iter(events)),
        restamp=True,
        create_topic=False,
        progress=False,
        producer=producer,
        on_sent=lambda e: seen.append(e["ts"]),
    )
    after = int(time.time() * 1000)
    assert stats.acknowledged == 50
    sent = [decode_event(k, v).ts for _, k, v in producer.sent]
    assert sent == seen == sorted(sent)
    assert before <= sent[0] and sent[-1] <= after


def test_cli_needs_a_source(capsys):
    with pytest.raises(SystemExit):
        main(["publish"])
    assert "one of the arguments" in capsys.readouterr().err
