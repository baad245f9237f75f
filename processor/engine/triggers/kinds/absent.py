"""``when = "absent"``: after an anchor (entering ``after_stage``, or an ``after_event``)
the customer does not progress out of the stage (or no ``until_event`` follows, or, with
``until = "activity"``, no event at all arrives) ``within`` a duration.

The anchor arms a :class:`~processor.engine.triggers.state.Timer`; the timer tick
(:func:`~processor.engine.triggers.on_tick`) fires it unless an event cancelled it first.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from processor.engine.triggers.kinds.base import Applied, Kind
from processor.engine.triggers.rules import EventMatch, RuleDoc, TriggerRule
from processor.engine.vocabulary import Timer


class Absent(Kind):
    name = "absent"
    keys = frozenset({"after_stage", "after_event", "until_event", "until", "within", "min_cycle"})

    def parse(self, doc: RuleDoc) -> TriggerRule:
        table = doc.table
        anchors = [k for k in ("after_stage", "after_event") if k in table]
        if len(anchors) != 1:
            raise ValueError("an absence needs exactly one anchor: 'after_stage' or 'after_event'")
        if "within" not in table:
            raise KeyError("missing 'within' (a duration such as '1h' or '72h')")
        until = table.get("until")
        if until not in (None, "activity"):
            raise ValueError("'until' can only be \"activity\" (any event re-arms the timer)")
        if until and "until_event" in table:
            raise ValueError("use either until = \"activity\" or 'until_event', not both")
        return TriggerRule(
            kind=self.name,
            after_stage=doc.stage("after_stage") if "after_stage" in table else None,
            after_event=doc.event_match(table["after_event"], "after_event")
            if "after_event" in table
            else None,
            until_event=doc.event_match(table["until_event"], "until_event")
            if "until_event" in table
            else None,
            until_activity=until == "activity",
            within=doc.parse_duration(table["within"]),
            **doc.common,
        )

    def on_applied(self, rule: TriggerRule, applied: Applied) -> None:
        event, stage, timers = applied.event, applied.stage, applied.timers
        at = event.occurred_at
        if rule.after_stage is not None:
            if stage != rule.after_stage:
                if timers:
                    timers.pop(rule.name, None)  # progress (or a new cycle): cancelled
                return
            entered = None
            for change in applied.changes:
                if change.to_stage == stage:
                    entered = change  # the last entry counts
            if entered is not None:
                timers[rule.name] = Timer(
                    rule.name, entered.changed_at + rule.within, entered.evidence.event_id
                )
            elif rule.until_activity:
                armed = timers.get(rule.name)
                if armed is not None and at + rule.within > armed.deadline:
                    timers[rule.name] = Timer(rule.name, at + rule.within, event.event_id)
            return
        assert rule.after_event is not None
        armed = timers.get(rule.name)
        if rule.after_event.matches(event.source, event.type, event.properties):
            if armed is None or at + rule.within > armed.deadline:
                timers[rule.name] = Timer(rule.name, at + rule.within, event.event_id)
        elif armed is not None:
            anchor_at = armed.deadline - rule.within
            if (
                rule.until_event is not None
                and rule.until_event.matches(event.source, event.type, event.properties)
                and at >= anchor_at
            ):
                timers.pop(rule.name)
            elif rule.until_activity and at + rule.within > armed.deadline:
                timers[rule.name] = Timer(rule.name, at + rule.within, event.event_id)

    def stages(self, rule: TriggerRule) -> Iterable[str]:
        return () if rule.after_stage is None else (rule.after_stage,)

    def events(self, rule: TriggerRule) -> Iterable[EventMatch]:
        return tuple(m for m in (rule.after_event, rule.until_event) if m is not None)

    def timer_reason(self, rule: TriggerRule, stage: str) -> str:
        """The reason of the trigger a due timer of ``rule`` fires; ``stage`` is the customer's."""
        within = _human(rule.within)
        if rule.until_event is not None and rule.after_event is not None:
            return f"no {rule.until_event.type} within {within} of {rule.after_event.type}"
        if rule.until_activity:
            return f"no activity for {within} in {stage}"
        return f"no progress out of {rule.after_stage} within {within}"


def _human(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0 and seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds} seconds"


KIND: Absent = Absent()
