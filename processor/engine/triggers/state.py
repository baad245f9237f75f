"""A customer's trigger state, the triggers it fires, and their ids."""

from __future__ import annotations

import operator
import uuid
from datetime import UTC, datetime

import msgspec

from processor.engine.triggers.rules import TriggerRule

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
