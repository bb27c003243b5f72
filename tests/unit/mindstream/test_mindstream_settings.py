"""The one settings object: parsing, validation messages, the variable list and the README."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import pytest

from mindstream.errors import ConfigError
from mindstream.settings import (
    KAFKA_PROFILES,
    Settings,
    _parse,
    describe,
    known_env,
    markdown_table,
)

README = Path(__file__).resolve().parents[3] / "README.md"


def test_defaults_are_valid_and_equal_an_empty_environment() -> None:
    Settings().validate()
    assert Settings.from_env({}) == Settings()


def test_values_are_parsed_by_field_type() -> None:
    settings = Settings.from_env(
        {
            "MINDSTREAM_BATCH_SIZE": "2_000",
            "MINDSTREAM_TOPIC_PARTITIONS": " 16 ",
            "MINDSTREAM_KAFKA_PROFILE": "local",
            "REDIS_URL": "rediss://user:pw@cache:6380/2",
            "UNRELATED": "ignored",
        }
    )
    assert settings.batch_size == 2000
    assert settings.topic_partitions == 16
    assert settings.profile is KAFKA_PROFILES["local"]
    assert settings.redis_url == "rediss://user:pw@cache:6380/2"


@pytest.mark.parametrize(
    ("raw", "kind", "value"),
    [("1", bool, True), ("Off", bool, False), ("", bool, False), ("0.25", float, 0.25)],
)
def test_scalar_parsing(raw: str, kind: type, value: object) -> None:
    assert _parse("X", raw, kind) == value


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MINDSTREAM_BATCH_SIZE": "many"}, "MINDSTREAM_BATCH_SIZE='many': expected an integer"),
        ({"MINDSTREAM_BATCH_SIZE": "1.5"}, "MINDSTREAM_BATCH_SIZE='1.5': expected an integer"),
        ({"MINDSTREAM_BATCH_SIZE": "0"}, "MINDSTREAM_BATCH_SIZE=0: expected a number >= 1"),
        ({"MINDSTREAM_RECALL_PORT": "-1"}, "MINDSTREAM_RECALL_PORT=-1: expected a number >= 0"),
        ({"MINDSTREAM_KAFKA_PROFILE": "tansu"}, r"expected one of \['local', 'standard'\]"),
        ({"MINDSTREAM_ONNX_PROVIDER": "tpu"}, "MINDSTREAM_ONNX_PROVIDER='tpu'"),
        ({"MINDSTREAM_RECALL_INDEX": "lsh"}, "MINDSTREAM_RECALL_INDEX='lsh'"),
        ({"MINDSTREAM_LOG_LEVEL": "loud"}, "MINDSTREAM_LOG_LEVEL='LOUD'"),
        ({"MINDSTREAM_RECALL_DIVERSITY": "1.5"}, r"DIVERSITY=1.5: expected a number in \[0, 1\]"),
        ({"MINDSTREAM_RECALL_DIVERSITY": "inf"}, r"DIVERSITY=inf: expected a number in \[0, 1\]"),
        ({"MINDSTREAM_RECALL_DIVERSITY": "-0.1"}, "DIVERSITY=-0.1: expected a number >= 0"),
    ],
)
def test_bad_values_raise_config_error_naming_variable_and_expectation(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_negative_and_nan_floats_are_refused() -> None:
    floats = [
        f for f in dataclasses.fields(Settings) if typing.get_type_hints(Settings)[f.name] is float
    ]
    assert floats
    for field in floats:
        variable = field.metadata["env"]
        for raw in ("-1", "nan"):
            with pytest.raises(ConfigError, match=re.escape(variable)):
                Settings.from_env({variable: raw})


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().batch_size = 1  # type: ignore[misc]


def test_every_setting_has_a_unique_variable_a_doc_and_a_parsable_type() -> None:
    hints = typing.get_type_hints(Settings)
    variables = [f.metadata["env"] for f in dataclasses.fields(Settings)]
    assert len(variables) == len(set(variables))
    assert set(variables) == known_env()
    for f in dataclasses.fields(Settings):
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", f.metadata["env"]), f.name
        assert f.metadata["doc"].strip(), f.name
        assert hints[f.name] in {str, int, float, bool}, f.name
    assert {"KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "MINDSTREAM_KAFKA_PROFILE"} <= known_env()
    assert {"MINDSTREAM_DATA_DIR", "MINDSTREAM_BUNDLE", "MINDSTREAM_RECALL_HOST"} <= known_env()


def test_as_env_reproduces_the_settings() -> None:
    settings = dataclasses.replace(
        Settings(), kafka_profile="local", batch_size=7, redis_prefix="x:", data_dir="/d"
    )
    assert Settings.from_env(settings.as_env()) == settings
    assert set(settings.as_env()) == known_env()


def test_profiles_keep_quirk_workarounds_out_of_the_standard_profile() -> None:
    local, standard = KAFKA_PROFILES["local"], KAFKA_PROFILES["standard"]
    assert Settings().profile is standard, "real Kafka is the default"
    assert local.producer_max_batch_size == 1
    assert not local.idempotent_producer
    # Tansu's group joins take about half the session timeout (docs/ARCHITECTURE.md).
    assert 2_000 <= local.session_timeout_ms <= 6_000
    assert local.heartbeat_interval_ms * 3 <= local.session_timeout_ms
    assert standard.producer_max_batch_size is None
    assert standard.idempotent_producer
    assert standard.heartbeat_interval_ms * 3 <= standard.session_timeout_ms


def test_markdown_table_has_a_row_per_variable() -> None:
    table = markdown_table()
    for variable, _, _ in describe():
        assert f"| `{variable}` |" in table
    assert len(table.splitlines()) == len(known_env()) + 2


def _readme_settings_rows(readme: Path) -> dict[str, tuple[str, str]]:
    """variable -> (default, description) from the README's "## Settings" table."""
    text = readme.read_text(encoding="utf-8")
    section = text.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, tuple[str, str]] = {}
    for line in section.splitlines():
        match = re.fullmatch(r"\| `([A-Z][A-Z0-9_]*)` \| (.*?) \| (.*) \|", line)
        if match:
            variable, default, description = match.groups()
            assert variable not in rows, f"README lists {variable} twice"
            rows[variable] = (default, description)
    return rows


def assert_readme_settings_match_the_code(readme_path: Path) -> None:
    readme = _readme_settings_rows(readme_path)
    code = {}
    for row in markdown_table().splitlines()[2:]:
        match = re.fullmatch(r"\| `([A-Z][A-Z0-9_]*)` \| (.*?) \| (.*) \|", row)
        assert match, row
        code[match[1]] = (match[2], match[3])
    regenerate = "regenerate the table with `mindstream settings --markdown`"
    assert sorted(readme) == sorted(code), f"README variables differ from the code; {regenerate}"
    for variable, (default, description) in code.items():
        assert readme[variable][0] == default, (
            f"README default of {variable} is {readme[variable][0]}, the code's is {default}; "
            f"{regenerate}"
        )
        assert readme[variable][1] == description, (
            f"README describes {variable} as {readme[variable][1]!r}, the code as "
            f"{description!r}; {regenerate}"
        )
    # The table is in the code's declaration order, as `settings --markdown` prints it.
    assert list(readme) == list(code)


def test_readme_settings_table_matches_the_code() -> None:
    assert_readme_settings_match_the_code(README)


def test_readme_settings_check_catches_a_drifted_default_or_description(
    tmp_path: Path,
) -> None:
    drifted = README.read_text(encoding="utf-8").replace(
        "| `MINDSTREAM_BATCH_SIZE` | `1000` |", "| `MINDSTREAM_BATCH_SIZE` | `500` |"
    )
    assert drifted != README.read_text(encoding="utf-8")
    (tmp_path / "README.md").write_text(drifted, encoding="utf-8")
    with pytest.raises(AssertionError, match="MINDSTREAM_BATCH_SIZE is `500`"):
        assert_readme_settings_match_the_code(tmp_path / "README.md")
    reworded = README.read_text(encoding="utf-8").replace(
        "| Prefix of every Redis key mindstream writes. |", "| Prefix of Redis keys. |"
    )
    (tmp_path / "README.md").write_text(reworded, encoding="utf-8")
    with pytest.raises(AssertionError, match="README describes MINDSTREAM_REDIS_PREFIX"):
        assert_readme_settings_match_the_code(tmp_path / "README.md")
