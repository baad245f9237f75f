"""Identity: an anonymous visitor's journey merged into the customer's, purely.

An identify event says that an anonymous id is a customer from now on (see the
README, "Identity"). The shell brings the anonymous state ``b`` (and its sealed
dedupe chunks) to the customer's partition and calls :func:`merge` there with
the customer's state ``a``. States keep summaries, not histories, so the merge
combines summaries; the default policy is chosen so that within one cycle (where
the engine's final state does not depend on arrival order) the result is what
applying the union of both (disjoint) histories would give in every field that
does not depend on arrival order (stage, cycle, purchase, last event and latest
support times, applied count, remembered ids), and every later event then lands
exactly as it would on that union (tests/engine/test_identity.py). Field by field:

* ``cycle``: the larger, unless both sides bought in their current cycle: then the
  later order is a repeat purchase (rule 3a), as in the union, and the merged
  customer is one cycle further, at the purchase stage, anchored at the later order,
  with no firing count or timer of the older cycles (a new cycle drops them). This
  is exactly the union when either side is in its first cycle (an anonymous guest
  checkout, then a purchase as the known customer); with several cycles on both
  sides the union may hold more cycles than the merge can tell from two summaries.
* ``stage``: the furthest among the states in that cycle; then the latest support
  contact of either side is placed again against the merged purchase, as a late
  order places it (a question asked anonymously after the known purchase is
  post-purchase). ``stage_entered_at``: the customer's own if the stage is
  unchanged, else the earliest entry among the states at the merged stage, or
  the contact's time.
* ``purchase_at``: the latest of that cycle; ``last_event_at``: the latest;
  ``last_support``: the latest contact (ties: the smaller event id).
* ``applied_count``: the sum, plus one for the identify event, which the customer
  remembers like an applied event: a replayed merge is a duplicate and re-emits
  what it caused, nothing more.
* dedupe ids: the union. The anonymous ids are laid out after the customer's, as
  if applied after them, and re-chunked under the customer's indexes; the ids
  that had already left the anonymous window are counted but not remembered, as
  they would not have been. :class:`Merged` says which chunks to store and which
  of the customer's chunks leave the window.
* ``sequence``: the customer's continues. If the merge moves the customer (stage
  or cycle), it emits one :class:`MergedStageChange` (``merged_from``: the anonymous id),
  with the identify event as its evidence and cause. The anonymous side's own changes
  stay its own (they carry its id); the customer's recent changes are kept.
* triggers: firing counts of the merged cycle take the maximum per rule, so a rule
  that fired on either side does not fire again (unless it repeats); armed timers
  of the merged cycle move, one per rule (the later deadline), and a timer whose
  ``after_stage`` the merged customer is no longer in is cancelled, as progress
  cancels it. The merge itself fires nothing. The customer's recent triggers stay.

Otherwise, beyond one cycle, the later cycle leads and the other side contributes
only its counts, ids and times: its history is treated as belonging to an earlier
cycle.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

import msgspec
from msgspec.structs import replace

from processor.engine.core import reemit
from processor.engine.model import JourneyModel
from processor.engine.triggers import Fired, Timer, TriggerState
from processor.engine.vocabulary import (
    DEDUPE_CHUNK,
    DEDUPE_KEEP_CHUNKS,
    RECENT_CHANGES,
    ChunkSealed,
    CustomerState,
    Event,
    EventRef,
    MergedStageChange,
    Outcome,
    Stage,
    StageChange,
    SupportContact,
)


class Merged(NamedTuple):
    """What a merge did: the customer's new state, its stage changes and dedupe chunk work.

    The shell stores every chunk of ``sealed`` (and, as for any sealed chunk,
    deletes the one its ``expired_index`` names) and deletes the customer's chunks
    in ``expired``, which the merge pushed out of the dedupe window.
    """

    state: CustomerState | None
    changes: tuple[StageChange, ...]
    sealed: tuple[ChunkSealed, ...]
    expired: range
    outcome: Outcome


def is_identify(event: Event, model: JourneyModel) -> bool:
    """An identify event of this model: its type, and an anonymous id not the customer's."""
    return (
        (event.source, event.type) == model.identify
        and event.anonymous_id is not None
        and event.anonymous_id != event.customer_id
    )


def partition_key(event: Event, model: JourneyModel) -> str:
    """The id whose partition applies the event: the anonymous id's for an identify event
    (the alias and the anonymous state live there), the customer's for any other."""
    if is_identify(event, model) and event.anonymous_id is not None:
        return event.anonymous_id
    return event.customer_id


def is_anonymous(event: Event) -> bool:
    """An event of a visitor not known yet: tracked under its anonymous id."""
    return event.anonymous_id is not None and event.anonymous_id == event.customer_id


def merge(
    a: CustomerState | None,
    b: CustomerState | None,
    model: JourneyModel,
    *,
    into: str,
    via: EventRef,
    b_sealed: Sequence[Sequence[str]] = (),
) -> Merged:
    """Merge the anonymous state ``b`` into the customer ``into``'s state ``a``.

    ``via`` is the identify event; ``b_sealed`` the anonymous side's sealed dedupe
    chunks still in its window, oldest first. A merge of or into nothing is the
    other side (a missing customer gets the anonymous journey under its own id,
    starting its sequence with one change from nothing).
    """
    nothing = range(0)
    if a is not None and via.event_id in a.recent_event_ids:
        # Before looking at b: a replayed identify may find the anonymous state gone
        # (tombstoned after the first merge message was delivered) and send None.
        step = reemit(a, via.event_id)
        again = tuple(o for o in step.outputs if isinstance(o, StageChange))
        return Merged(a, again, (), nothing, "duplicate")
    if b is None:
        return Merged(a, (), (), nothing, "ignored")

    sides = (b,) if a is None else (a, b)
    rank = model.rank
    if a is not None and a.purchase_at is not None and b.purchase_at is not None:
        # An order on each side: in the union the later one is a repeat purchase (rule 3a).
        cycle = max(a.cycle, b.cycle) + 1
        current: list[CustomerState] = []  # a new cycle: no count, no timer of the old ones
        stage = model.purchase_stage
        entered = max(a.purchase_at, b.purchase_at)
        purchase_at: datetime | None = entered
    else:
        cycle = max(s.cycle for s in sides)
        current = [s for s in sides if s.cycle == cycle]
        stage = max((s.stage for s in current), key=rank.__getitem__)
        entered = min(s.stage_entered_at for s in current if s.stage == stage)
        purchase_at = max(
            (s.purchase_at for s in current if s.purchase_at is not None), default=None
        )
    contact = _latest_contact(sides)
    placed = _placed(stage, purchase_at, contact, model)
    if placed is not None:
        stage, entered = placed

    sealed, open_ids, expired = _dedupe(a, b, b_sealed, into, via.event_id)
    base = (
        a if a is not None else replace(b, sequence=0, recent_changes=(), triggers=TriggerState())
    )
    merged = replace(
        base,
        customer_id=into,
        purchase_at=purchase_at,
        last_event_at=max(s.last_event_at for s in sides),
        applied_count=sum(s.applied_count for s in sides) + 1,
        recent_event_ids=open_ids,
        last_support=contact,
        triggers=_triggers(a, current, cycle, stage, model),
    )
    changes: tuple[StageChange, ...] = ()
    if a is None or (a.cycle, a.stage) != (cycle, stage):
        change = _change(base, into, cycle, stage, entered, via, b.customer_id, model)
        changes = (change,)
        merged = replace(
            merged,
            cycle=cycle,
            stage=stage,
            stage_entered_at=entered,
            sequence=change.sequence,
            recent_changes=(*base.recent_changes, change)[-RECENT_CHANGES:],
        )
    return Merged(merged, changes, sealed, expired, "applied")


def _latest_contact(sides: Sequence[CustomerState]) -> SupportContact | None:
    contacts = [s.last_support for s in sides if s.last_support is not None]
    if not contacts:
        return None
    latest = max(c.occurred_at for c in contacts)
    return min((c for c in contacts if c.occurred_at == latest), key=lambda c: c.event_id)


def _placed(
    stage: Stage, purchase_at: datetime | None, contact: SupportContact | None, model: JourneyModel
) -> tuple[Stage, datetime] | None:
    """The stage a support contact at or after the merged purchase moves the customer on to."""
    if (
        stage != model.purchase_stage
        or purchase_at is None
        or contact is None
        or contact.occurred_at < purchase_at
        or model.rank[contact.after_purchase] <= model.rank[stage]
    ):
        return None
    return contact.after_purchase, contact.occurred_at


def _triggers(
    a: CustomerState | None,
    current: Sequence[CustomerState],
    cycle: int,
    stage: Stage,
    model: JourneyModel,
) -> TriggerState:
    """Counts and timers of the merged cycle, one per rule; the customer's recent triggers."""
    fired: dict[str, Fired] = {}
    for f in (f for s in current for f in s.triggers.fired if f.cycle == cycle):
        seen = fired.get(f.rule)
        if seen is None:
            fired[f.rule] = f
        else:
            fired[f.rule] = Fired(
                f.rule, cycle, max(seen.count, f.count), max(seen.last_at, f.last_at)
            )
    rules = {r.name: r for r in model.triggers}
    timers: dict[str, Timer] = {}
    for t in (t for s in current for t in s.triggers.timers):
        rule = rules.get(t.rule)
        if rule is None or rule.after_stage not in (None, stage):
            continue  # an unknown rule, or progress past its stage: cancelled
        seen_timer = timers.get(t.rule)
        if seen_timer is None or (t.deadline, t.anchor) > (seen_timer.deadline, seen_timer.anchor):
            timers[t.rule] = t
    return TriggerState(
        timers=tuple(sorted(timers.values(), key=lambda t: (t.deadline, t.rule))),
        fired=tuple(sorted(fired.values(), key=lambda f: f.rule)),
        recent=() if a is None else a.triggers.recent,
    )


def _change(
    base: CustomerState,
    into: str,
    cycle: int,
    stage: Stage,
    entered: datetime,
    via: EventRef,
    anonymous_id: str,
    model: JourneyModel,
) -> StageChange:
    first = base.sequence == 0
    return MergedStageChange(
        customer_id=into,
        cycle=cycle,
        sequence=base.sequence + 1,
        from_stage=None if first else base.stage,
        to_stage=stage,
        changed_at=entered,
        previous_stage_entered_at=None if first else base.stage_entered_at,
        evidence=via,
        model_name=model.name,
        model_version=model.version,
        caused_by=via.event_id,
        merged_from=anonymous_id,
    )


def _dedupe(
    a: CustomerState | None,
    b: CustomerState,
    b_sealed: Sequence[Sequence[str]],
    into: str,
    via: str,
) -> tuple[tuple[ChunkSealed, ...], tuple[str, ...], range]:
    """Lay the anonymous ids (and the identify id) out after the customer's, in its chunks.

    Positions run from the start of the customer's open chunk. Ids the anonymous
    side no longer remembered are gaps at the front; if the new open chunk would
    still hold gaps (its sealed chunks were not passed), it is padded with the
    identify id, so that its length stays ``applied_count % DEDUPE_CHUNK``.
    """
    count = a.applied_count if a is not None else 0
    start = count // DEDUPE_CHUNK  # the customer's open chunk
    known = [i for chunk in b_sealed for i in chunk] + list(b.recent_event_ids)
    gaps = max(0, b.applied_count - len(known))
    total = count + b.applied_count + 1
    ids: list[str | None] = [None] * gaps
    ids += [*(a.recent_event_ids if a is not None else ()), *known, via]
    offset = total - start * DEDUPE_CHUNK - len(ids)  # 0 unless b_sealed held more than counted
    ids = ids[-offset:] if offset < 0 else ids
    end = total // DEDUPE_CHUNK  # the new open chunk
    window = max(0, end - DEDUPE_KEEP_CHUNKS)
    sealed = []
    for index in range(max(start, window), end):
        lo = (index - start) * DEDUPE_CHUNK
        chunk = tuple(i for i in ids[lo : lo + DEDUPE_CHUNK] if i is not None)
        if chunk:
            sealed.append(ChunkSealed(into, index, chunk))
    tail = ids[(end - start) * DEDUPE_CHUNK :]
    open_ids = tuple(i if i is not None else via for i in tail)
    old_window = max(0, start - DEDUPE_KEEP_CHUNKS)
    return tuple(sealed), open_ids, range(old_window, max(old_window, min(start, window)))


IDENTITY_NAMESPACE = uuid.UUID("3c7e1a52-9d4b-5f06-8a2e-6964656e7469")
"""Namespace of ``identity_merged`` ids. Never change it."""


class IdentityMerged(msgspec.Struct, frozen=True):
    """The anonymous id's final record: its journey now continues as the customer's.

    Everything in it comes from the identify event alone, not from the anonymous
    state at the time, so that a replay after a crash (which may find that state
    already tombstoned) publishes the same bytes.
    """

    anonymous_id: str
    customer_id: str
    identify: EventRef
    identified_at: datetime
    model_name: str
    model_version: str

    @property
    def id(self) -> str:
        """A UUIDv5 of the two ids and the identify event id: identical on every replay."""
        key = f"{self.anonymous_id}\x1f{self.customer_id}\x1f{self.identify.event_id}"
        return str(uuid.uuid5(IDENTITY_NAMESPACE, key))


def identity_merged(event: Event, model: JourneyModel) -> IdentityMerged:
    """The final record an identify event gives its anonymous id."""
    if not is_identify(event, model) or event.anonymous_id is None:
        raise ValueError(f"{event.event_id!r} is not an identify event of this model")
    return IdentityMerged(
        anonymous_id=event.anonymous_id,
        customer_id=event.customer_id,
        identify=EventRef(event.event_id, event.topic, event.type),
        identified_at=event.occurred_at,
        model_name=model.name,
        model_version=model.version,
    )


class Link(NamedTuple):
    """What an identify event does on the anonymous id's partition (the shell carries it out).

    Write the alias (``anonymous_id`` -> ``customer_id``) before anything else, so
    that every later event of the anonymous id on this partition is forwarded;
    send the anonymous state and chunks to the customer's partition (a merge
    control message); tombstone the anonymous state and the chunks in
    ``tombstones``; publish ``record``. All of it is a function of the identify
    event and the anonymous state, so a replay redoes the same (the alias is
    already there, the tombstones are repeats, the messages identical).
    """

    anonymous_id: str
    customer_id: str
    state: CustomerState | None
    chunks: tuple[tuple[str, ...], ...]
    tombstones: tuple[int, ...]
    record: IdentityMerged


def link(
    state: CustomerState | None,
    sealed: Sequence[Sequence[str]],
    event: Event,
    model: JourneyModel,
) -> Link:
    """Decide an identify event on the anonymous id's partition, given the anonymous state.

    ``state`` must be the anonymous id's (None: nothing stored) and ``sealed`` its
    sealed chunks in the window, oldest first. An anonymous id already linked to
    another customer is not this function's business: the shell finds the alias
    first and forwards the identify event to the customer it already names.
    """
    record = identity_merged(event, model)
    if state is not None and state.customer_id != record.anonymous_id:
        raise ValueError("the state belongs to another id than the event's anonymous_id")
    return Link(
        anonymous_id=record.anonymous_id,
        customer_id=record.customer_id,
        state=state,
        chunks=tuple(tuple(chunk) for chunk in sealed),
        tombstones=tuple(state.sealed_chunks) if state is not None else (),
        record=record,
    )


def resolve(event: Event, alias: str | None) -> Event:
    """An event as the engine applies it, given the alias of the id it is tracked under.

    An anonymous-only event of a linked anonymous id belongs to the customer now
    (its ``anonymous_id`` stays, so the customer's partition can tell); anything
    else is applied under its own ``customer_id``.
    """
    if alias is None or not is_anonymous(event):
        return event
    return msgspec.structs.replace(event, customer_id=alias)


class Unlinked(NamedTuple):
    """A customer without a forgotten anonymous id: its alias list and its state, rewritten.

    ``aliases`` empty: the shell deletes the list's row. ``state`` None: none stored.
    """

    aliases: tuple[str, ...]
    state: CustomerState | None


def unlink(aliases: Sequence[str], state: CustomerState | None, anonymous_id: str) -> Unlinked:
    """Remove a forgotten anonymous id from the customer it was merged into (erasure).

    The customer's list of merged anonymous ids loses it, and each recent stage change
    that names it in ``merged_from`` becomes a plain stage change with the same
    content (and so the same id and stage-change document); a replayed identify then
    re-emits that change without the ``ce_journeymergedfrom`` header, never the
    forgotten id. Everything else the merge gave the customer stays: it is the
    customer's journey now. Idempotent: unlinking again changes nothing more.
    """
    kept = tuple(a for a in aliases if a != anonymous_id)
    if state is None or not any(_names(c, anonymous_id) for c in state.recent_changes):
        return Unlinked(kept, state)
    changes = tuple(_plain(c) if _names(c, anonymous_id) else c for c in state.recent_changes)
    return Unlinked(kept, replace(state, recent_changes=changes))


def _names(change: StageChange, anonymous_id: str) -> bool:
    return isinstance(change, MergedStageChange) and change.merged_from == anonymous_id


def _plain(change: StageChange) -> StageChange:
    fields = {f: getattr(change, f) for f in StageChange.__struct_fields__}
    return StageChange(**fields)
