"""Trigger rules: a few well-timed signals for marketing automation, derived purely.

Three kinds, declared under ``[[triggers]]`` in the journey definition:

* ``stage_entered``: a customer enters ``stage`` (optionally only in cycle >= ``min_cycle``);
* ``event``: an event of one of ``events`` (source, type, optional ``where`` predicate on
  its properties) is applied while the customer is in ``stage``;
* ``absent``: after an anchor (entering ``after_stage``, or an ``after_event``) the
  customer does not progress out of the stage (or no ``until_event`` follows, or, with
  ``until = "activity"``, no event at all arrives) ``within`` a duration.

A trigger fires at most once per customer per cycle unless ``repeat = true``, and then
not again before its ``cooldown``. Everything here is evaluated in event time.
"""

from __future__ import annotations

import operator
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import msgspec

if TYPE_CHECKING:
    from processor.engine.core import Event, StageChange

Kind = Literal["stage_entered", "event", "absent"]

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
    name: str
    kind: Kind
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


_KEYS: dict[str, set[str]] = {
    "stage_entered": {"stage", "min_cycle"},
    "event": {"stage", "events", "min_cycle"},
    "absent": {"after_stage", "after_event", "until_event", "until", "within", "min_cycle"},
}


def _rule(
    doc: dict[str, Any],
    name: str,
    stages: tuple[str, ...],
    known_events: Callable[[str, str], bool],
    parse_duration: Callable[[str], timedelta],
) -> TriggerRule:
    kind = doc.get("when")
    if kind not in _KEYS:
        raise ValueError(f"'when' must be one of {sorted(_KEYS)}, not {kind!r}")
    allowed = _KEYS[kind] | {"name", "when", "repeat", "cooldown"}
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise ValueError(f"unknown keys {unknown} for when = {kind!r}; allowed: {sorted(allowed)}")

    def stage(key: str) -> str:
        value = doc.get(key)
        if value not in stages:
            raise ValueError(f"'{key}' {value!r} is not one of the stages {list(stages)}")
        return str(value)

    def event_match(value: Any, where: str) -> EventMatch:
        if not isinstance(value, dict) or set(value) - {"source", "type", "where"}:
            raise ValueError(f"{where}: expected {{ source = ..., type = ..., where = ... }}")
        source, event_type = value.get("source"), value.get("type")
        if not isinstance(source, str) or not isinstance(event_type, str):
            raise TypeError(f"{where}: 'source' and 'type' must be strings")
        if not known_events(source, event_type):
            raise ValueError(f"{where}: {source}/{event_type} is not evidence in this definition")
        predicate = value.get("where")
        if predicate is not None and not isinstance(predicate, str):
            raise TypeError(f"{where}: 'where' must be a string such as 'score <= 2'")
        return EventMatch(source, event_type, parse_predicate(predicate) if predicate else None)

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

    if kind == "stage_entered":
        return TriggerRule(kind="stage_entered", stage=stage("stage"), **common)
    if kind == "event":
        events = doc.get("events")
        if not isinstance(events, list) or not events:
            raise ValueError("'events' must be a non-empty array of { source, type, where }")
        matches = tuple(event_match(e, f"events[{j}]") for j, e in enumerate(events))
        return TriggerRule(kind="event", stage=stage("stage"), events=matches, **common)
    anchors = [k for k in ("after_stage", "after_event") if k in doc]
    if len(anchors) != 1:
        raise ValueError("an absence needs exactly one anchor: 'after_stage' or 'after_event'")
    if "within" not in doc:
        raise KeyError("missing 'within' (a duration such as '1h' or '72h')")
    until = doc.get("until")
    if until not in (None, "activity"):
        raise ValueError("'until' can only be \"activity\" (any event re-arms the timer)")
    if until and "until_event" in doc:
        raise ValueError("use either until = \"activity\" or 'until_event', not both")
    return TriggerRule(
        kind="absent",
        after_stage=stage("after_stage") if "after_stage" in doc else None,
        after_event=event_match(doc["after_event"], "after_event")
        if "after_event" in doc
        else None,
        until_event=event_match(doc["until_event"], "until_event")
        if "until_event" in doc
        else None,
        until_activity=until == "activity",
        within=parse_duration(doc["within"]),
        **common,
    )


# --------------------------------------------------------------------------- evaluation

TRIGGER_NAMESPACE = uuid.UUID("4c1f7a9e-2d6b-5e83-b0a4-747269676732")
"""Namespace of the trigger ids of v2 (content ids). Never change it.

v1's ids (customer, rule, cycle and occurrence) used 9d3e3c8a-4a1b-5c2e-8f61-747269676772."""

RECENT_TRIGGERS = 8
"""Triggers kept in the state, for re-emission on replay and for queries."""


class Timer(msgspec.Struct, frozen=True, gc=False):
    """An armed absence: fires at ``deadline`` (event time) unless cancelled first."""

    rule: str
    deadline: datetime
    anchor: str
    """The event id that armed (or last re-armed) the timer: the evidence."""


class Fired(msgspec.Struct, frozen=True, gc=False):
    """How often a rule fired in a cycle, and when last: enforces once-per-cycle and cool-downs."""

    rule: str
    cycle: int
    count: int
    last_at: datetime


class TriggerFired(msgspec.Struct, frozen=True, gc=False):
    """A trigger for marketing automation; the unit of output on ``journey.triggers``."""

    trigger: str
    customer_id: str
    cycle: int
    occurrence: int
    stage: str
    fired_at: datetime
    reason: str
    evidence: tuple[str, ...]
    model_name: str
    model_version: str
    caused_by: str
    """The applied event id or timer tick id whose processing fired it (for re-emission)."""

    @property
    def id(self) -> str:
        """Deterministic from everything the trigger says: see :func:`trigger_id`."""
        return trigger_id(self)


def trigger_id(fired: TriggerFired) -> str:
    """A UUIDv5 of the trigger's whole content (trigger.v2).

    The same trigger, re-emitted after a crash (a replayed event, or a replayed
    tick that finds the timer still armed), has the same id, so marketing
    automation dedupes on it and never acts twice. A different trigger never has
    it, even when a customer's state was lost (a recreated changelog, a wiped
    volume, an embedded broker that restarted) and the rule fires again in a
    history that starts over: ``uuid5(customer, rule, cycle, occurrence)`` (v1)
    would then have named two payloads.

    ``caused_by`` is left out: it is not on the wire, and for an absence it is
    the tick's random id, which a replay does not reproduce. Everything else is
    event time or derived from the input, so a replay gives the same content.
    """
    content = (
        fired.trigger,
        fired.customer_id,
        fired.cycle,
        fired.occurrence,
        fired.stage,
        fired.fired_at.astimezone(UTC).isoformat(),
        fired.reason,
        tuple(fired.evidence),
        fired.model_name,
        fired.model_version,
    )
    return str(uuid.uuid5(TRIGGER_NAMESPACE, repr(content)))


class TriggerState(msgspec.Struct, frozen=True, gc=False):
    """A customer's armed timers, firing counts of the current cycle, and recent triggers."""

    timers: tuple[Timer, ...] = ()
    fired: tuple[Fired, ...] = ()
    recent: tuple[TriggerFired, ...] = ()

    @property
    def next_deadline(self) -> datetime | None:
        return min((t.deadline for t in self.timers), default=None)


class Context(msgspec.Struct, frozen=True, gc=False):
    """What trigger evaluation needs to know about the customer and the model."""

    customer_id: str
    stage: str
    cycle: int
    rules: tuple[TriggerRule, ...]
    model_name: str
    model_version: str


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
        for rule in rules:
            matches += rule.events
            matches += [m for m in (rule.after_event, rule.until_event) if m is not None]
        stages = {r.stage for r in rules if r.kind == "stage_entered"}
        stages |= {r.after_stage for r in rules if r.after_stage is not None}
        return cls(
            frozenset((m.source, m.type) for m in matches),
            {r.name: r for r in rules},
            frozenset(s for s in stages if s is not None),
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
            if change.to_stage in self.stages or change.trigger.event_id != event.event_id:
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
        fired = state.fired
        return not fired or all(f.cycle == cycle for f in fired)


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
    timers = {t.rule: t for t in state.timers}
    fired_now: list[TriggerFired] = []
    counts = _Counts(state.fired, ctx.cycle)
    if previous_cycle is not None and ctx.cycle != previous_cycle:
        timers.clear()  # a new cycle: every absence of the old one is moot
    at = event.occurred_at

    def fire(rule: TriggerRule, fired_at: datetime, reason: str, evidence: tuple[str, ...]) -> None:
        if ctx.cycle < rule.min_cycle or not counts.may_fire(rule, fired_at):
            return
        fired_now.append(
            _fired(
                rule,
                ctx,
                counts.record(rule, fired_at),
                fired_at,
                reason,
                evidence,
                caused_by=event.event_id,
            )
        )

    stage = ctx.stage
    for rule in ctx.rules:
        kind = rule.kind
        if kind == "stage_entered":
            for change in changes:
                if change.to_stage == rule.stage:
                    fire(
                        rule,
                        change.changed_at,
                        f"entered {rule.stage} (cycle {change.cycle})",
                        (change.trigger.event_id,),
                    )
        elif kind == "event":
            for seen, stage_then in judged if judged is not None else [(event, stage)]:
                if stage_then != rule.stage:
                    continue
                for match in rule.events:
                    if match.matches(seen.source, seen.type, seen.properties):
                        detail = f" with {match.where}" if match.where else ""
                        reason = f"{seen.type}{detail} while in {rule.stage}"
                        fire(rule, seen.occurred_at, reason, (seen.event_id,))
                        break
        elif rule.after_stage is not None:
            if stage != rule.after_stage:
                if timers:
                    timers.pop(rule.name, None)  # progress (or a new cycle): cancelled
                continue
            entered = None
            for change in changes:
                if change.to_stage == stage:
                    entered = change  # the last entry counts
            if entered is not None:
                timers[rule.name] = Timer(
                    rule.name, entered.changed_at + rule.within, entered.trigger.event_id
                )
            elif rule.until_activity:
                armed = timers.get(rule.name)
                if armed is not None and at + rule.within > armed.deadline:
                    timers[rule.name] = Timer(rule.name, at + rule.within, event.event_id)
        else:
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

    recent = state.recent
    if fired_now or len(recent) > RECENT_TRIGGERS:
        recent = (*recent, *fired_now)[-RECENT_TRIGGERS:]
    new = TriggerState(timers=_by_deadline(timers), fired=counts.snapshot(), recent=recent)
    return new, tuple(fired_now)


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
    counts = _Counts(state.fired, ctx.cycle)
    fired_now: list[TriggerFired] = []
    for timer in due:
        rule = rules.get(timer.rule)
        if rule is None or ctx.cycle < rule.min_cycle or not counts.may_fire(rule, timer.deadline):
            continue
        fired_now.append(
            _fired(
                rule,
                ctx,
                counts.record(rule, timer.deadline),
                timer.deadline,
                _absence_reason(rule, ctx.stage),
                (timer.anchor,),
                caused_by=tick_id,
            )
        )
    new = TriggerState(
        timers=tuple(t for t in state.timers if t.deadline > now),
        fired=counts.snapshot(),
        recent=(*state.recent, *fired_now)[-RECENT_TRIGGERS:],
    )
    return new, tuple(fired_now)


def _absence_reason(rule: TriggerRule, stage: str) -> str:
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
        trigger=rule.name,
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
        self.by_rule = {f.rule: f for f in fired if f.cycle == cycle}
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
