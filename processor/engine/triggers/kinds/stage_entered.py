"""``when = "stage_entered"``: a customer enters ``stage`` (optionally only in cycle >=
``min_cycle``)."""

from __future__ import annotations

from collections.abc import Iterable

from processor.engine.triggers.kinds.base import Applied, Kind
from processor.engine.triggers.rules import RuleDoc, TriggerRule


class StageEntered(Kind):
    name = "stage_entered"
    keys = frozenset({"stage", "min_cycle"})

    def parse(self, doc: RuleDoc) -> TriggerRule:
        return TriggerRule(kind=self.name, stage=doc.stage("stage"), **doc.common)

    def on_applied(self, rule: TriggerRule, applied: Applied) -> None:
        for change in applied.changes:
            if change.to_stage == rule.stage:
                applied.fire(
                    rule,
                    change.changed_at,
                    f"entered {rule.stage} (cycle {change.cycle})",
                    (change.evidence.event_id,),
                )

    def stages(self, rule: TriggerRule) -> Iterable[str]:
        return () if rule.stage is None else (rule.stage,)


KIND: StageEntered = StageEntered()
