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
    return TriggerFired(
        rule=rule.name,
        customer_id=ctx.customer_id,
        cycle=ctx.cycle,
        occurrence=occurrence,
        stage=ctx.stage,
        fired_at=fired_at,
        reason=reason,
        evidence=evidence,
        model_name=ctx.model_name,
        model_version=ctx.model_version,
        caused_by=caused_by,
    )


class _Counts:
    """Firing counts of the current cycle (older cycles' counts are dropped)."""

    def __init__(self, fired: tuple[Fired, ...], cycle: int) -> None:
        self.by_rule = {f.rule: f for f in fired if f.cycle == cycle} if fired else {}
        self.cycle = cycle

    def may_fire(self, rule: TriggerRule, at: datetime) -> bool:
        seen = self.by_rule.get(rule.name)
        if seen is None:
            return True
        return rule.repeat and at - seen.last_at >= rule.cooldown

    def record(self, rule: TriggerRule, at: datetime) -> int:
        seen = self.by_rule.get(rule.name)
        count = 1 if seen is None else seen.count + 1
        self.by_rule[rule.name] = Fired(rule.name, self.cycle, count, at)
        return count

    def snapshot(self) -> tuple[Fired, ...]:
        counts = tuple(self.by_rule.values())
        if len(counts) < 2:
            return counts
        return tuple(sorted(counts, key=_RULE_NAME))


_RULE_NAME = operator.attrgetter("rule")
