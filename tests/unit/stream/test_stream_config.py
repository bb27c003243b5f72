"""The processing guarantee: at_least_once goes to Faust, exactly_once is refused with the
reason, for both broker profiles."""

from __future__ import annotations

import dataclasses

import pytest

from mindstream.errors import ConfigError
from mindstream.settings import Settings
from stream.config import app_options, processing_guarantee


def test_at_least_once_is_the_default_and_goes_to_faust() -> None:
    assert Settings().processing_guarantee == "at_least_once"
    assert app_options(Settings())["processing_guarantee"] == "at_least_once"


@pytest.mark.parametrize("profile", ["standard", "local"])
def test_exactly_once_is_refused_naming_the_setting_and_the_reason(profile: str) -> None:
    settings = dataclasses.replace(
        Settings(), processing_guarantee="exactly_once", kafka_profile=profile
    )
    with pytest.raises(ConfigError) as caught:
        processing_guarantee(settings)
    message = str(caught.value)
    assert "MINDSTREAM_PROCESSING_GUARANTEE=exactly_once is not supported" in message
    assert "at_least_once" in message and "RELIABILITY.md" in message
    assert ("Tansu" in message) == (profile == "local")
    with pytest.raises(ConfigError):
        app_options(settings)


def test_an_unknown_guarantee_is_refused_when_the_settings_are_read() -> None:
    with pytest.raises(ConfigError, match="MINDSTREAM_PROCESSING_GUARANTEE='exactly-once'"):
        Settings.from_env({"MINDSTREAM_PROCESSING_GUARANTEE": "exactly-once"})
    parsed = Settings.from_env({"MINDSTREAM_PROCESSING_GUARANTEE": "exactly_once"})
    assert parsed.processing_guarantee == "exactly_once"
