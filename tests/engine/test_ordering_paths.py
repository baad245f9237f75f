"""The quick paths of processor.engine.ordering agree with the plain rules they shortcut.

:func:`accept` skips the bisect for keys above everything held, computes a hold time
once per run of one arrival time (the same object), merges the fresh events in without
sorting them first, and :func:`merge_marks` keeps the reported mark
object where the merge would build an equal one; :func:`held_from` looks arrivals up
in a dict instead of bisecting. The references below are the plain versions (as they
were before the quick paths); on arbitrary states, arrivals and marks, including
redeliveries, duplicates, late, skewed and overflowing events, both must give equal
results.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from operator import attrgetter

from hypothesis import given, settings
from hypothesis import strategies as st

from processor.engine import Event
from processor.engine.ordering import (
    Arrival,
    Held,
    InputPartition,
    Key,
    Mark,
    Ordering,
    OrderingConfig,
    Released,
    Why,
    accept,
    clock_of,
    held_from,
    merge_marks,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)
TOPICS = ("journey.clickstream", "journey.support")
INPUTS: list[InputPartition] = [(t, p) for t in TOPICS for p in range(2)]
_KEY = attrgetter("key")


# --------------------------------------------------------------------------- the references


def reference_merge_marks(
    known: Mapping[InputPartition, Mark], reported: Mapping[InputPartition, Mark]
) -> dict[InputPartition, Mark]:
    merged = dict(known)
    for partition, mark in reported.items():
        before = merged.get(partition)
        if before == mark:
            continue
        watermark = mark.watermark
        if before is not None and before.watermark is not None:
            watermark = before.watermark if watermark is None else max(watermark, before.watermark)
        merged[partition] = Mark(watermark, mark.idle)
    return merged


def reference_accept(
    state: Ordering,
    arrivals: Iterable[Arrival],
    marks: Mapping[InputPartition, Mark],
    *,
    inputs: Iterable[InputPartition],
    now: datetime,
    config: OrderingConfig,
    origin: int = 0,
) -> tuple[Ordering, tuple[Released, ...]]:
    clock = state.clock
    frontier = state.frontier
    held = state.held
    at_once: list[tuple[Key, Released]] = []
    fresh: dict[Key, Held] = {}
    for arrival in arrivals:
        key = arrival.key
        if arrival.skewed:
            at_once.append((key, Released(arrival.event, "skewed", 0.0, None, key[2:])))
            continue
        if key in fresh or reference_holds(held, key):
            continue
        if (frontier is not None and key <= frontier) or (clock is not None and key[0] < clock):
            at_once.append((key, Released(arrival.event, "late", 0.0, None, key[2:])))
            continue
        fresh[key] = Held(key, arrival.event, now, origin)
    at_once.sort(key=lambda pair: pair[0])
    for key, released in at_once:
        if released.why == "late" and (frontier is None or key > frontier):
            frontier = key
    merged = reference_merge_marks(state.marks, marks) if marks else state.marks
    candidate = clock_of(merged, inputs)
    if candidate is not None:
        candidate = min(candidate, now + config.max_clock_skew)
        if clock is None or candidate > clock:
            clock = candidate
    if fresh:
        held = tuple(sorted((*held, *fresh.values()), key=_KEY))
    due = 0 if clock is None else bisect_left(held, (clock,), key=_KEY)
    early = max(due, len(held) - config.max_held)
    out = [released for _, released in at_once]
    for n, h in enumerate(held[:early]):
        why: Why = "clock" if n < due else "overflow"
        seconds = max(0.0, (now - h.arrived_at).total_seconds())
        out.append(Released(h.event, why, seconds, h.origin, h.key[2:]))
    if early:
        last = held[early - 1].key
        frontier = last if frontier is None or last > frontier else frontier
        held = held[early:]
    return Ordering(merged, clock, frontier, held), tuple(out)


def reference_holds(held: tuple[Held, ...], key: Key) -> bool:
    i = bisect_left(held, key, key=_KEY)
    return i < len(held) and held[i].key == key


def reference_held_from(state: Ordering, origin: int, arrivals: Iterable[Arrival]) -> list[Held]:
    found = []
    held = state.held
    for arrival in arrivals:
        i = bisect_left(held, arrival.key, key=_KEY)
        if i < len(held) and held[i].key == arrival.key and held[i].origin == origin:
            found.append(held[i])
    return found


# --------------------------------------------------------------------------- the strategies


def times(seconds: int = 12) -> st.SearchStrategy[datetime]:
    """Few distinct instants: ties in event time, arrival times shared by many events."""
    return st.integers(0, seconds).map(lambda s: T0 + timedelta(seconds=s))


keys: st.SearchStrategy[Key] = st.tuples(
    times(), st.sampled_from(TOPICS), st.integers(0, 1), st.integers(0, 3)
)


def event_of(key: Key) -> Event:
    at, topic, partition, offset = key
    event_id = f"{topic}/{partition}/{offset}/{at.isoformat()}"
    return Event(event_id, "c", "clickstream", topic, "page_view", at)


def arrival_of(key: Key, skewed: bool) -> Arrival:
    return Arrival(event_of(key), key[2], key[3], skewed=skewed)


@st.composite
def held_events(draw: st.DrawFn) -> tuple[Held, ...]:
    """Sorted by key, each key once (as :class:`Ordering` keeps them); arrival times are shared
    objects, equal objects, or later than the wall clock (a hold time below zero)."""
    chosen = sorted(draw(st.sets(keys, max_size=12)))
    shared = [T0 + timedelta(seconds=s) for s in (3, 8, 20)]
    held = []
    for key in chosen:
        arrived = draw(st.one_of(st.sampled_from(shared), times(20)))
        held.append(Held(key, event_of(key), arrived, draw(st.integers(0, 3))))
    return tuple(held)


marks_of = st.dictionaries(
    st.sampled_from(INPUTS),
    st.builds(Mark, st.one_of(st.none(), times()), st.booleans()),
    max_size=len(INPUTS),
)


@st.composite
def steps(draw: st.DrawFn) -> tuple[Ordering, list[Arrival], dict[InputPartition, Mark]]:
    held = draw(held_events())
    frontier = draw(st.one_of(st.none(), keys))
    clock = draw(st.one_of(st.none(), times()))
    state = Ordering(draw(marks_of), clock, frontier, held)
    # Arrivals: new keys, repeats, and redeliveries of held ones; some skewed.
    pool = st.one_of(keys, st.sampled_from([h.key for h in held])) if held else keys
    arrivals = draw(st.lists(pool, max_size=14))
    skewed = draw(st.lists(keys, max_size=2))
    mixed = [arrival_of(k, False) for k in arrivals] + [arrival_of(k, True) for k in skewed]
    order = draw(st.permutations(range(len(mixed))))
    return state, [mixed[i] for i in order], draw(marks_of)


# --------------------------------------------------------------------------- the properties


@settings(max_examples=600, deadline=None)
@given(
    steps(),
    st.integers(0, 10),
    st.integers(0, 3),
    times(20),
    st.lists(st.sampled_from(INPUTS), unique=True),
)
def test_accept_agrees_with_the_plain_rules(
    step: tuple[Ordering, list[Arrival], dict[InputPartition, Mark]],
    max_held: int,
    origin: int,
    now: datetime,
    inputs: list[InputPartition],
) -> None:
    state, arrivals, marks = step
    config = OrderingConfig(timedelta(seconds=2), max_held, timedelta(seconds=5))
    for reported in (marks, {}):
        got = accept(
            state, arrivals, reported, inputs=inputs, now=now, config=config, origin=origin
        )
        want = reference_accept(
            state, arrivals, reported, inputs=inputs, now=now, config=config, origin=origin
        )
        assert got == want
        after = got[0]
        for o in range(4):
            assert held_from(after, o, arrivals) == reference_held_from(after, o, arrivals)
            assert held_from(state, o, arrivals) == reference_held_from(state, o, arrivals)


@given(marks_of, marks_of)
def test_merged_marks_agree_with_the_plain_merge(
    known: dict[InputPartition, Mark], reported: dict[InputPartition, Mark]
) -> None:
    assert merge_marks(known, reported) == reference_merge_marks(known, reported)
