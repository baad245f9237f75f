"""Event-time ordering: watermarks, the partition clock, and the hold buffer. Pure.

The stage rules are order-independent only within a cycle; across cycles (and for
the stage-change chain itself) the order of application matters. This module
decides that order, the way stream processors do, without any I/O:

* Every **input partition** (topic, partition) has a watermark: the highest
  ``occurred_at`` seen on it minus the allowed lateness (:class:`InputWatermark`,
  kept by the router). "Nothing older than this will still come in time." An
  input partition that is caught up and quiet (idle) follows the wall clock
  instead, so it does not hold the others back. Events dated more than the
  allowed clock skew ahead of the wall clock never move a watermark.
* The **clock** of a customer partition is the minimum of the watermarks of every
  input partition that feeds it (all of them: the router re-partitions by
  customer). It never goes backwards and never passes the wall clock plus the
  skew. Unknown input partitions (not reported yet) keep it where it is.
* Each customer partition **holds** arriving events, sorted by
  :data:`Key` (occurred_at, then topic, partition, offset: the same order on
  every replay), and releases them in that order once the clock has passed them.
  At ``max_held`` the oldest are released early ("overflow").
* An event older than the clock when it arrives (or ordered before something
  already released) is **late**: applied at once, flagged, never dropped.

:func:`accept` is the whole engine-side step: ``(Ordering, arrivals, marks) ->
(Ordering, released)``.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from operator import attrgetter
from typing import Literal

import msgspec

from processor.engine.vocabulary import Event

InputPartition = tuple[str, int]
"""An input topic and one of its partitions."""

Key = tuple[datetime, str, int, int]
"""Application order: occurred_at, then input topic, partition and offset (a total order)."""

Why = Literal["clock", "late", "overflow", "skewed"]
"""Why an event was released: the clock passed it; it came late; the buffer was full; its
time is too far ahead of the wall clock to be trusted for ordering."""


@dataclass(frozen=True, slots=True)
class OrderingConfig:
    lateness: timedelta
    """How far an event may trail its own input partition's newest event and still be in time."""
    max_held: int
    """Most events held per customer partition; beyond it the oldest are released early."""
    max_clock_skew: timedelta
    """Events dated further than this ahead of the wall clock never move a clock."""


@dataclass(frozen=True, slots=True)
class Mark:
    """What a router says about one input partition: its watermark, and whether it is idle."""

    watermark: datetime | None
    idle: bool = False


class Arrival(msgspec.Struct, frozen=True, gc=False):
    """An event as it reaches the engine side, with where it was read (for the tie-break)."""

    event: Event
    partition: int
    offset: int
    skewed: bool = False

    @property
    def key(self) -> Key:
        return (self.event.occurred_at, self.event.topic, self.partition, self.offset)


class Held(msgspec.Struct, frozen=True, gc=False):
    key: Key
    event: Event
    arrived_at: datetime
    """Wall clock when it was first held (for the hold-time histogram)."""
    origin: int
    """Which message it came in (the shell stores held events per message)."""


class Released(msgspec.Struct, frozen=True, gc=False):
    event: Event
    why: Why
    held_seconds: float
    origin: int | None
    """The message it was held from; None if it was never held."""
    position: tuple[int, int] = (0, 0)
    """Its input partition and offset (the shell counts its outcome against them)."""

    @property
    def late(self) -> bool:
        return self.why == "late"


@dataclass(frozen=True, slots=True)
class Ordering:
    """The ordering state of one customer partition."""

    marks: Mapping[InputPartition, Mark] = field(default_factory=dict)
    clock: datetime | None = None
    frontier: Key | None = None
    """The greatest key applied (skewed events excepted); anything at or below it is late."""
    held: tuple[Held, ...] = ()
    """Sorted by key."""

    @property
    def idle(self) -> bool:
        """Every input partition reported idle: nothing is left to read anywhere."""
        return bool(self.marks) and all(m.idle for m in self.marks.values())


# --------------------------------------------------------------------------- router side


@dataclass(frozen=True, slots=True)
class InputWatermark:
    """The router's view of one input partition: the newest trustworthy occurred_at."""

    max_seen: datetime | None = None

    def advanced(self, occurred_at: datetime) -> InputWatermark:
        if self.max_seen is None or occurred_at > self.max_seen:
            return InputWatermark(occurred_at)
        return self

    def mark(self, *, idle: bool, wall: datetime, lateness: timedelta) -> Mark:
        """The watermark; an idle partition's follows the wall clock so it holds nobody back."""
        watermark = None if self.max_seen is None else self.max_seen - lateness
        if idle:
            by_wall = wall - lateness
            watermark = by_wall if watermark is None else max(watermark, by_wall)
        return Mark(watermark, idle)


def is_skewed(occurred_at: datetime, wall: datetime, max_clock_skew: timedelta) -> bool:
    """Dated too far ahead of the wall clock to move any clock (it is still applied)."""
    return occurred_at > wall + max_clock_skew


# --------------------------------------------------------------------------- engine side


def merge_marks(
    known: Mapping[InputPartition, Mark], reported: Mapping[InputPartition, Mark]
) -> dict[InputPartition, Mark]:
    """Watermarks only move forward (a partition moved to another router restarts lower).

    A mark is a frozen value: where the merge is the reported mark (no watermark before,
    or the reported one is not lower) that object is kept, and where it is the known one,
    that one, instead of building an equal ``Mark`` per input partition per message."""
    merged = dict(known)
    for partition, mark in reported.items():
        before = merged.get(partition)
        if (
            before is None
            or before.watermark is None
            or (mark.watermark is not None and mark.watermark >= before.watermark)
        ):
            merged[partition] = mark
        elif mark.idle != before.idle:  # the known (higher) watermark, the reported idleness
            merged[partition] = Mark(before.watermark, mark.idle)
    return merged


def clock_of(
    marks: Mapping[InputPartition, Mark], inputs: Iterable[InputPartition]
) -> datetime | None:
    """The minimum watermark over every input partition; None while any is unknown."""
    lowest: datetime | None = None
    seen = False
    for partition in inputs:
        seen = True
        mark = marks.get(partition)
        if mark is None or mark.watermark is None:
            return None
        if lowest is None or mark.watermark < lowest:
            lowest = mark.watermark
    return lowest if seen else None


def accept(
    state: Ordering,
    arrivals: Iterable[Arrival],
    marks: Mapping[InputPartition, Mark],
    *,
    inputs: Iterable[InputPartition],
    now: datetime,
    config: OrderingConfig,
    origin: int = 0,
) -> tuple[Ordering, tuple[Released, ...]]:
    """One message on the engine side: hold its events, advance the clock, release in order.

    Lateness is judged by the clock *before* this message's marks: the marks were
    taken after the router read the message's events, so they cover them.
    Released events come in application order: late and skewed ones first (they
    are older than everything held), then the held ones by key.
    """
    clock = state.clock
    frontier = state.frontier
    held = state.held
    # ``held`` is sorted: a key above its greatest cannot be held, so only the rest need the
    # bisect of :func:`_holds` (a backlog's arrivals are mostly newer than everything held).
    greatest = held[-1].key if held else None
    at_once: list[tuple[Key, Released]] = []
    fresh: dict[Key, Held] = {}
    for arrival in arrivals:
        key = arrival.key
        if arrival.skewed:
            at_once.append((key, Released(arrival.event, "skewed", 0.0, None, key[2:])))
            continue
        if key in fresh or (greatest is not None and key <= greatest and _holds(held, key)):
            continue  # redelivered after a crash: it is held already
        if (frontier is not None and key <= frontier) or (clock is not None and key[0] < clock):
            at_once.append((key, Released(arrival.event, "late", 0.0, None, key[2:])))
            continue
        fresh[key] = Held(key, arrival.event, now, origin)
    if at_once:
        at_once.sort(key=lambda pair: pair[0])
        for key, released in at_once:
            if released.why == "late" and (frontier is None or key > frontier):
                frontier = key

    merged = merge_marks(state.marks, marks) if marks else state.marks
    candidate = clock_of(merged, inputs)
    if candidate is not None:
        candidate = min(candidate, now + config.max_clock_skew)
        if clock is None or candidate > clock:
            clock = candidate

    if fresh:
        held = _insert(held, list(fresh.values()))
    due = 0 if clock is None else bisect_left(held, (clock,), key=_KEY)
    early = max(due, len(held) - config.max_held)
    out = [released for _, released in at_once]
    if early:
        _release(held[:due], "clock", now, out)
        _release(held[due:early], "overflow", now, out)
        last = held[early - 1].key
        frontier = last if frontier is None or last > frontier else frontier
        held = held[early:]
    return Ordering(merged, clock, frontier, held), tuple(out)


def _release(held: tuple[Held, ...], why: Why, now: datetime, out: list[Released]) -> None:
    """Append ``held``'s events to ``out``, released for ``why`` at ``now``.

    The events one message held share its ``arrived_at`` (one object): the hold time is
    computed once per run of them (the same operands, the same value)."""
    arrived: datetime | None = None
    seconds = 0.0
    for h in held:
        if h.arrived_at is not arrived:
            arrived = h.arrived_at
            seconds = (now - arrived).total_seconds()
            seconds = seconds if seconds > 0.0 else 0.0  # max(0.0, seconds), without the call
        out.append(Released(h.event, why, seconds, h.origin, h.key[2:]))


_KEY = attrgetter("key")


def _insert(held: tuple[Held, ...], fresh: list[Held]) -> tuple[Held, ...]:
    """``held`` (sorted) with ``fresh`` merged in: binary insertion while ``fresh`` is small
    against ``held`` (a bundle against a full buffer), one sort otherwise. No key is in both,
    or twice in ``fresh``: the result is the same whatever the order of ``fresh``."""
    if len(fresh) * 8 > len(held):
        return tuple(sorted((*held, *fresh), key=_KEY))
    merged = list(held)
    for h in fresh:
        insort(merged, h, key=_KEY)
    return tuple(merged)


def held_from(state: Ordering, origin: int, arrivals: Iterable[Arrival]) -> list[Held]:
    """The events of message ``origin`` (given its arrivals) that ``state`` still holds.

    A bisect per arrival, not a scan of everything held: a partition can hold up to
    ``JOURNEY_MAX_HELD_EVENTS`` (20,000) while one message has a bundle's worth."""
    found = []
    held = state.held
    for arrival in arrivals:
        i = bisect_left(held, arrival.key, key=_KEY)
        if i < len(held) and held[i].key == arrival.key and held[i].origin == origin:
            found.append(held[i])
    return found


def _holds(held: tuple[Held, ...], key: Key) -> bool:
    i = bisect_left(held, key, key=_KEY)
    return i < len(held) and held[i].key == key


def restore(state: Ordering, held: Iterable[Held]) -> Ordering:
    """An ordering state from what was stored: held events at or below the frontier were
    applied already (a message is stored whole and dropped once all of it is released)."""
    frontier = state.frontier
    kept = sorted(
        {h.key: h for h in held if frontier is None or h.key > frontier}.values(),
        key=lambda h: h.key,
    )
    return Ordering(state.marks, state.clock, frontier, tuple(kept))


FRESH = timedelta(seconds=2)
"""Default for how recent the idle marks must be for the partition to count as caught up."""


def timer_clock(
    state: Ordering, wall: datetime, lateness: timedelta, fresh: timedelta = FRESH
) -> datetime | None:
    """The clock absence timers follow: the partition clock while anything is behind or held;
    the wall clock once every input is idle, nothing is held, and the idle marks just applied
    are recent (so this partition's own topic is read up to now)."""
    if (
        state.idle
        and not state.held
        and state.clock is not None
        and state.clock >= wall - lateness - fresh
    ):
        return wall
    return state.clock
