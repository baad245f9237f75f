"""Event-time ordering (processor.engine.ordering): unit tests and hypothesis properties.

The properties simulate the whole path without a broker: per-input-partition
streams, one or two routers that each read some of the input partitions in any
interleaving (a topic read entirely before the others included), watermark
marks carried to every customer partition, and the engine side holding and
releasing events, then applying them with the real stage engine. The stage-change
chains must equal those of the same events applied one by one in event-time order.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from processor.engine import CustomerState, Event, Source, StageChange, apply, load_model
from processor.engine.ordering import (
    Arrival,
    Held,
    InputPartition,
    InputWatermark,
    Key,
    Mark,
    Ordering,
    OrderingConfig,
    Released,
    accept,
    clock_of,
    is_skewed,
    merge_marks,
    restore,
    timer_clock,
)
from processor.engine.triggers import TriggerFired

MODEL = load_model()
T0 = datetime(2025, 1, 1, tzinfo=UTC)
WALL = datetime(2026, 1, 1, tzinfo=UTC)
"""The wall clock of the simulated backlog: after every event."""
TOPICS: dict[Source, str] = {
    "clickstream": "journey.clickstream",
    "research": "journey.research",
    "support": "journey.support",
}
TYPES: dict[Source, list[str]] = defaultdict(list)
for _source, _type in MODEL.evidence:
    TYPES[_source].append(_type)
SETTINGS = settings(max_examples=200, deadline=None)
_ids = itertools.count()


def config(lateness: float = 5.0, max_held: int = 10**6) -> OrderingConfig:
    return OrderingConfig(timedelta(seconds=lateness), max_held, timedelta(seconds=300))


def ev(customer: str, source: Source, type_: str, at: datetime) -> Event:
    return Event(f"e{next(_ids)}", customer, source, TOPICS[source], type_, at)


# --------------------------------------------------------------------------- unit tests


def test_the_clock_is_the_minimum_watermark_over_every_input_partition() -> None:
    a, b = ("t", 0), ("t", 1)
    marks = {a: Mark(T0), b: Mark(T0 + timedelta(hours=1))}
    assert clock_of(marks, [a, b]) == T0
    assert clock_of({a: Mark(T0)}, [a, b]) is None, "an unreported partition holds the clock"


def test_watermarks_never_go_back_and_idle_partitions_follow_the_wall_clock() -> None:
    a = ("t", 0)
    merged = merge_marks({a: Mark(T0 + timedelta(hours=1))}, {a: Mark(T0)})
    assert merged[a].watermark == T0 + timedelta(hours=1)
    lateness = timedelta(seconds=5)
    seen = InputWatermark().advanced(T0)
    assert seen.mark(idle=False, wall=WALL, lateness=lateness) == Mark(T0 - lateness)
    assert seen.mark(idle=True, wall=WALL, lateness=lateness) == Mark(WALL - lateness, True)
    assert InputWatermark().mark(idle=False, wall=WALL, lateness=lateness) == Mark(None)


def test_events_are_held_until_the_clock_passes_them_then_released_in_event_time_order() -> None:
    a, b = ("journey.clickstream", 0), ("journey.support", 0)
    inputs = [a, b]
    late_click = ev("c", "clickstream", "order_completed", T0 + timedelta(minutes=10))
    early_support = ev("c", "support", "ticket_opened", T0 + timedelta(minutes=5))
    state, out = accept(
        Ordering(),
        [Arrival(late_click, 0, 0)],
        {a: Mark(late_click.occurred_at)},
        inputs=inputs,
        now=WALL,
        config=config(),
    )
    assert out == () and len(state.held) == 1, "support has not reported: hold"
    state, out = accept(
        state,
        [Arrival(early_support, 0, 0)],
        {b: Mark(T0 + timedelta(minutes=6)), a: Mark(T0 + timedelta(hours=1))},
        inputs=inputs,
        now=WALL,
        config=config(),
    )
    assert [r.event for r in out] == [early_support], "clock = support's mark: 6 min"
    state, out = accept(
        state,
        [],
        {b: Mark(T0 + timedelta(hours=1), True)},
        inputs=inputs,
        now=WALL,
        config=config(),
    )
    assert [r.event for r in out] == [late_click] and not state.held
    assert all(r.why == "clock" for r in out)


def test_an_event_older_than_the_clock_is_applied_at_once_and_flagged_late() -> None:
    a = ("journey.clickstream", 0)
    state = Ordering({a: Mark(T0)}, T0)
    old = ev("c", "clickstream", "page_view", T0 - timedelta(hours=1))
    state, out = accept(state, [Arrival(old, 0, 7)], {}, inputs=[a], now=WALL, config=config())
    assert [(r.event, r.why, r.late) for r in out] == [(old, "late", True)]
    assert state.frontier == (old.occurred_at, old.topic, 0, 7)


def test_at_the_bound_the_oldest_are_released_early_in_order() -> None:
    a = ("journey.clickstream", 0)
    events = [ev("c", "clickstream", "page_view", T0 + timedelta(seconds=s)) for s in (3, 1, 2)]
    state, out = accept(
        Ordering(),
        [Arrival(e, 0, n) for n, e in enumerate(events)],
        {},
        inputs=[a],
        now=WALL,
        config=config(max_held=1),
    )
    assert [(r.event.occurred_at, r.why) for r in out] == [
        (T0 + timedelta(seconds=1), "overflow"),
        (T0 + timedelta(seconds=2), "overflow"),
    ]
    assert [h.event for h in state.held] == [events[0]]
    later = ev("c", "clickstream", "page_view", T0 + timedelta(seconds=1, milliseconds=500))
    _, out = accept(state, [Arrival(later, 0, 9)], {}, inputs=[a], now=WALL, config=config())
    assert [r.why for r in out] == ["late"], "ordered before something released: late"


def test_a_skewed_event_is_applied_at_once_and_moves_no_clock() -> None:
    a = ("journey.clickstream", 0)
    future = ev("c", "clickstream", "page_view", datetime(9998, 1, 1, tzinfo=UTC))
    assert is_skewed(future.occurred_at, WALL, timedelta(seconds=300))
    assert not is_skewed(WALL + timedelta(seconds=299), WALL, timedelta(seconds=300))
    state, out = accept(
        Ordering(),
        [Arrival(future, 0, 0, skewed=True)],
        {a: Mark(datetime(9998, 1, 1, tzinfo=UTC))},  # even a lying mark is capped
        inputs=[a],
        now=WALL,
        config=config(),
    )
    assert [r.why for r in out] == ["skewed"]
    assert state.clock == WALL + timedelta(seconds=300) and state.frontier is None


def test_a_redelivered_event_is_held_once() -> None:
    a = ("journey.clickstream", 0)
    e = ev("c", "clickstream", "page_view", T0)
    state, _ = accept(Ordering(), [Arrival(e, 0, 0)], {}, inputs=[a], now=WALL, config=config())
    state, out = accept(state, [Arrival(e, 0, 0)], {}, inputs=[a], now=WALL, config=config())
    assert out == () and len(state.held) == 1


def test_restore_drops_what_was_released_already() -> None:
    e1 = ev("c", "clickstream", "page_view", T0)
    e2 = ev("c", "clickstream", "page_view", T0 + timedelta(seconds=1))
    k1: Key = (e1.occurred_at, e1.topic, 0, 0)
    k2: Key = (e2.occurred_at, e2.topic, 0, 1)
    stored = [Held(k2, e2, WALL, 5), Held(k1, e1, WALL, 5), Held(k2, e2, WALL, 5)]
    restored = restore(Ordering(frontier=k1), stored)
    assert [h.key for h in restored.held] == [k2]


def test_timers_follow_the_wall_clock_only_when_everything_is_idle_and_nothing_held() -> None:
    a = ("t", 0)
    lateness = timedelta(seconds=2)
    recent = WALL - lateness
    idle = Ordering({a: Mark(recent, True)}, recent)
    assert timer_clock(idle, WALL, lateness) == WALL
    stale = Ordering({a: Mark(T0, True)}, T0)
    assert timer_clock(stale, WALL, lateness) == T0, "idle marks from long ago: still behind"
    busy = Ordering({a: Mark(recent, False)}, recent)
    assert timer_clock(busy, WALL, lateness) == recent
    e = ev("c", "clickstream", "page_view", WALL)
    holding = Ordering(
        {a: Mark(recent, True)}, recent, None, (Held((WALL, "t", 0, 0), e, WALL, 0),)
    )
    assert timer_clock(holding, WALL, lateness) == recent


# --------------------------------------------------------------------------- the simulation


@dataclass
class Scenario:
    streams: dict[InputPartition, list[Event]]
    """Each input partition's events, in the order they are on the partition."""
    schedule: list[tuple[int, int]]
    """(which input partition, how many records) reads, in order; the lags."""
    routers: int
    customer_partitions: int
    lateness: float


@st.composite
def scenarios(draw: st.DrawFn, *, within_lateness: bool = True) -> Scenario:
    lateness = draw(st.sampled_from([0.0, 1.0, 30.0, 3600.0]))
    counts = {
        source: draw(st.integers(1, 3))
        for source in draw(st.sets(st.sampled_from(list(TOPICS)), min_size=1))
    }
    customers = [f"c{n}" for n in range(draw(st.integers(1, 4)))]
    streams: dict[InputPartition, list[Event]] = {}
    for source, partitions in counts.items():
        for p in range(partitions):
            n = draw(st.integers(0, 12))
            clock = T0 + timedelta(days=draw(st.integers(0, 40)))
            newest = clock
            events: list[Event] = []
            for _ in range(n):
                # forward steps of seconds to weeks (cycles need > 30 days), or a step back
                step = draw(st.sampled_from([0, 1, 30, 3600, 86400, 40 * 86400]))
                back = draw(st.floats(0, 1)) * (lateness if within_lateness else 3 * 86400)
                clock += timedelta(seconds=step)
                at = (
                    max(clock - timedelta(seconds=back), newest - timedelta(seconds=lateness))
                    if within_lateness
                    else clock - timedelta(seconds=back)
                )
                newest = max(newest, at)
                customer = draw(st.sampled_from(customers))
                type_ = draw(st.sampled_from(TYPES[source]))
                event = ev(customer, source, type_, at)
                events.append(event)
                if draw(st.integers(0, 9)) == 0:  # a duplicate right behind it
                    events.append(event)
            streams[(TOPICS[source], p)] = events
    parts = list(streams)
    schedule = draw(
        st.lists(st.tuples(st.integers(0, len(parts) - 1), st.integers(1, 6)), max_size=60)
    )
    return Scenario(
        streams,
        schedule,
        routers=draw(st.integers(1, 2)),
        customer_partitions=draw(st.integers(1, 3)),
        lateness=lateness,
    )


def owner(customer: str, partitions: int) -> int:
    return sum(map(ord, customer)) % partitions


@dataclass
class Outcome:
    changes: dict[str, list[StageChange]] = field(default_factory=lambda: defaultdict(list))
    states: dict[str, CustomerState | None] = field(
        default_factory=lambda: defaultdict(lambda: None)
    )
    fired: dict[str, list[TriggerFired]] = field(default_factory=lambda: defaultdict(list))
    released: list[Released] = field(default_factory=list)
    released_on: list[int] = field(default_factory=list)
    """The customer partition each released event was released on."""

    def apply(self, event: Event) -> None:
        step = apply(self.states[event.customer_id], event, MODEL)
        self.states[event.customer_id] = step.state
        for output in step.outputs:
            if isinstance(output, StageChange):
                self.changes[event.customer_id].append(output)
            elif isinstance(output, TriggerFired):
                self.fired[event.customer_id].append(output)

    def chains(self) -> dict[str, list[tuple[object, ...]]]:
        return {
            c: [
                (x.from_stage, x.to_stage, x.cycle, x.sequence, x.changed_at, x.evidence)
                for x in changes
            ]
            for c, changes in self.changes.items()
        }

    def finals(self) -> dict[str, tuple[object, ...]]:
        return {c: (s.stage, s.cycle, s.sequence) for c, s in self.states.items() if s is not None}

    def triggers(self) -> dict[str, list[tuple[object, ...]]]:
        return {c: [(t.rule, t.cycle, t.fired_at) for t in f] for c, f in self.fired.items()}


def run(scenario: Scenario, max_held: int = 10**6) -> Outcome:
    """The processor, simulated: routers read, mark and bundle; the engine side orders."""
    cfg = config(scenario.lateness, max_held)
    parts = list(scenario.streams)
    router_of = {p: n % scenario.routers for n, p in enumerate(parts)}
    position = dict.fromkeys(parts, 0)
    seen = {p: InputWatermark() for p in parts}
    orderings = [Ordering() for _ in range(scenario.customer_partitions)]
    outcome = Outcome()
    origin = itertools.count()

    def deliver(target: int, arrivals: list[Arrival], marks: dict[InputPartition, Mark]) -> None:
        orderings[target], released = accept(
            orderings[target],
            arrivals,
            marks,
            inputs=parts,
            now=WALL,
            config=cfg,
            origin=next(origin),
        )
        for r in released:
            outcome.released.append(r)
            outcome.released_on.append(target)
            outcome.apply(r.event)

    def marks_of(router: int, idle: bool = False) -> dict[InputPartition, Mark]:
        return {
            p: seen[p].mark(
                idle=idle or position[p] >= len(scenario.streams[p]),
                wall=WALL,
                lateness=cfg.lateness,
            )
            for p in parts
            if router_of[p] == router
        }

    for index, size in scenario.schedule:
        p = parts[index]
        records = scenario.streams[p][position[p] : position[p] + size]
        bundles: dict[int, list[Arrival]] = defaultdict(list)
        for offset, event in enumerate(records, start=position[p]):
            bundles[owner(event.customer_id, scenario.customer_partitions)].append(
                Arrival(event, p[1], offset)
            )
            seen[p] = seen[p].advanced(event.occurred_at)
        position[p] += len(records)
        marks = marks_of(router_of[p])
        for target, arrivals in sorted(bundles.items()):
            deliver(target, arrivals, marks)
        for target in range(scenario.customer_partitions):  # the periodic watermark bundle
            deliver(target, [], marks)
    # The rest of each partition, in one read each, then everything idle.
    for p in parts:
        records = scenario.streams[p][position[p] :]
        for offset, event in enumerate(records, start=position[p]):
            seen[p] = seen[p].advanced(event.occurred_at)
            deliver(
                owner(event.customer_id, scenario.customer_partitions),
                [Arrival(event, p[1], offset)],
                marks_of(router_of[p]),
            )
        position[p] = len(scenario.streams[p])
    for router in range(scenario.routers):
        for target in range(scenario.customer_partitions):
            deliver(target, [], marks_of(router, idle=True))
    assert all(not o.held for o in orderings), "everything is released once all is idle"
    return outcome


def in_event_time_order(scenario: Scenario) -> Outcome:
    """The reference: every record, sorted by (occurred_at, topic, partition, offset)."""
    keyed = [
        ((e.occurred_at, e.topic, p[1], offset), e)
        for p, events in scenario.streams.items()
        for offset, e in enumerate(events)
    ]
    outcome = Outcome()
    for _, event in sorted(keyed, key=lambda pair: pair[0]):
        outcome.apply(event)
    return outcome


@SETTINGS
@given(scenarios(within_lateness=True))
def test_within_the_lateness_every_chain_is_the_event_time_chain(scenario: Scenario) -> None:
    got, expected = run(scenario), in_event_time_order(scenario)
    assert not [r for r in got.released if r.why != "clock"], "nothing late, nothing early"
    assert got.chains() == expected.chains()
    assert got.finals() == expected.finals()
    assert got.triggers() == expected.triggers()


@SETTINGS
@given(scenarios(within_lateness=False))
def test_beyond_the_lateness_only_late_or_early_events_break_the_order(scenario: Scenario) -> None:
    """Exactly when no event is late (or released early) is the application order event-time
    order; late events are never dropped."""
    got, expected = run(scenario), in_event_time_order(scenario)
    total = sum(len(events) for events in scenario.streams.values())
    assert len(got.released) == total, "every record is released exactly once"
    in_time = [
        (t, r) for t, r in zip(got.released_on, got.released, strict=True) if r.why == "clock"
    ]
    for target in range(scenario.customer_partitions):
        keys = [r.event.occurred_at for t, r in in_time if t == target]
        assert keys == sorted(keys), "in-time events are applied in event-time order"
    if len(in_time) == total:
        assert got.chains() == expected.chains()
        assert got.finals() == expected.finals()


@SETTINGS
@given(scenarios(within_lateness=True), st.integers(1, 4))
def test_a_full_buffer_releases_early_counted_and_loses_nothing(
    scenario: Scenario, max_held: int
) -> None:
    got = run(scenario, max_held=max_held)
    total = sum(len(events) for events in scenario.streams.values())
    assert len(got.released) == total
    early = [r for r in got.released if r.why == "overflow"]
    if not early and not [r for r in got.released if r.why == "late"]:
        assert got.chains() == in_event_time_order(scenario).chains()
