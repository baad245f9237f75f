"""What trigger evaluation works with: the customer's context, and the firing counts.

The trigger state itself, the triggers fired and their ids are value types of the
whole engine, in :mod:`processor.engine.vocabulary`; they are imported here."""

from __future__ import annotations

import operator
from datetime import datetime

import msgspec

from processor.engine.triggers.rules import TriggerRule
from processor.engine.vocabulary import (
    Fired,
    TriggerFired,
)


class Context(msgspec.Struct, frozen=True, gc=False):
    """What trigger evaluation needs to know about the customer and the model."""

    customer_id: str
    stage: str
    cycle: int
    rules: tuple[TriggerRule, ...]
    model_name: str
    model_version: str


def _fired(
    rule: TriggerRule,
    ctx: Context,
    occurrence: int,
    fired_at: datetime,
    reason: str,
    evidence: tuple[str, ...],
    *,
    caused_by: str,
) -> TriggerFired:
    return TriggerFired(  # positional (in field order): cheaper than keywords
        rule.name,
        ctx.customer_id,
        ctx.cycle,
        occurrence,
        ctx.stage,
        fired_at,
        reason,
        evidence,
        ctx.model_name,
        ctx.model_version,
        caused_by,
    )


def _counts(fired: tuple[Fired, ...], cycle: int) -> dict[str, Fired]:
    """Firing counts of the current cycle by rule (older cycles' counts are dropped).

    A plain dict and functions rather than a class: every evaluation builds one, and an
    instance cost about a tenth of an evaluation.
    """
    counts: dict[str, Fired] = {}
    for f in fired:
        if f.cycle == cycle:
            counts[f.rule] = f
    return counts


def _count(counts: dict[str, Fired], rule: TriggerRule, cycle: int, at: datetime) -> int:
    """Record a firing of ``rule`` at ``at`` and return its occurrence in the cycle; 0 (and
    nothing recorded) if it may not fire: once per cycle, or ``repeat`` after the cool-down."""
    seen = counts.get(rule.name)
    if seen is None:
        count = 1
    elif rule.repeat and at - seen.last_at >= rule.cooldown:
        count = seen.count + 1
    else:
        return 0
    counts[rule.name] = Fired(rule.name, cycle, count, at)
    return count


def _snapshot(counts: dict[str, Fired]) -> tuple[Fired, ...]:
    """The counts in state order: by rule name."""
    fired = tuple(counts.values())
    if len(fired) < 2:
        return fired
    return tuple(sorted(fired, key=_RULE_NAME))


_RULE_NAME = operator.attrgetter("rule")
