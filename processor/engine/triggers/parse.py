"""Reading ``[[triggers]]``: the keys every rule has here, the rest by the rule's kind."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from processor.engine.triggers.registry import KINDS
from processor.engine.triggers.rules import RuleDoc, TriggerRule


def parse_rules(
    raw: Any,
    *,
    stages: tuple[str, ...],
    known_events: Callable[[str, str], bool],
    parse_duration: Callable[[str], timedelta],
) -> tuple[TriggerRule, ...]:
    """Validate ``[[triggers]]``; raise ValueError naming the rule and the problem."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise TypeError("'triggers' must be an array of tables ([[triggers]])")
    rules: list[TriggerRule] = []
    for i, doc in enumerate(raw):
        if not isinstance(doc, dict):
            raise TypeError(f"triggers[{i}] must be a table")
        name = doc.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"triggers[{i}]: 'name' must be a non-empty string")
        try:
            rules.append(_rule(doc, name, stages, known_events, parse_duration))
        except (KeyError, TypeError, ValueError) as exc:
            message = exc.args[0] if exc.args else str(exc)
            raise ValueError(f"trigger {name!r}: {message}") from exc
    names = [r.name for r in rules]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"trigger names must be unique: {duplicates}")
    return tuple(rules)


def _rule(
    doc: dict[str, Any],
    name: str,
    stages: tuple[str, ...],
    known_events: Callable[[str, str], bool],
    parse_duration: Callable[[str], timedelta],
) -> TriggerRule:
    when: Any = doc.get("when")
    kind = KINDS.get(when)
    if kind is None:
        raise ValueError(f"'when' must be one of {sorted(KINDS)}, not {when!r}")
    allowed = kind.keys | {"name", "when", "repeat", "cooldown"}
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise ValueError(f"unknown keys {unknown} for when = {when!r}; allowed: {sorted(allowed)}")

    min_cycle = doc.get("min_cycle", 1)
    if not isinstance(min_cycle, int) or min_cycle < 1:
        raise ValueError("'min_cycle' must be an integer >= 1")
    repeat = doc.get("repeat", False)
    if not isinstance(repeat, bool):
        raise TypeError("'repeat' must be true or false")
    cooldown = parse_duration(doc["cooldown"]) if "cooldown" in doc else timedelta(0)
    if cooldown and not repeat:
        raise ValueError("'cooldown' only applies with repeat = true")
    common: dict[str, Any] = {
        "name": name,
        "min_cycle": min_cycle,
        "repeat": repeat,
        "cooldown": cooldown,
    }
    return kind.parse(RuleDoc(doc, common, stages, known_events, parse_duration))
