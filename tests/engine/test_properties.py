"""Properties of the stage engine over generated event sequences (hypothesis)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from processor.engine import (
    DEDUPE_CHUNK,
    ChunkSealed,
    CustomerState,
    Event,
    FixedEvidence,
    Output,
    Source,
    StageChange,
    Step,
    apply,
    load_model,
    reemit,
    stage_change_id,
)

MODEL = replace(load_model(), triggers=())  # stage rules only; triggers: test_triggers.py
CUSTOMER = "cust-p"
T0 = datetime(2024, 1, 1, tzinfo=UTC)
TOPICS: dict[Source, str] = {
    "clickstream": "journey.clickstream",
    "research": "journey.research",
    "support": "journey.support",
}
ORDER: tuple[Source, str] = ("clickstream", "order_completed")
KNOWN_NON_ORDER = sorted(key for key in MODEL.evidence if key != ORDER)
UNKNOWN: list[tuple[Source, str]] = [
    ("clickstream", "logout"),
    ("research", "page_view"),
    ("support", "order_completed"),
    ("support", "newsletter_signup"),
    ("clickstream", "complaint"),
]

SETTINGS = settings(max_examples=300, deadline=None)


def ev(source: Source, type_: str, occurred_at: datetime, event_id: str) -> Event:
    return Event(
        event_id=event_id,
        customer_id=CUSTOMER,
        source=source,
        topic=TOPICS[source],
        type=type_,
        occurred_at=occurred_at,
    )


def _events(
    draw: st.DrawFn,
    kinds: Sequence[tuple[Source, str]],
    times: st.SearchStrategy[datetime],
    max_size: int,
) -> list[Event]:
    # Now and then a long history, so that dedupe chunks get sealed.
    min_size = draw(st.sampled_from([0, 0, 0, DEDUPE_CHUNK - 4]))
    picked = draw(
        st.lists(
            st.tuples(st.sampled_from(kinds), times),
            min_size=min_size,
            max_size=max_size,
        )
    )
    return [ev(s, t, when, f"e{i}") for i, ((s, t), when) in enumerate(picked)]


# Whole hours within 29 days: coarse enough that equal times (a contact at exactly the
# purchase time) come up often, short enough that no evidence is 30 days after a purchase.
WINDOW_HOURS = 29 * 24 - 1
cycle_times = st.integers(0, WINDOW_HOURS).map(lambda h: T0 + timedelta(hours=h))


@st.composite
def one_cycle(draw: st.DrawFn) -> list[Event]:
    """Events of one customer within one cycle, in arrival order.

    At most one completed order; any mix of the default types of all three sources;
    some unknown types; all occurring within a 29-day window.
    """
    kinds = draw(
        st.sampled_from(
            [
                KNOWN_NON_ORDER,
                KNOWN_NON_ORDER + UNKNOWN,
                [k for k in MODEL.evidence if k[0] == "support"],
            ]
        )
    )
    events = _events(draw, kinds, cycle_times, max_size=40)
    if draw(st.booleans()):
        position = draw(st.integers(0, len(events)))
        events.insert(position, ev(*ORDER, draw(cycle_times), "order"))
    return events


@st.composite
def many_cycles(draw: st.DrawFn) -> list[Event]:
    """Events of one customer over a year, with several orders, in random arrival order."""
    times = st.integers(0, 365 * 24 * 60).map(lambda m: T0 + timedelta(minutes=m))
    kinds = [*KNOWN_NON_ORDER, *UNKNOWN, *([ORDER] * 4)]
    return _events(draw, kinds, times, max_size=80)


@st.composite
def with_duplicates(draw: st.DrawFn, base: st.SearchStrategy[list[Event]]):
    """(originals, sends): sends re-sends some already-sent events at later positions."""
    originals = draw(base)
    sends = list(originals)
    if sends:
        for _ in range(draw(st.integers(0, 15))):
            source = draw(st.integers(0, len(sends) - 1))
            sends.insert(draw(st.integers(source + 1, len(sends))), sends[source])
    return originals, sends


class Shell:
    """The engine's caller, reduced to what the engine asks of it.

    It keeps the sealed dedupe chunks (dropping expired ones) and calls :func:`replay`
    for ids found there, as the docstring of :func:`apply` says the shell must.
    """

    def __init__(self) -> None:
        self.state: CustomerState | None = None
        self.sealed: dict[int, tuple[str, ...]] = {}
        self.steps: list[Step] = []

    def send(self, event: Event) -> Step:
        known = MODEL.evidence_for(event.source, event.type) is not None
        if (
            known
            and self.state is not None
            and any(event.event_id in ids for ids in self.sealed.values())
        ):
            step = reemit(self.state, event.event_id)
        else:
            step = apply(self.state, event, MODEL)
        for out in step.outputs:
            if isinstance(out, ChunkSealed):
                self.sealed[out.index] = out.event_ids
                self.sealed.pop(out.expired_index, None)
        self.state = step.state
        self.steps.append(step)
        return step

    def run(self, events: Iterable[Event]) -> Shell:
        for event in events:
            self.send(event)
        return self

    @property
    def outputs(self) -> list[Output]:
        return [o for s in self.steps for o in s.outputs]

    @property
    def changes(self) -> list[StageChange]:
        return [o for o in self.outputs if isinstance(o, StageChange)]


def expected_final_stage(events: list[Event]) -> str | None:
    """An independent oracle for one cycle: the furthest stage any event is evidence of."""
    purchase_at = next((e.occurred_at for e in events if (e.source, e.type) == ORDER), None)
    stages = []
    for e in events:
        evidence = MODEL.evidence_for(e.source, e.type)
        if evidence is None:
            continue
        if isinstance(evidence, FixedEvidence):
            stages.append(evidence.stage)
        elif purchase_at is not None and e.occurred_at >= purchase_at:
            stages.append(evidence.after_purchase)
        else:
            stages.append(evidence.before_purchase)
    return max(stages, key=MODEL.rank.__getitem__, default=None)


def check_invariants(shell: Shell) -> None:
    """What must hold of any run, whatever the events."""
    emitted = [c for s in shell.steps if s.outcome == "applied" for c in s.outputs]
    first_time = [c for c in emitted if isinstance(c, StageChange)]
    state = shell.state

    assert [c.sequence for c in first_time] == list(range(1, len(first_time) + 1))
    for change in first_time:
        assert change.id == stage_change_id(change)
        assert change.customer_id == CUSTOMER
        assert change.model_name == MODEL.name
        assert change.model_version == MODEL.version
    if first_time:
        assert first_time[0].from_stage is None
        assert first_time[0].previous_stage_entered_at is None
        assert first_time[0].cycle == 1
    for prev, change in itertools.pairwise(first_time):
        assert change.cycle in (prev.cycle, prev.cycle + 1), "cycles never decrease or skip"
        assert change.from_stage == prev.to_stage
        assert change.previous_stage_entered_at == prev.changed_at
        if change.cycle == prev.cycle:
            assert MODEL.rank[change.to_stage] > MODEL.rank[prev.to_stage]
        else:
            # A new cycle starts at the purchase or at pre-purchase evidence.
            assert MODEL.rank[change.to_stage] <= MODEL.purchase_rank

    sealed = [o for o in emitted if isinstance(o, ChunkSealed)]
    assert [c.index for c in sealed] == list(range(len(sealed)))
    assert all(len(c.event_ids) == DEDUPE_CHUNK for c in sealed)

    if state is None:
        assert first_time == []
        assert all(s.outcome == "ignored" for s in shell.steps)
        return
    assert state.sequence == len(first_time)
    assert state.stage == first_time[-1].to_stage
    assert state.cycle == first_time[-1].cycle
    assert state.stage_entered_at == first_time[-1].changed_at
    applied = sum(s.outcome == "applied" for s in shell.steps)
    assert state.applied_count == applied
    assert len(state.recent_event_ids) == applied % DEDUPE_CHUNK
    assert state.recent_changes == tuple(first_time[-len(state.recent_changes) :])
    assert state.purchase_at is None or state.stage in ("purchase", "post_purchase")


# --------------------------------------------------------------------------- one cycle


@SETTINGS
@given(st.data())
def test_final_stage_and_cycle_do_not_depend_on_arrival_order(data):
    events = data.draw(one_cycle())
    permuted = data.draw(st.permutations(events))

    a = Shell().run(events).state
    b = Shell().run(permuted).state

    if a is None:
        assert b is None
        return
    assert (b.stage, b.cycle) == (a.stage, a.cycle)
    assert b.purchase_at == a.purchase_at
    assert b.last_event_at == a.last_event_at
    assert b.applied_count == a.applied_count


@SETTINGS
@given(one_cycle())
def test_final_stage_within_a_cycle_is_the_furthest_evidence(events):
    state = Shell().run(events).state
    expected = expected_final_stage(events)
    if expected is None:
        assert state is None
    else:
        assert (state.stage, state.cycle) == (expected, 1)


@SETTINGS
@given(with_duplicates(one_cycle()))
def test_duplicates_change_nothing_and_emit_no_new_change(pair):
    originals, sends = pair
    clean = Shell().run(originals)
    noisy = Shell().run(sends)

    assert noisy.state == clean.state
    by_id = {c.id: c for c in clean.changes}
    for change in noisy.changes:
        assert change.id in by_id
        assert change == by_id[change.id]
    # The steps of first sends are exactly the clean run.
    first_steps, sent = [], set()
    for event, step in zip(sends, noisy.steps, strict=True):
        if event.event_id not in sent:
            first_steps.append(step)
            sent.add(event.event_id)
    assert first_steps == clean.steps

    seen: set[str] = set()
    for event, step in zip(sends, noisy.steps, strict=True):
        known = MODEL.evidence_for(event.source, event.type) is not None
        if not known:
            assert step.outcome == "ignored"
        elif event.event_id in seen:
            assert step.outcome == "duplicate"
            assert not any(isinstance(o, ChunkSealed) for o in step.outputs)
            assert all(c.caused_by == event.event_id for c in step.outputs)
        else:
            assert step.outcome == "applied"
            seen.add(event.event_id)


@SETTINGS
@given(one_cycle())
def test_a_duplicate_right_after_its_original_re_emits_exactly_what_it_caused(events):
    shell = Shell()
    for event in events:
        first = shell.send(event)
        again = shell.send(event)
        if first.outcome == "ignored":
            assert again == first
        else:
            assert again.outcome == "duplicate"
            assert again.state == first.state
            assert again.outputs == tuple(o for o in first.outputs if isinstance(o, StageChange))


@SETTINGS
@given(one_cycle())
def test_invariants_within_one_cycle(events):
    shell = Shell().run(events)
    check_invariants(shell)
    if shell.state is not None:
        assert shell.state.cycle == 1


# --------------------------------------------------------------------------- many cycles


@SETTINGS
@given(many_cycles())
def test_never_raises_and_invariants_hold_across_cycles(events):
    check_invariants(Shell().run(events))


@SETTINGS
@given(with_duplicates(many_cycles()))
def test_duplicates_change_nothing_across_cycles(pair):
    originals, sends = pair
    clean = Shell().run(originals)
    noisy = Shell().run(sends)
    check_invariants(noisy)
    assert noisy.state == clean.state
    by_id = {c.id: c for c in clean.changes}
    assert all(by_id.get(c.id) == c for c in noisy.changes)


def time_ordered_oracle(events: list[Event]) -> tuple[str, int] | None:
    """Stage and cycle after events that arrive in time order, by the rules stated plainly."""
    stage: str | None = None
    cycle = 0
    purchase_at: datetime | None = None
    for e in events:
        evidence = MODEL.evidence_for(e.source, e.type)
        if evidence is None:
            continue
        if isinstance(evidence, FixedEvidence):
            target = evidence.stage
        elif purchase_at is not None and e.occurred_at >= purchase_at:
            target = evidence.after_purchase
        else:
            target = evidence.before_purchase
        is_order = (e.source, e.type) == ORDER
        if stage is None:
            stage, cycle = target, 1
        elif is_order:
            cycle += MODEL.rank[stage] >= MODEL.purchase_rank
            stage = target
        elif (
            MODEL.rank[stage] >= MODEL.purchase_rank
            and MODEL.rank[target] < MODEL.purchase_rank
            and isinstance(evidence, FixedEvidence)
            and e.occurred_at > purchase_at + timedelta(days=30)
        ):
            stage, cycle, purchase_at = target, cycle + 1, None
        elif MODEL.rank[target] > MODEL.rank[stage]:
            stage = target
        if is_order:
            purchase_at = e.occurred_at
    return None if stage is None else (stage, cycle)


@SETTINGS
@given(many_cycles())
def test_time_ordered_arrival_follows_the_rules_across_cycles(events):
    # Time order; an order first among events at the same instant (a contact at the
    # purchase time counts as after it).
    events = sorted(events, key=lambda e: (e.occurred_at, (e.source, e.type) != ORDER))
    state = Shell().run(events).state
    expected = time_ordered_oracle(events)
    assert (None if state is None else (state.stage, state.cycle)) == expected
    orders = sum((e.source, e.type) == ORDER for e in events)
    if orders:
        # Every order after the first starts a cycle, either itself or by a 3b restart before it.
        assert state.cycle >= orders
