"""Kafka client security from the settings: kwargs, TLS context, secrets kept out of sight."""

from __future__ import annotations

import argparse
import ssl
from dataclasses import replace
from pathlib import Path

import faust
import pytest
from aiokafka import errors as kafka_errors

from processor.app.factory import broker_credentials
from processor.kafka_security import (
    KafkaSettingsError,
    client_kwargs,
    explain,
    ssl_context,
    validate,
)
from processor.settings import Secret, Settings, add_settings_arguments

PASSWORD = "pa55-w0rd-xyz"


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "password"
    path.write_text(PASSWORD + "\n")
    return path


def sasl_ssl(password_file: Path) -> Settings:
    return Settings(
        broker_url="kafka://a:9093;kafka://b:9093",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="journey",
        kafka_sasl_password_file=password_file,
    )


def test_plaintext_by_default() -> None:
    assert client_kwargs(Settings()) == {
        "bootstrap_servers": "127.0.0.1:9092",
        "security_protocol": "PLAINTEXT",
    }
    assert broker_credentials(Settings()) is None


def test_sasl_ssl_with_a_password_file(password_file: Path) -> None:
    kwargs = client_kwargs(sasl_ssl(password_file))
    assert kwargs["bootstrap_servers"] == "a:9093,b:9093"
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-256"
    assert kwargs["sasl_plain_username"] == "journey"
    assert kwargs["sasl_plain_password"] == PASSWORD  # the file's content, without the newline
    context = kwargs["ssl_context"]
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_faust_gets_the_same_credentials(password_file: Path) -> None:
    credentials = broker_credentials(sasl_ssl(password_file))
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.mechanism.value == "SCRAM-SHA-256"
    assert (credentials.username, credentials.password) == ("journey", PASSWORD)
    assert PASSWORD not in repr(credentials)
    tls = broker_credentials(Settings(kafka_security_protocol="SSL"))
    assert isinstance(tls, faust.SSLCredentials)


def test_hostname_checking_can_be_turned_off_explicitly() -> None:
    context = ssl_context(Settings(kafka_security_protocol="SSL", kafka_ssl_check_hostname=False))
    assert context is not None and not context.check_hostname
    assert ssl_context(Settings(kafka_security_protocol="SASL_PLAINTEXT")) is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kafka_security_protocol": "TLS"}, "JOURNEY_KAFKA_SECURITY_PROTOCOL"),
        ({"kafka_sasl_mechanism": "GSSAPI"}, "JOURNEY_KAFKA_SASL_MECHANISM"),
        ({"kafka_sasl_username": ""}, "JOURNEY_KAFKA_SASL_USERNAME"),
        ({"kafka_sasl_password_file": None}, "JOURNEY_KAFKA_SASL_PASSWORD_FILE"),
        ({"kafka_ssl_cert_file": Path("/etc/hostname")}, "JOURNEY_KAFKA_SSL_KEY_FILE"),
        ({"kafka_ssl_ca_file": Path("/nonexistent/ca.pem")}, "no such file"),
    ],
)
def test_inconsistent_settings_are_refused_without_the_password(
    password_file: Path, changes: dict[str, object], message: str
) -> None:
    settings = replace(sasl_ssl(password_file), **changes)  # type: ignore[arg-type]
    with pytest.raises(KafkaSettingsError, match=message) as caught:
        validate(settings)
    assert PASSWORD not in str(caught.value)


def test_a_secret_never_shows(password_file: Path) -> None:
    settings = Settings.from_env(
        {"JOURNEY_KAFKA_SASL_PASSWORD": PASSWORD, "JOURNEY_API_TOKEN": PASSWORD}
    )
    assert settings.kafka_sasl_password == Secret(PASSWORD)
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings)
    assert "***" in repr(settings.api_token)
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser)
    assert PASSWORD not in parser.format_help()
    # A child gets the value only where there is no file to pass instead.
    assert settings.environment({})["JOURNEY_KAFKA_SASL_PASSWORD"] == PASSWORD
    from_file = sasl_ssl(password_file)
    env = from_file.environment({})
    assert "JOURNEY_KAFKA_SASL_PASSWORD" not in env
    assert env["JOURNEY_KAFKA_SASL_PASSWORD_FILE"] == str(password_file)
    assert Settings.from_env(env).kafka_sasl_password_value() == PASSWORD


def test_an_unreadable_secret_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(SystemExit, match="nope"):
        Settings(api_token_file=missing).api_token_value()


def test_failures_are_explained_in_one_line_without_secrets(password_file: Path) -> None:
    settings = sasl_ssl(password_file)
    cases = {
        "SASL authentication failed for user 'journey'": kafka_errors.SaslAuthenticationFailed(
            "bad"
        ),
        "rejected the credentials": KeyError("v"),
        "does not offer SASL SCRAM-SHA-256": kafka_errors.UnsupportedSaslMechanismError("x"),
        "TLS handshake failed": ssl.SSLError(1, "WRONG_VERSION_NUMBER"),
    }
    for expected, exc in cases.items():
        line = explain(exc, settings)
        assert expected in line and "\n" not in line and PASSWORD not in line
    plain = explain(kafka_errors.KafkaConnectionError("Connection at x closed"), Settings())
    assert "JOURNEY_KAFKA_SECURITY_PROTOCOL" in plain
