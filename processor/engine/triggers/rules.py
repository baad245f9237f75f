"""What a trigger rule is, and the parsing helpers every kind shares.

The kinds (:mod:`.kinds`) build their rules from a :class:`RuleDoc`. ``parse_rules`` is
in :mod:`.parse`, not here: it dispatches through the registry, which imports the kinds,
which import this module. Keeping the rule types below both leaves no import cycle.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
}
_PREDICATE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|==|!=|<|>)\s*(.+?)\s*$")


@dataclass(frozen=True, slots=True)
class Predicate:
    """``property op literal``, e.g. ``score <= 2``; a missing or uncomparable property fails."""

    field: str
    op: str
    value: Any

    def holds(self, properties: Mapping[str, Any]) -> bool:
        if self.field not in properties:
            return False
        try:
            return _COMPARE[self.op](properties[self.field], self.value)
        except TypeError:
            return False

    def __str__(self) -> str:
        return f"{self.field} {self.op} {self.value!r}"


@dataclass(frozen=True, slots=True)
class EventMatch:
    source: str
    type: str
    where: Predicate | None = None

    def matches(self, source: str, event_type: str, properties: Mapping[str, Any]) -> bool:
        return (
            source == self.source
            and event_type == self.type
            and (self.where is None or self.where.holds(properties))
        )


@dataclass(frozen=True, slots=True)
class TriggerRule:
    """One ``[[triggers]]`` table, validated; which fields are set depends on ``kind``."""

    name: str
    kind: str
    """The ``when`` value: a key of :data:`~processor.engine.triggers.registry.KINDS`."""
    stage: str | None = None
    min_cycle: int = 1
    events: tuple[EventMatch, ...] = ()
    after_stage: str | None = None
    after_event: EventMatch | None = None
    until_event: EventMatch | None = None
    until_activity: bool = False
    within: timedelta = timedelta(0)
    repeat: bool = False
    cooldown: timedelta = timedelta(0)


def parse_predicate(text: str) -> Predicate:
    match = _PREDICATE.match(text)
    if match is None:
        raise ValueError(f"not a predicate: {text!r} (use 'field op value', as in 'score <= 2')")
    field, op, literal = match.groups()
    value: Any
    if literal.startswith(("'", '"')) and literal.endswith(literal[0]) and len(literal) >= 2:
        value = literal[1:-1]
    elif literal in ("true", "false"):
        value = literal == "true"
    else:
        try:
            value = int(literal)
        except ValueError:
            try:
                value = float(literal)
            except ValueError:
                message = f"{text!r}: {literal!r} is not a number, bool or quoted string"
                raise ValueError(message) from None
    return Predicate(field, op, value)


@dataclass(frozen=True, slots=True)
class RuleDoc:
    """One ``[[triggers]]`` table while it is parsed, with what its values may name.

    ``common`` holds the keys every kind has (name, min_cycle, repeat, cooldown),
    already checked; a kind passes them on: ``TriggerRule(kind=..., ..., **doc.common)``.
    """

    table: Mapping[str, Any]
    common: Mapping[str, Any]
    stages: tuple[str, ...]
    known_events: Callable[[str, str], bool]
    parse_duration: Callable[[str], timedelta]

    def stage(self, key: str) -> str:
        value = self.table.get(key)
        if value not in self.stages:
            raise ValueError(f"'{key}' {value!r} is not one of the stages {list(self.stages)}")
        return str(value)

    def event_match(self, value: Any, where: str) -> EventMatch:
        if not isinstance(value, dict) or set(value) - {"source", "type", "where"}:
            raise ValueError(f"{where}: expected {{ source = ..., type = ..., where = ... }}")
        source, event_type = value.get("source"), value.get("type")
        if not isinstance(source, str) or not isinstance(event_type, str):
            raise TypeError(f"{where}: 'source' and 'type' must be strings")
        if not self.known_events(source, event_type):
            raise ValueError(f"{where}: {source}/{event_type} is not evidence in this definition")
        predicate = value.get("where")
        if predicate is not None and not isinstance(predicate, str):
            raise TypeError(f"{where}: 'where' must be a string such as 'score <= 2'")
        return EventMatch(source, event_type, parse_predicate(predicate) if predicate else None)
