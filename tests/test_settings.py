"""The settings object: environment, CLI options, and the README table that documents them."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

import pytest

from processor.settings import Settings, add_settings_arguments, env_name, settings_table

README = Path(__file__).resolve().parents[1] / "README.md"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s.broker_url == "kafka://127.0.0.1:9092"
    assert s.store_url == "rocksdb://"
    assert s.web_port == 6066
    assert s.app_id == "journey-processor"
    assert s.partitions == 8
    assert s.definition is None
    assert s.source_topics == {
        "journey.clickstream": "clickstream",
        "journey.research": "research",
        "journey.support": "support",
    }


def test_environment_then_cli_option_wins() -> None:
    env = {"JOURNEY_WEB_PORT": "7000", "JOURNEY_PARTITIONS": "3", "JOURNEY_APP_ID": "from-env"}
    s = Settings.from_env(env).with_args(parse("--app-id", "from-cli"))
    assert (s.web_port, s.partitions, s.app_id) == (7000, 3, "from-cli")


def test_types_are_converted() -> None:
    s = Settings.from_env(
        {
            "JOURNEY_SESSION_TIMEOUT": "6.5",
            "JOURNEY_DATA_DIR": "/tmp/x",
            "JOURNEY_DEFINITION": "my.toml",
            "JOURNEY_RECOVERY_CONSISTENCY_CHECK": "false",
        }
    )
    assert s.session_timeout == 6.5
    assert s.data_dir == Path("/tmp/x")
    assert s.definition == Path("my.toml")
    assert s.recovery_consistency_check == "false"
    assert Settings().recovery_consistency_check == "auto"
    assert Settings.from_env({"JOURNEY_DEFINITION": ""}).definition is None


@pytest.mark.parametrize(
    ("name", "value"),
    [("JOURNEY_WEB_PORT", "http"), ("JOURNEY_RECOVERY_CONSISTENCY_CHECK", "maybe")],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(SystemExit, match=name):
        Settings.from_env({name: value})


def test_bootstrap_servers_from_broker_url() -> None:
    s = Settings(broker_url="kafka://a:9092;kafka://b:9093")
    assert s.bootstrap_servers == "a:9092,b:9093"


def test_every_setting_is_an_option_and_a_variable() -> None:
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser)
    text = parser.format_help()
    for f in fields(Settings):
        assert f"--{f.name.replace('_', '-')}" in text
        assert env_name(f.name) in text


def test_readme_table_is_current() -> None:
    assert settings_table() in README.read_text(encoding="utf-8"), "run `make docs`"


def test_environment_for_a_child_has_exactly_these_settings() -> None:
    s = Settings(web_port=7001, definition=None)
    env = s.environment({"PATH": "/bin", "JOURNEY_APP_ID": "inherited", "BROKER_URL": "x"})
    assert env["PATH"] == "/bin" and env["BROKER_URL"] == "x"
    assert env["JOURNEY_APP_ID"] == "journey-processor"
    assert env["JOURNEY_WEB_PORT"] == "7001"
    assert "JOURNEY_DEFINITION" not in env
    assert Settings.from_env(env) == s
