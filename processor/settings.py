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
from typing import Any


def _opt(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


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
    timer_interval: float = _opt(
        1.0, "Seconds between checks for due absence timers (how late a timer may fire)"
    )
    session_timeout: float = _opt(
        10.0, "Consumer group session timeout in seconds (how fast a dead worker is noticed)"
    )
    recovery_consistency_check: bool = _opt(
        True,
        "Refuse to start when local table state is ahead of its changelog (a recreated "
        "topic). Set false with the embedded broker, whose end offsets can lag one batch",
    )
    batch_max: int = _opt(1000, "Most input records the router takes at once")
    batch_window: float = _opt(
        0.05, "Seconds the router waits to fill a batch (an upper bound on added latency)"
    )
    log_level: str = _opt("info", "Log level: debug, info, warning, error")
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

    @property
    def source_topics(self) -> dict[str, str]:
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
        ``JOURNEY_*`` variables, plus one variable per setting.
        """
        env = {
            k: v
            for k, v in (os.environ if base is None else base).items()
            if not k.startswith("JOURNEY_")
        }
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                env[env_name(f.name)] = str(value)
        return env

    def with_args(self, args: argparse.Namespace) -> Settings:
        changes = {}
        for f in fields(self):
            raw = getattr(args, f.name, None)
            if raw is not None:
                changes[f.name] = _convert(f.name, f.type, raw)
        return replace(self, **changes)


def env_name(field_name: str) -> str:
    return f"JOURNEY_{field_name.upper()}"


_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _convert(name: str, kind: Any, raw: str) -> Any:
    kind = str(kind)
    try:
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
