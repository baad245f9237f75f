"""The stage engine: a pure function from (state, event, model) to (state, outputs).

Nothing here does I/O or imports faust or aiokafka, so every rule of the buying
process is tested in microseconds and the Faust shell stays a thin loop around
:func:`apply`.

The rules (see the README for the diagram):

1. A customer's first applied evidence creates its state at that stage, cycle 1,
   and emits a stage change from ``None``.
2. Within a cycle stages only move forward. Evidence for a later stage moves the
   customer straight there (one change, old stage to new); evidence for the same
   or an earlier stage changes nothing.
3. A customer at or past the purchase stage starts a new cycle when (a) another
   order completes (to purchase), or (b) pre-purchase evidence occurred more than
   ``new_cycle_after`` after the cycle's purchase (to that evidence's stage).
4. An event id already applied for the customer changes nothing. Its stage
   changes are re-emitted, identical, so that a crash between writing state and
   sending output never loses a change (at-least-once, effectively-once).

Event time decides, never arrival order: support evidence is placed before or
after the purchase by ``occurred_at``, and the latest support contact is kept so
that a purchase arriving after a later support contact still ends in
post-purchase. Within one cycle the final stage is therefore independent of the
order in which events arrive.
"""

from __future__ import annotations

from datetime import datetime

from msgspec.structs import replace

from processor.engine.model import (
    Evidence,
    FixedEvidence,
    JourneyModel,
    RelativeEvidence,
)
from processor.engine.triggers import Context, TriggerFired, on_applied, on_tick
from processor.engine.vocabulary import (
    DEDUPE_CHUNK,
    RECENT_CHANGES,
    ChunkSealed,
    CustomerState,
    Event,
    EventRef,
    Output,
    Stage,
    StageChange,
    Step,
    SupportContact,
)

_new_step = tuple.__new__
"""Builds a Step in C: ``Step(...)`` goes through a Python-level ``__new__`` (0.1 us a call)."""


def apply(state: CustomerState | None, event: Event, model: JourneyModel) -> Step:
    """Apply one event to one customer's state.

    ``state`` must belong to ``event.customer_id`` (or be None for an unknown
    customer). Duplicates are recognised within the open dedupe chunk held in the
    state; the shell checks the sealed chunks and calls :func:`reemit` for those.

    Most events are evidence of the customer's stage or an earlier one and move
    nothing but the dedupe window and the counters: they take :func:`_apply_still`,
    which does in one state update what the general path does in several. A
    property test checks that both paths give the same step for every event.
    """
    evidence = model.evidence.get((event.source, event.type))
    if evidence is None:
        return _new_step(Step, (state, (), "ignored"))
    if state is None:
        return _apply_general(None, event, evidence, model)
    event_id = event.event_id
    if event_id in state.recent_event_ids:
        return reemit(state, event_id)
    if type(evidence) is FixedEvidence:
        target = evidence.stage
        rank = model.rank
        # The most common case of all, without the call to _moves: evidence of the
        # customer's pre-purchase stage or an earlier one moves nothing (rule 2).
        if rank[target] <= rank[state.stage] < model.purchase_rank:
            return _apply_still(state, event, target, evidence, model)
    else:
        target = _target(state, event, evidence)
    if _moves(state, event, target, evidence, model):
        return _apply_general(state, event, evidence, model)
    return _apply_still(state, event, target, evidence, model)


def _target(state: CustomerState | None, event: Event, evidence: Evidence) -> Stage:
    """The stage an event is evidence of for this customer (support: relative to the purchase)."""
    if type(evidence) is FixedEvidence:
        return evidence.stage
    assert isinstance(evidence, RelativeEvidence)
    purchase_at = state.purchase_at if state is not None else None
    after = purchase_at is not None and event.occurred_at >= purchase_at
    return evidence.after_purchase if after else evidence.before_purchase


def _moves(
    state: CustomerState, event: Event, target: Stage, evidence: Evidence, model: JourneyModel
) -> bool:
    """Whether rules 2 and 3 move the customer (what :func:`_transition` decides, in brief)."""
    rank = model.rank
    target_rank = rank[target]
    purchase_rank = model.purchase_rank
    if target_rank == purchase_rank:
        return True
    stage_rank = rank[state.stage]
    if stage_rank >= purchase_rank and target_rank < purchase_rank:
        if type(evidence) is not FixedEvidence:
            return False  # a support contact never starts a cycle
        anchor = state.purchase_at or state.stage_entered_at
        return event.occurred_at > anchor + model.new_cycle_after
    return target_rank > stage_rank


def _apply_still(
    state: CustomerState, event: Event, target: Stage, evidence: Evidence, model: JourneyModel
) -> Step:
    """An event that moves no stage: the support contact, the last event time, the
    triggers and the dedupe window, in one state update."""
    at = event.occurred_at
    last_support = state.last_support
    if type(evidence) is not FixedEvidence and (
        last_support is None or at > last_support.occurred_at
    ):
        assert isinstance(evidence, RelativeEvidence)
        last_support = SupportContact(
            event.event_id,
            event.topic,
            event.type,
            at,
            evidence.after_purchase,
            event.source,
            event.properties,
        )
    triggers = state.triggers
    outputs: tuple[Output, ...] = ()
    reactions = model.reactions
    if (
        model.triggers
        # Reactions.quiet in brief for most customers (no timer armed, nothing fired yet):
        # then only the event's (source, type) can wake a rule.
        and (triggers.timers or triggers.fired or (event.source, event.type) in reactions.pairs)
        and not reactions.quiet(triggers, state.stage, state.cycle, event.source, event.type)
    ):
        triggers, outputs = on_applied(
            triggers,
            _context(state, model),
            previous_cycle=state.cycle,
            changes=(),
            event=event,
            judged=[(event, target)],
        )
    ids = (*state.recent_event_ids, event.event_id)
    applied_count = state.applied_count
    if len(ids) >= DEDUPE_CHUNK:
        sealed = ChunkSealed(state.customer_id, applied_count // DEDUPE_CHUNK, ids)
        outputs = (*outputs, sealed)
        ids = ()
    last_event_at = state.last_event_at
    still = replace(
        state,
        last_event_at=at if at > last_event_at else last_event_at,
        applied_count=applied_count + 1,
        recent_event_ids=ids,
        last_support=last_support,
        triggers=triggers,
    )
    return _new_step(Step, (still, outputs, "applied"))


def _apply_general(
    state: CustomerState | None, event: Event, evidence: Evidence, model: JourneyModel
) -> Step:
    """Any applied event (not a duplicate), rule by rule: a first event, a move, a new cycle."""
    support: SupportContact | None = None
    target = _target(state, event, evidence)
    if isinstance(evidence, RelativeEvidence):
        support = SupportContact(
            event.event_id,
            event.topic,
            event.type,
            event.occurred_at,
            evidence.after_purchase,
            event.source,
            event.properties,
        )

    ref = EventRef(event.event_id, event.topic, event.type)
    if state is None:
        fresh = CustomerState(
            customer_id=event.customer_id,
            cycle=1,
            stage=target,
            stage_entered_at=event.occurred_at,
            sequence=0,
            purchase_at=event.occurred_at if target == model.purchase_stage else None,
            last_event_at=event.occurred_at,
            applied_count=0,
            last_support=support,
        )
        fresh, first = _move(fresh, target, event.occurred_at, ref, model, cycle=1, late=event.late)
        fresh, fired = _triggers(None, fresh, (first,), event, target, model)
        return _remember(fresh, event, (first, *fired))

    moved, changes = _transition(state, event, target, ref, model, support is None)
    if support is not None and (
        moved.last_support is None or support.occurred_at > moved.last_support.occurred_at
    ):
        moved = replace(moved, last_support=support)
    if changes and changes[-1].to_stage == model.purchase_stage:
        moved, changes = _after_purchase(moved, model, changes, late=event.late)
    if event.occurred_at > moved.last_event_at:
        moved = replace(moved, last_event_at=event.occurred_at)
    moved, fired = _triggers(state, moved, changes, event, target, model)
    return _remember(moved, event, (*changes, *fired))


def reemit(state: CustomerState, event_id: str) -> Step:
    """A duplicate: change nothing, and re-emit the stage changes and triggers it caused."""
    changes = tuple(c for c in state.recent_changes if c.caused_by == event_id)
    fired = tuple(t for t in state.triggers.recent if t.caused_by == event_id)
    return Step(state, (*changes, *fired), "duplicate")


def fire_due(state: CustomerState, now: datetime, tick_id: str, model: JourneyModel) -> Step:
    """Fire the customer's absence timers due at ``now`` (event time), for timer tick ``tick_id``.

    A replayed tick (after a crash) finds the timers gone and re-emits what that
    tick fired, with the same ids.
    """
    again = tuple(t for t in state.triggers.recent if t.caused_by == tick_id)
    if again:
        return Step(state, again, "duplicate")
    triggers, fired = on_tick(state.triggers, _context(state, model), now=now, tick_id=tick_id)
    if triggers is state.triggers:
        return Step(state, (), "ignored")
    return Step(replace(state, triggers=triggers), fired, "applied")


def _context(state: CustomerState, model: JourneyModel) -> Context:
    return Context(  # positional (in field order): cheaper than keywords
        state.customer_id, state.stage, state.cycle, model.triggers, model.name, model.version
    )


def _triggers(
    before: CustomerState | None,
    after: CustomerState,
    changes: tuple[StageChange, ...],
    event: Event,
    event_stage: Stage,
    model: JourneyModel,
) -> tuple[CustomerState, tuple[TriggerFired, ...]]:
    """Evaluate trigger rules after one applied event.

    An event rule judges an event by the stage it is evidence of at its own time
    (``event_stage``), not by where a late or early arrival left the customer; and
    a support contact that a later-arriving order moves on to post-purchase is
    judged again as of then.
    """
    if not model.triggers:
        return after, ()
    previous_cycle = None if before is None else before.cycle
    if changes:
        if model.reactions.quiet_after(
            after.triggers, after.stage, after.cycle, previous_cycle, event, changes
        ):
            return after, ()
    elif model.reactions.quiet(after.triggers, after.stage, after.cycle, event.source, event.type):
        return after, ()
    judged = [(event, event_stage)]
    contact = after.last_support
    for change in changes:
        if (
            contact is not None
            and change.evidence.event_id == contact.event_id != event.event_id
            and change.to_stage == contact.after_purchase
        ):
            judged.append((contact.as_event(after.customer_id), change.to_stage))
    triggers, fired = on_applied(
        after.triggers,
        _context(after, model),
        previous_cycle=previous_cycle,
        changes=changes,
        event=event,
        judged=judged,
    )
    return replace(after, triggers=triggers), fired


def _transition(
    state: CustomerState,
    event: Event,
    target: Stage,
    evidence: EventRef,
    model: JourneyModel,
    may_start_cycle: bool,
) -> tuple[CustomerState, tuple[StageChange, ...]]:
    """Rules 2 and 3: move forward, start a new cycle, or change nothing.

    Only fixed (clickstream and research) evidence may start a cycle by rule 3b: a
    support contact before the purchase is part of that purchase's evaluation.
    """
    rank = model.rank
    at = event.occurred_at
    past_purchase = rank[state.stage] >= model.purchase_rank
    if target == model.purchase_stage:
        cycle = state.cycle + 1 if past_purchase else state.cycle
        moved, change = _move(state, target, at, evidence, model, cycle=cycle, late=event.late)
        # An older order arriving late still counts as a repeat purchase, but the later
        # purchase stays the anchor that support contacts and rule 3b compare with.
        latest = at if state.purchase_at is None else max(at, state.purchase_at)
        return replace(moved, purchase_at=latest if past_purchase else at), (change,)
    if past_purchase and rank[target] < model.purchase_rank:
        anchor = state.purchase_at or state.stage_entered_at
        if not may_start_cycle or at <= anchor + model.new_cycle_after:
            return state, ()
        moved, change = _move(
            state, target, at, evidence, model, cycle=state.cycle + 1, late=event.late
        )
        return replace(moved, purchase_at=None), (change,)
    if rank[target] > rank[state.stage]:
        moved, change = _move(
            state, target, at, evidence, model, cycle=state.cycle, late=event.late
        )
        return moved, (change,)
    return state, ()


def _after_purchase(
    state: CustomerState, model: JourneyModel, changes: tuple[StageChange, ...], *, late: bool
) -> tuple[CustomerState, tuple[StageChange, ...]]:
    """A purchase that a support contact already postdates goes on to post-purchase.

    Support contacts arriving before the order they follow were placed before the
    purchase; without this the final stage would depend on arrival order.
    """
    contact = state.last_support
    if (
        state.stage != model.purchase_stage
        or state.purchase_at is None
        or contact is None
        or contact.occurred_at < state.purchase_at
        or model.rank[contact.after_purchase] <= model.rank[state.stage]
    ):
        return state, changes
    evidence = EventRef(contact.event_id, contact.topic, contact.type)
    moved, change = _move(
        state,
        contact.after_purchase,
        contact.occurred_at,
        evidence,
        model,
        cycle=state.cycle,
        caused_by=changes[-1].caused_by,
        late=late,
    )
    return moved, (*changes, change)


def _move(
    state: CustomerState,
    target: Stage,
    at: datetime,
    evidence: EventRef,
    model: JourneyModel,
    *,
    cycle: int,
    caused_by: str | None = None,
    late: bool = False,
) -> tuple[CustomerState, StageChange]:
    first = state.sequence == 0
    change = StageChange(  # positional (in field order): cheaper than keywords
        state.customer_id,
        cycle,
        state.sequence + 1,
        None if first else state.stage,
        target,
        at,
        None if first else state.stage_entered_at,
        evidence,
        model.name,
        model.version,
        evidence.event_id if caused_by is None else caused_by,
        late,
    )
    recent = (*state.recent_changes, change)[-RECENT_CHANGES:]
    moved = replace(
        state,
        cycle=cycle,
        stage=target,
        stage_entered_at=at,
        sequence=change.sequence,
        recent_changes=recent,
    )
    return moved, change


def _remember(state: CustomerState, event: Event, outputs: tuple[Output, ...]) -> Step:
    """Record the event id in the open dedupe chunk, sealing the chunk when it fills."""
    ids = (*state.recent_event_ids, event.event_id)
    if len(ids) >= DEDUPE_CHUNK:
        index = state.applied_count // DEDUPE_CHUNK
        outputs = (*outputs, ChunkSealed(state.customer_id, index, ids))
        ids = ()
    remembered = replace(state, recent_event_ids=ids, applied_count=state.applied_count + 1)
    return _new_step(Step, (remembered, outputs, "applied"))
