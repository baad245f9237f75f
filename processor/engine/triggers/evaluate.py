"""Evaluating the rules: after an applied event (:func:`on_applied`), at a timer tick
(:func:`on_tick`), and which events can be skipped (:class:`Reactions`).

Each rule's part is its kind's (:mod:`.kinds`), looked up in :data:`.registry.KINDS`;
the firing rules (once per cycle, cool-downs, ``min_cycle``) are the same for all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from processor.engine.triggers.kinds.base import Applied
from processor.engine.triggers.registry import KINDS, TIMED
from processor.engine.triggers.rules import EventMatch, TriggerRule
from processor.engine.triggers.state import Context, _count, _counts, _fired, _snapshot
from processor.engine.vocabulary import (
    RECENT_TRIGGERS,
    Event,
    StageChange,
    Timer,
    TriggerFired,
    TriggerState,
)


@dataclass(frozen=True, slots=True)
class Reactions:
    """Which events can touch a trigger state without a stage change; one per journey model.

    Most events change no stage and match no rule (about three in four on the
    demo population); for those, :func:`on_applied` would rebuild the trigger
    state only to return an equal one. :meth:`quiet` says so in a few set
    lookups, and the engine then skips the evaluation. So does
    :meth:`quiet_after` for a stage change into a stage no rule watches (about
    two in five of the changes: the early stages). Property tests check that
    whenever either says quiet, the full evaluation agrees.
    """

    pairs: frozenset[tuple[str, str]]
    """(source, type) of every event a rule looks at: event rules, after and until events."""
    rules: Mapping[str, TriggerRule]
    stages: frozenset[str] = frozenset()
    """Stages whose entry a rule reacts to: stage_entered rules, absences after a stage."""

    @classmethod
    def of(cls, rules: tuple[TriggerRule, ...]) -> Reactions:
        matches: list[EventMatch] = []
        stages: set[str] = set()
        for rule in rules:
            kind = KINDS[rule.kind]
            matches += kind.events(rule)
            stages.update(kind.stages(rule))
        return cls(
            frozenset((m.source, m.type) for m in matches),
            {r.name: r for r in rules},
            frozenset(stages),
        )

    def quiet_after(
        self,
        state: TriggerState,
        stage: str,
        cycle: int,
        previous_cycle: int | None,
        event: Event,
        changes: tuple[StageChange, ...],
    ) -> bool:
        """Whether an event that made ``changes`` leaves ``state`` as it is and fires nothing.

        ``stage`` and ``cycle`` are the customer's after the changes. A change into a
        watched stage, one triggered by another event (a support contact placed after
        a purchase, judged again), or a new cycle while timers are armed is never quiet.
        """
        for change in changes:
            if change.to_stage in self.stages or change.evidence.event_id != event.event_id:
                return False
        if state.timers and previous_cycle != cycle:
            return False  # a new cycle drops every armed timer
        return self.quiet(state, stage, cycle, event.source, event.type)

    def quiet(self, state: TriggerState, stage: str, cycle: int, source: str, type_: str) -> bool:
        """Whether an event that changed no stage leaves ``state`` as it is and fires nothing."""
        if (source, type_) in self.pairs:
            return False
        for timer in state.timers:
            rule = self.rules.get(timer.rule)
            if rule is None or rule.until_activity or rule.after_stage not in (None, stage):
                return False  # re-armed by any activity, or cancelled now
        for fired in state.fired:  # noqa: SIM110 (all() would build a generator per event)
            if fired.cycle != cycle:
                return False
        return True


def on_applied(
    state: TriggerState,
    ctx: Context,
    *,
    previous_cycle: int | None,
    changes: tuple[StageChange, ...],
    event: Event,
    judged: list[tuple[Event, str]] | None = None,
) -> tuple[TriggerState, tuple[TriggerFired, ...]]:
    """Fire and (re-)arm or cancel timers after one event was applied.

    ``judged`` lists the events that event rules look at, each with the stage it
    is evidence of at its own time (default: the applied event, at the customer's
    stage now).
    """
    cycle = ctx.cycle
    timers: dict[str, Timer] = {}
    if previous_cycle is None or cycle == previous_cycle:  # a new cycle drops every absence
        for timer in state.timers:
            timers[timer.rule] = timer
    fired_now: list[TriggerFired] = []
    counts = _counts(state.fired, cycle)

    def fire(rule: TriggerRule, fired_at: datetime, reason: str, evidence: tuple[str, ...]) -> None:
        if cycle < rule.min_cycle:
            return
        occurrence = _count(counts, rule, cycle, fired_at)
        if occurrence:
            fired_now.append(
                _fired(rule, ctx, occurrence, fired_at, reason, evidence, caused_by=event.event_id)
            )

    stage = ctx.stage
    if judged is None:
        judged = [(event, stage)]
    kinds = KINDS
    applied = _new_applied(Applied, (event, stage, changes, judged, timers, fire))
    for rule in ctx.rules:  # in definition order: the order of the triggers fired
        kinds[rule.kind].on_applied(rule, applied)

    recent = state.recent
    if fired_now or len(recent) > RECENT_TRIGGERS:
        recent = (*recent, *fired_now)[-RECENT_TRIGGERS:]
    new = TriggerState(_by_deadline(timers), _snapshot(counts), recent)
    return new, tuple(fired_now)


_new_applied = tuple.__new__
"""Builds an :class:`Applied` in C: a NamedTuple's own ``__new__`` is a Python function."""


def _by_deadline(timers: dict[str, Timer]) -> tuple[Timer, ...]:
    """The armed timers in state order: by deadline, then rule name."""
    armed = tuple(timers.values())
    if len(armed) < 2:
        return armed
    return tuple(sorted(armed, key=_timer_order))


def _timer_order(timer: Timer) -> tuple[datetime, str]:
    return timer.deadline, timer.rule


def on_tick(
    state: TriggerState, ctx: Context, *, now: datetime, tick_id: str
) -> tuple[TriggerState, tuple[TriggerFired, ...]]:
    """Fire the timers whose deadline is at or before ``now``; each fires once."""
    due = [t for t in state.timers if t.deadline <= now]
    if not due:
        return state, ()
    rules = {r.name: r for r in ctx.rules}
    counts = _counts(state.fired, ctx.cycle)
    fired_now: list[TriggerFired] = []
    for timer in due:
        rule = rules.get(timer.rule)
        if rule is None or ctx.cycle < rule.min_cycle:
            continue
        occurrence = _count(counts, rule, ctx.cycle, timer.deadline)
        if not occurrence:
            continue
        fired_now.append(
            _fired(
                rule,
                ctx,
                occurrence,
                timer.deadline,
                TIMED.timer_reason(rule, ctx.stage),
                (timer.anchor,),
                caused_by=tick_id,
            )
        )
    new = TriggerState(
        timers=tuple(t for t in state.timers if t.deadline > now),
        fired=_snapshot(counts),
        recent=(*state.recent, *fired_now)[-RECENT_TRIGGERS:],
    )
    return new, tuple(fired_now)
