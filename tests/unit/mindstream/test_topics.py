"""Topic names and idempotent topic creation."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from mindstream import topics
from mindstream.settings import Settings
from mindstream.topics import (
    TopicError,
    check_topic_name,
    ensure_topic,
    ensure_topics,
    partition_counts,
)


@pytest.mark.parametrize("name", ["clicks", "clicks.dlq", "a_b-C.9", "x" * 249])
def test_legal_topic_names(name: str) -> None:
    assert check_topic_name(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", "has space", "a/b", "ü", "x" * 250])
def test_illegal_topic_names(name: str) -> None:
    with pytest.raises(TopicError, match="expected 1-249 characters"):
        check_topic_name(name)


def test_bad_requests_are_refused_before_contacting_a_broker() -> None:
    unreachable = Settings(kafka_bootstrap_servers="127.0.0.1:1")
    with pytest.raises(TopicError, match="at least 1"):
        ensure_topics(unreachable, {"ok": 0})
    with pytest.raises(TopicError, match="topic name"):
        ensure_topics(unreachable, {"bad name": 1})
    assert ensure_topics(unreachable, {}) == []


@pytest.mark.integration
def test_creating_twice_is_fine_and_keeps_the_first_shape(
    service_settings: Settings,
    unique_name: Callable[[str], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    names = [unique_name("a"), unique_name("b")]
    first = ensure_topics(service_settings, {names[0]: 3, names[1]: 1})
    assert [(o.partitions, o.created) for o in first] == [(3, True), (1, True)]
    with caplog.at_level(logging.WARNING, logger="mindstream.topics"):
        again = ensure_topic(service_settings, names[0], 5)
    assert (again.partitions, again.created) == (3, False)
    assert "asked for 5" in caplog.text


def test_partition_counts_leave_incomplete_broker_answers_unknown() -> None:
    answer = [
        {"name": "ready", "error_code": 0, "partitions": [{}, {}, {}, {}]},
        {"name": "no-partitions-yet", "error_code": 0, "partitions": []},
        {"name": "unknown-here", "error_code": 3, "partitions": []},
    ]
    assert partition_counts(answer) == {
        "ready": 4,
        "no-partitions-yet": None,
        "unknown-here": None,
    }


class _LaggingAdmin:
    """Answers like a KRaft broker that learns of a new topic only on the third request."""

    def __init__(self, complete_after: int) -> None:
        self.calls = 0
        self.complete_after = complete_after

    def describe_topics(self, names: list[str]) -> list[dict[str, object]]:
        self.calls += 1
        partitions: list[dict[str, object]] = [{}] * 4 if self.calls >= self.complete_after else []
        return [{"name": name, "error_code": 0, "partitions": partitions} for name in names]


def test_describe_asks_again_until_the_broker_reports_partitions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(topics, "DESCRIBE_RETRY_S", 0.0)
    admin = _LaggingAdmin(complete_after=3)
    assert topics._describe_partitions(admin, ["a", "b"], timeout_s=5.0) == {"a": 4, "b": 4}
    assert admin.calls == 3


def test_describe_gives_up_with_the_topics_it_could_not_see(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(topics, "DESCRIBE_RETRY_S", 0.0)
    with pytest.raises(TopicError, match=r"partitions of \['a'\]"):
        topics._describe_partitions(_LaggingAdmin(complete_after=10**9), ["a"], timeout_s=0.05)
