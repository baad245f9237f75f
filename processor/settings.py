"""One settings object for the whole service, from ``JOURNEY_*`` variables and CLI options.

Every field is documented once, here: the CLI builds its options and ``--help``
from these fields, and the README table lists the same. Precedence: CLI option,
then environment variable, then default.

Faust itself would read ``BROKER_URL``, ``APP_STORE``, ``WEB_PORT`` and others
from the environment; the app factory hands Faust an empty environment so that
only these settings apply.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Final

from processor.engine.vocabulary import Source


def _opt(default: Any, help: str, choices: tuple[str, ...] = ()) -> Any:
    return field(default=default, metadata={"help": help, "choices": choices})


class Secret:
    """A password or token: shown as ``***`` in repr, str, logs, ``--help`` and errors.

    Only :meth:`reveal` gives the value, so a secret reaches a socket or a
    comparison and nothing else by accident.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str = "") -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"

    def __str__(self) -> str:
        return "***" if self._value else ""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


SECURITY_PROTOCOLS: Final = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS: Final = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

DEFAULT_WEB_PEERS: Final = (
    "127.0.0.1,localhost,worker-*,journey-processor-*.journey-processor-headless,"
    "journey-processor-*.journey-processor-headless.*.svc.cluster.local"
)
"""Host patterns of workers that may be sent queries: loopback, docker-compose.yml's
``worker-N`` and the StatefulSet's ``<pod>.journey-processor-headless`` names."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Configuration of a worker and of the CLI commands that talk to the broker."""

    broker_url: str = _opt("kafka://127.0.0.1:9092", "Kafka bootstrap server(s), kafka://host:port")
    store_url: str = _opt(
        "rocksdb://",
        "Table store: rocksdb:// keeps state on local disk; memory:// replays the "
        "changelog on every start",
    )
    data_dir: Path = _opt(
        Path("journey-data"), "Directory for local table state; one per worker on a machine"
    )
    web_port: int = _opt(6066, "HTTP port of the worker (health, metrics, queries)")
    web_bind: str = _opt("0.0.0.0", "Address the worker's HTTP server binds to")
    web_host: str = _opt(
        "127.0.0.1",
        "Host name other workers use to reach this worker's HTTP port (query forwarding)",
    )
    app_id: str = _opt("journey-processor", "Application id: the consumer group and topic prefix")
    partitions: int = _opt(
        8, "Partitions of the topics the processor creates (fixed for the life of an app id)"
    )
    replication_factor: int = _opt(1, "Replication factor of the topics the processor creates")
    definition: Path | None = _opt(
        None, "Journey definition TOML file; empty means the built-in buying process"
    )
    clickstream_topic: str = _opt("journey.clickstream", "Input topic of clickstream events")
    research_topic: str = _opt("journey.research", "Input topic of research events")
    support_topic: str = _opt("journey.support", "Input topic of support events")
    stage_changes_topic: str = _opt("journey.stage-changes", "Output topic of stage changes")
    dead_letter_topic: str = _opt("journey.dead-letter", "Output topic of unusable input records")
    triggers_topic: str = _opt("journey.triggers", "Output topic of marketing triggers")
    erasure_requests_topic: str = _opt(
        "journey.erasure-requests",
        "Input topic of erasure requests (journey forget; key = customer_id)",
    )
    erasures_topic: str = _opt("journey.erasures", "Output topic of customer_erased confirmations")
    identities_topic: str = _opt(
        "journey.identities",
        "Output topic of identity_merged records (an anonymous id merged into a customer)",
    )
    timer_interval: float = _opt(
        1.0, "Seconds between checks for due absence timers (how late a timer may fire)"
    )
    session_timeout: float = _opt(
        10.0, "Consumer group session timeout in seconds (how fast a dead worker is noticed)"
    )
    recovery_consistency_check: str = _opt(
        "auto",
        "Refuse to start when local table state is ahead of its changelog (a recreated "
        "topic): true, false, or auto (on, except against the embedded broker, whose end "
        "offsets can lag one batch)",
        choices=("auto", "true", "false"),
    )
    broker_wait: float = _opt(
        60.0, "Seconds a starting worker waits for the broker before it exits non-zero"
    )
    stall_timeout: float = _opt(
        60.0,
        "Seconds a partition may sit with records waiting and its committed offset unchanged, "
        "or a table recovery read nothing with records left, before the worker stops itself "
        "(fail-stop; 0 turns the checks off)",
    )
    max_message_bytes: int = _opt(
        1_000_000,
        "Largest record the worker sends (bundles split below it; lowered to the broker's "
        "message.max.bytes when the broker reports one)",
    )
    max_event_bytes: int = _opt(
        65_536, "Largest input record accepted; larger ones are dead-lettered as too_large"
    )
    max_id_length: int = _opt(
        256, "Longest event_id or customer_id accepted (UTF-8 bytes); longer is invalid_field"
    )
    batch_max: int = _opt(1000, "Most input records the router takes at once")
    batch_window: float = _opt(
        0.05, "Seconds the router waits to fill a batch (an upper bound on added latency)"
    )
    log_level: str = _opt("info", "Log level: debug, info, warning, error")
    kafka_security_protocol: str = _opt(
        "PLAINTEXT", "How clients talk to Kafka: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
    )
    kafka_sasl_mechanism: str = _opt(
        "SCRAM-SHA-512", "SASL mechanism (SASL_* protocols): PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"
    )
    kafka_sasl_username: str = _opt("", "SASL user name")
    kafka_sasl_password: Secret = _opt(
        Secret(), "SASL password (prefer JOURNEY_KAFKA_SASL_PASSWORD_FILE); never logged"
    )
    kafka_sasl_password_file: Path | None = _opt(
        None, "File holding the SASL password (a mounted secret); wins over the variable"
    )
    kafka_ssl_ca_file: Path | None = _opt(
        None, "PEM file of the CA(s) that sign the brokers' certificates; empty: system CAs"
    )
    kafka_ssl_cert_file: Path | None = _opt(
        None, "PEM client certificate for mutual TLS (with JOURNEY_KAFKA_SSL_KEY_FILE)"
    )
    kafka_ssl_key_file: Path | None = _opt(None, "PEM private key of the client certificate")
    kafka_ssl_check_hostname: bool = _opt(
        True, "Check that the broker's certificate names the host connected to"
    )
    api_token: Secret = _opt(
        Secret(),
        "Bearer token that /customers and /funnel require (prefer JOURNEY_API_TOKEN_FILE); "
        "empty: those endpoints answer 401",
    )
    api_token_file: Path | None = _opt(
        None, "File holding the API token (a mounted secret); wins over the variable"
    )
    metrics_auth: bool = _opt(False, "Require the API token on /metrics too")
    web_peers: str = _opt(
        DEFAULT_WEB_PEERS,
        "Comma-separated host patterns (fnmatch; host or host:port) of workers this one "
        "may forward queries to, besides holding partitions in the current assignment",
    )
    web_tls_cert_file: Path | None = _opt(
        None, "PEM certificate for HTTPS on the web port (with JOURNEY_WEB_TLS_KEY_FILE)"
    )
    web_tls_key_file: Path | None = _opt(None, "PEM private key of the web certificate")
    web_tls_ca_file: Path | None = _opt(
        None, "PEM CA file to verify peers' HTTPS certificates; empty: system CAs"
    )
    allowed_lateness: float = _opt(
        2.0,
        "Seconds an event may trail the newest event of its own input partition and still be "
        "applied in event-time order; later ones are applied at once and flagged late",
    )
    idle_timeout: float = _opt(
        1.0,
        "Seconds an input partition must be caught up and quiet before it stops holding back "
        "the event-time clock (its watermark then follows the wall clock)",
    )
    max_held_events: int = _opt(
        20000,
        "Most events held for event-time ordering per partition; beyond it the oldest are "
        "released early (counted)",
    )
    max_clock_skew: float = _opt(
        300.0,
        "Seconds an event or tick may be dated ahead of the wall clock; anything further "
        "ahead never moves a clock (it is still applied for its own customer)",
    )

    @property
    def bootstrap_servers(self) -> str:
        """The broker URL as aiokafka wants it: host:port[,host:port]."""
        return ",".join(
            part.removeprefix("kafka://").strip() for part in self.broker_url.split(";")
        )

    def kafka_sasl_password_value(self) -> str:
        """The SASL password: from its file if one is set (re-read each call), else the variable."""
        return _secret_value(self.kafka_sasl_password, self.kafka_sasl_password_file)

    def api_token_value(self) -> str:
        """The API token: from its file if one is set, else the variable."""
        return _secret_value(self.api_token, self.api_token_file)

    @property
    def web_scheme(self) -> str:
        return "https" if self.web_tls_cert_file is not None else "http"

    @property
    def source_topics(self) -> dict[str, Source]:
        """Input topic name to source, the key of the journey definition's evidence."""
        return {
            self.clickstream_topic: "clickstream",
            self.research_topic: "research",
            self.support_topic: "support",
        }

    @property
    def events_topic(self) -> str:
        """The internal topic that carries valid events, partitioned by customer_id."""
        return f"{self.app_id}-events-by-customer"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        return cls().with_env(os.environ if env is None else env)

    def with_env(self, env: Mapping[str, str]) -> Settings:
        changes = {}
        for f in fields(self):
            raw = env.get(env_name(f.name))
            if raw is not None:
                changes[f.name] = _convert(f.name, f.type, raw)
        return replace(self, **changes)

    def environment(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """An environment for a child process that runs with exactly these settings.

        ``base`` (default: this process's environment) minus any inherited
        ``JOURNEY_*`` variables, plus one variable per setting. A secret that
        comes from a file is passed as the file's path, never as its value.
        """
        env = {
            k: v
            for k, v in (os.environ if base is None else base).items()
            if not k.startswith("JOURNEY_")
        }
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Secret):
                if value and getattr(self, f"{f.name}_file") is None:
                    env[env_name(f.name)] = value.reveal()
            elif value is not None:
                env[env_name(f.name)] = str(value)
        return env

    def with_args(self, args: argparse.Namespace) -> Settings:
        changes = {}
        for f in fields(self):
            raw = getattr(args, f.name, None)
            if raw is not None:
                changes[f.name] = _convert(f.name, f.type, raw)
        return replace(self, **changes)


def _secret_value(secret: Secret, path: Path | None) -> str:
    if path is None:
        return secret.reveal()
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SystemExit(f"cannot read secret file {path}: {exc.strerror}") from None


def env_name(field_name: str) -> str:
    return f"JOURNEY_{field_name.upper()}"


_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _convert(name: str, kind: Any, raw: str) -> Any:
    kind = str(kind)
    choices = Settings.__dataclass_fields__[name].metadata.get("choices", ())
    try:
        if choices:
            value = raw.strip().lower()
            if value not in choices:
                raise ValueError(f"expected one of {list(choices)}, not {raw!r}")
            return value
        if kind == "bool":
            if raw.strip().lower() not in _BOOLS:
                raise ValueError(f"expected one of {sorted(_BOOLS)}, not {raw!r}")
            return _BOOLS[raw.strip().lower()]
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "Path":
            return Path(raw)
        if kind == "Path | None":
            return Path(raw) if raw else None
        if kind == "Secret":
            return Secret(raw)
        return raw
    except ValueError as exc:
        raise SystemExit(f"{env_name(name)} / --{name.replace('_', '-')}: {exc}") from exc


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one option per setting; each option's help names its variable and default."""
    group = parser.add_argument_group("settings (each also from a JOURNEY_* variable)")
    for f in fields(Settings):
        default = f.default
        group.add_argument(
            f"--{f.name.replace('_', '-')}",
            dest=f.name,
            default=None,
            metavar=env_name(f.name).removeprefix("JOURNEY_"),
            help=f"{f.metadata['help']} [env {env_name(f.name)}; default: {default}]",
        )


def settings_table() -> str:
    """The README's configuration table, generated so it cannot drift from the code."""
    rows = ["| Variable | CLI option | Default | Meaning |", "|---|---|---|---|"]
    for f in fields(Settings):
        default = "" if f.default is None else f.default
        rows.append(
            f"| `{env_name(f.name)}` | `--{f.name.replace('_', '-')}` | `{default}` "
            f"| {f.metadata['help']} |"
        )
    return "\n".join(rows)
