"""Topic names and idempotent topic creation."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from mindstream.settings import Settings
from mindstream.topics import TopicError, check_topic_name, ensure_topic, ensure_topics


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
