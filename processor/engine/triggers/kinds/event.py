"""``when = "event"``: an event of one of ``events`` (source, type, optional ``where``
predicate on its properties) is applied while the customer is in ``stage``."""

from __future__ import annotations

from collections.abc import Iterable

from processor.engine.triggers.kinds.base import Applied, Kind
from processor.engine.triggers.rules import EventMatch, RuleDoc, TriggerRule


class EventKind(Kind):
    name = "event"
    keys = frozenset({"stage", "events", "min_cycle"})

    def parse(self, doc: RuleDoc) -> TriggerRule:
        events = doc.table.get("events")
        if not isinstance(events, list) or not events:
            raise ValueError("'events' must be a non-empty array of { source, type, where }")
        matches = tuple(doc.event_match(e, f"events[{j}]") for j, e in enumerate(events))
        return TriggerRule(kind=self.name, stage=doc.stage("stage"), events=matches, **doc.common)

    def on_applied(self, rule: TriggerRule, applied: Applied) -> None:
        for seen, stage_then in applied.judged:
            if stage_then != rule.stage:
                continue
            for match in rule.events:
                if match.matches(seen.source, seen.type, seen.properties):
                    detail = f" with {match.where}" if match.where else ""
                    reason = f"{seen.type}{detail} while in {rule.stage}"
                    applied.fire(rule, seen.occurred_at, reason, (seen.event_id,))
                    break

    def events(self, rule: TriggerRule) -> Iterable[EventMatch]:
        return rule.events


KIND: EventKind = EventKind()
