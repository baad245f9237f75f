"""Properties of the identity merge (hypothesis): an anonymous journey merged into a customer's.

"Within one cycle" is the engine's order-independent fragment (test_properties.py):
there the merged state must be what the union of both histories gives, in every
field that does not depend on arrival order (stage, cycle, purchase time, last
event time, applied count, latest support time, remembered ids).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace as dc_replace
from datetime import timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.engine import (
    DEDUPE_CHUNK,
    ChunkSealed,
    CustomerState,
    DefinitionError,
    Event,
    EventRef,
    JourneyModel,
    StageChange,
    Step,
    apply,
    load_model,
    parse_model,
    reemit,
    stage_change_id,
)
from processor.engine.core import fire_due
from processor.engine.identity import (
    Merged,
    is_anonymous,
    is_identify,
    link,
    merge,
    partition_key,
    resolve,
    unlink,
)
from processor.engine.model import default_definition_text
from processor.engine.triggers import TriggerFired
from processor.engine.vocabulary import MergedStageChange
from tests.engine.test_properties import ORDER, T0, cycle_times, ev, many_cycles, one_cycle

STAGES = dc_replace(load_model(), triggers=())
FULL = load_model()
CUSTOMER = "cust-1"
SETTINGS = settings(max_examples=300, deadline=None)


class Party:
    """One id's journey as the shell keeps it: the state and its sealed dedupe chunks."""

    def __init__(self, customer_id: str, model: JourneyModel) -> None:
        self.customer_id = customer_id
        self.model = model
        self.state: CustomerState | None = None
        self.sealed: dict[int, tuple[str, ...]] = {}
        self.steps: list[Step] = []

    def remembers(self, event_id: str) -> bool:
        if self.state is None:
            return False
        return event_id in self.state.recent_event_ids or any(
            event_id in ids for ids in self.sealed.values()
        )

    def send(self, event: Event) -> Step:
        event = msgspec.structs.replace(event, customer_id=self.customer_id)
        known = self.model.evidence_for(event.source, event.type) is not None
        if known and self.state is not None and self.remembers(event.event_id):
            step = reemit(self.state, event.event_id)
        else:
            step = apply(self.state, event, self.model)
        self._store(o for o in step.outputs if isinstance(o, ChunkSealed))
        self.state = step.state
        self.steps.append(step)
        return step

    def run(self, events: Iterable[Event]) -> Party:
        for event in events:
            self.send(event)
        return self

    def chunks(self) -> list[tuple[str, ...]]:
        """The sealed chunks still in the window, oldest first, as the shell would pass them."""
        window = self.state.sealed_chunks if self.state is not None else range(0)
        return [self.sealed[i] for i in window if i in self.sealed]

    def absorb(self, other: Party, via: str) -> Merged:
        """Merge ``other`` (the anonymous id) into this party, as the shell would."""
        ref = EventRef(via, "journey.clickstream", "identify")
        if self.state is not None and any(via in ids for ids in self.sealed.values()):
            step = reemit(self.state, via)
            changes = tuple(o for o in step.outputs if isinstance(o, StageChange))
            return Merged(self.state, changes, (), range(0), "duplicate")
        merged = merge(
            self.state, other.state, self.model, into=self.customer_id, via=ref,
            b_sealed=other.chunks(),
        )  # fmt: skip
        self._store(merged.sealed)
        for index in merged.expired:
            self.sealed.pop(index, None)
        self.state = merged.state
        return merged

    def _store(self, sealed: Iterable[ChunkSealed]) -> None:
        for chunk in sealed:
            assert chunk.customer_id == self.customer_id
            self.sealed[chunk.index] = chunk.event_ids
            self.sealed.pop(chunk.expired_index, None)

    @property
    def changes(self) -> list[StageChange]:
        return [o for s in self.steps for o in s.outputs if isinstance(o, StageChange)]


def projection(state: CustomerState | None) -> tuple[Any, ...] | None:
    """What the union of histories decides within one cycle, whatever the arrival order."""
    if state is None:
        return None
    support = state.last_support
    return (
        state.stage,
        state.cycle,
        state.purchase_at,
        state.last_event_at,
        state.applied_count,
        None if support is None else support.occurred_at,
    )


def remembered(party: Party) -> set[str]:
    state = party.state
    if state is None:
        return set()
    return set(state.recent_event_ids).union(*party.chunks())


def applied_ids(party: Party, events: Sequence[Event]) -> set[str]:
    return {e.event_id for e, s in zip(events, party.steps, strict=True) if s.outcome == "applied"}


def counted(state: CustomerState | None, merges: int) -> tuple[Any, ...] | None:
    """The projection of a merged state, without the identify events it counted."""
    p = projection(state)
    return None if p is None else (*p[:4], p[4] - merges, p[5])


@st.composite
def split(draw: st.DrawFn, parts: int) -> list[list[Event]]:
    """One cycle's events (disjoint ids), dealt out to ``parts`` histories in arrival order."""
    events = draw(one_cycle())
    owners = draw(st.lists(st.integers(0, parts - 1), min_size=len(events), max_size=len(events)))
    return [[e for e, o in zip(events, owners, strict=True) if o == p] for p in range(parts)]


# --------------------------------------------------------------------------- the union


@SETTINGS
@given(split(2))
def test_a_merge_is_the_union_of_both_histories_within_one_cycle(histories):
    a_events, b_events = histories
    a = Party(CUSTOMER, STAGES).run(a_events)
    b = Party("anon-1", STAGES).run(b_events)
    union = Party(CUSTOMER, STAGES).run([*a_events, *b_events])
    a_before = a.state

    merged = a.absorb(b, "identify-1")

    assert counted(a.state, 1 if b.state is not None else 0) == projection(union.state)
    if b.state is not None:
        assert remembered(a) == applied_ids(union, [*a_events, *b_events]) | {"identify-1"}
        assert a.state is not None and a.state.customer_id == CUSTOMER
        assert len(a.state.recent_event_ids) == a.state.applied_count % DEDUPE_CHUNK
    moved = a_before is None or (a_before.stage, a_before.cycle) != (
        a.state.stage if a.state else None,
        a.state.cycle if a.state else None,
    )
    assert len(merged.changes) == (1 if b.state is not None and moved else 0)
    for change in merged.changes:
        assert isinstance(change, MergedStageChange)
        assert change.merged_from == "anon-1"
        assert change.customer_id == CUSTOMER
        assert change.caused_by == change.evidence.event_id == "identify-1"
        assert change.sequence == (0 if a_before is None else a_before.sequence) + 1
        assert change.from_stage == (None if a_before is None else a_before.stage)
        assert change.id == stage_change_id(change)
        assert a.state is not None and a.state.recent_changes[-1] == change


@SETTINGS
@given(split(3))
def test_merge_is_associative_over_disjoint_histories(histories):
    def parties() -> tuple[Party, Party, Party]:
        return (
            Party(CUSTOMER, STAGES).run(histories[0]),
            Party("anon-1", STAGES).run(histories[1]),
            Party("anon-2", STAGES).run(histories[2]),
        )

    a, b, c = parties()
    left_merges = [a.absorb(b, "identify-1").outcome, a.absorb(c, "identify-2").outcome]
    left, left_ids = a.state, remembered(a)

    a, b, c = parties()
    right_merges = [b.absorb(c, "identify-2").outcome, a.absorb(b, "identify-1").outcome]
    right, right_ids = a.state, remembered(a)

    # An identify with nothing to merge is not counted, so the identify ids may differ.
    assert counted(left, left_merges.count("applied")) == counted(
        right, right_merges.count("applied")
    )
    assert left_ids - {"identify-1", "identify-2"} == right_ids - {"identify-1", "identify-2"}
    if "ignored" not in left_merges + right_merges:
        assert projection(left) == projection(right)
        assert left_ids == right_ids
    union = Party(CUSTOMER, STAGES).run([e for h in histories for e in h])
    assert counted(left, left_merges.count("applied")) == projection(union.state)


@SETTINGS
@given(split(3))
def test_events_after_a_merge_land_as_on_the_union(histories):
    a_events, b_events, later = histories
    a = Party(CUSTOMER, STAGES).run(a_events)
    b = Party("anon-1", STAGES).run(b_events)
    a.absorb(b, "identify-1")
    merges = 1 if b.state is not None else 0
    union = Party(CUSTOMER, STAGES).run([*a_events, *b_events])
    steps_before = (len(a.steps), len(union.steps))

    a.run(later)
    union.run(later)

    assert counted(a.state, merges) == projection(union.state)
    after_merge = a.steps[steps_before[0] :]
    after_union = union.steps[steps_before[1] :]
    assert [s.outcome for s in after_merge] == [s.outcome for s in after_union]

    def moves(steps: list[Step]) -> list[tuple[str, int]]:
        return [
            (o.to_stage, o.cycle) for s in steps for o in s.outputs if isinstance(o, StageChange)
        ]

    assert moves(after_merge) == moves(after_union)


# --------------------------------------------------------------------------- identity


@SETTINGS
@given(one_cycle())
def test_merging_nothing_changes_nothing(events):
    a = Party(CUSTOMER, FULL).run(events)
    ref = EventRef("identify-1", "journey.clickstream", "identify")
    assert merge(a.state, None, FULL, into=CUSTOMER, via=ref) == (
        a.state,
        (),
        (),
        range(0),
        "ignored",
    )


@SETTINGS
@given(one_cycle())
def test_merging_into_nothing_is_the_anonymous_journey_under_the_customer_id(events):
    b = Party("anon-1", FULL).run(events)
    a = Party(CUSTOMER, FULL)
    merged = a.absorb(b, "identify-1")
    if b.state is None:
        assert a.state is None and merged.changes == ()
        return
    assert a.state is not None
    assert counted(a.state, 1) == projection(b.state)
    assert a.state.customer_id == CUSTOMER
    assert a.state.sequence == 1
    (change,) = merged.changes
    assert change.from_stage is None and change.previous_stage_entered_at is None
    assert (change.to_stage, change.cycle) == (b.state.stage, b.state.cycle)
    assert a.state.triggers.recent == ()
    assert remembered(a) == remembered(b) | {"identify-1"}


# --------------------------------------------------------------------------- dedupe


@st.composite
def two_histories(draw: st.DrawFn) -> tuple[list[Event], list[Event]]:
    """Independently drawn histories (long ones now and then), ids kept apart."""

    def renamed(events: list[Event], prefix: str) -> list[Event]:
        return [msgspec.structs.replace(e, event_id=prefix + e.event_id) for e in events]

    return renamed(draw(one_cycle()), "a-"), renamed(draw(one_cycle()), "b-")


@SETTINGS
@given(two_histories(), st.randoms(use_true_random=False))
def test_no_event_is_applied_twice_after_a_merge(histories, random):
    a_events, b_events = histories
    a = Party(CUSTOMER, FULL).run(a_events)
    b = Party("anon-1", FULL).run(b_events)
    first = a.absorb(b, "identify-1")
    state = a.state

    resent = [*a_events, *b_events]
    random.shuffle(resent)
    for event in resent:
        step = a.send(event)
        assert step.outcome in ("duplicate", "ignored"), event
        assert all(
            not isinstance(o, StageChange) or o.customer_id == CUSTOMER for o in step.outputs
        )
    assert a.state == state

    again = a.absorb(b, "identify-1")
    assert again.outcome == "duplicate" if b.state is not None else "ignored"
    assert again.state == state
    assert again.changes == first.changes


def test_a_long_anonymous_history_keeps_the_last_window_and_counts_everything():
    a = Party(CUSTOMER, STAGES).run(ev("clickstream", "page_view", T0, f"a{i}") for i in range(40))
    b = Party("anon-1", STAGES).run(
        ev("clickstream", "product_view", T0 + timedelta(minutes=i), f"b{i}") for i in range(1100)
    )
    a.absorb(b, "identify-1")
    assert a.state is not None
    assert a.state.applied_count == 40 + 1100 + 1
    assert len(a.state.recent_event_ids) == a.state.applied_count % DEDUPE_CHUNK
    assert set(a.sealed) == set(a.state.sealed_chunks)
    for i in range(1100 - 1000, 1100):
        assert a.remembers(f"b{i}")
    assert a.remembers("identify-1")
    assert a.state.stage == "information_search"


def test_without_the_sealed_chunks_the_open_chunk_still_has_its_length():
    b = Party("anon-1", STAGES).run(
        ev("clickstream", "page_view", T0 + timedelta(minutes=i), f"b{i}") for i in range(45)
    )
    assert b.state is not None
    ref = EventRef("identify-1", "journey.clickstream", "identify")
    merged = merge(None, b.state, STAGES, into=CUSTOMER, via=ref)  # no chunks passed
    assert merged.state is not None
    assert len(merged.state.recent_event_ids) == 46 % DEDUPE_CHUNK
    assert "identify-1" in merged.state.recent_event_ids
    assert all(set(c.event_ids) <= {f"b{i}" for i in range(45)} for c in merged.sealed)


# --------------------------------------------------------------------------- triggers

FAR = T0 + timedelta(days=3650)


ticks = st.integers(0, 29 * 24).map(lambda h: T0 + timedelta(hours=h))


@SETTINGS
@given(two_histories(), ticks, ticks)
def test_no_trigger_fires_twice_because_of_a_merge(histories, a_tick, b_tick):
    a_events, b_events = histories
    a = Party(CUSTOMER, FULL).run(a_events)
    b = Party("anon-1", FULL).run(b_events)
    for party, now in ((a, a_tick), (b, b_tick)):  # absences that fired before the merge
        if party.state is not None:
            step = fire_due(party.state, now, f"tick-{party.customer_id}", FULL)
            party.state = step.state
            party.steps.append(step)
    fired_before = [
        o for p in (a, b) for s in p.steps for o in s.outputs if isinstance(o, TriggerFired)
    ]
    timers_before = {
        (t.rule, t.deadline, t.anchor) for p in (a, b) if p.state for t in p.state.triggers.timers
    }
    a.absorb(b, "identify-1")
    if a.state is None:
        return
    timers = a.state.triggers.timers
    assert len({t.rule for t in timers}) == len(timers), "one timer per rule"
    assert {(t.rule, t.deadline, t.anchor) for t in timers} <= timers_before, "moved, not made"

    step = fire_due(a.state, FAR, "tick-far", FULL)
    rules = {r.name: r for r in FULL.triggers}
    after = [o for o in step.outputs if isinstance(o, TriggerFired)]
    assert len({f.rule for f in after}) == len(after)
    for fired in after:
        if rules[fired.rule].repeat:
            continue
        earlier = [f for f in fired_before if (f.rule, f.cycle) == (fired.rule, fired.cycle)]
        assert earlier == [], (fired, earlier)
    assert fire_due(step.state, FAR, "tick-far-2", FULL).outputs == ()


def test_an_armed_anonymous_timer_moves_to_the_customer_and_fires_once():
    b = Party("anon-1", FULL).run([ev("clickstream", "checkout_started", T0, "b1")])
    assert b.state is not None
    armed = [t.rule for t in b.state.triggers.timers]
    assert armed == ["cart_abandoned", "stalled_in_evaluation"]
    a = Party(CUSTOMER, FULL).run([ev("clickstream", "page_view", T0, "a1")])
    a.absorb(b, "identify-1")
    assert a.state is not None
    assert [t.rule for t in a.state.triggers.timers] == armed
    step = fire_due(a.state, T0 + timedelta(hours=2), "tick-1", FULL)
    (fired,) = step.outputs
    assert isinstance(fired, TriggerFired)
    assert (fired.rule, fired.customer_id) == ("cart_abandoned", CUSTOMER)
    later = fire_due(step.state, FAR, "tick-2", FULL).outputs
    assert [f.rule for f in later if isinstance(f, TriggerFired)] == ["stalled_in_evaluation"]


def test_a_rule_fired_anonymously_does_not_fire_again_for_the_customer():
    b = Party("anon-1", FULL).run([ev("clickstream", "checkout_started", T0, "b1")])
    assert b.state is not None
    tick = fire_due(b.state, T0 + timedelta(hours=2), "tick-b", FULL)
    assert [f.rule for f in tick.outputs if isinstance(f, TriggerFired)] == ["cart_abandoned"]
    b.state = tick.state
    later = T0 + timedelta(minutes=90)
    a = Party(CUSTOMER, FULL).run([ev("clickstream", "checkout_started", later, "a1")])
    a.absorb(b, "identify-1")
    assert a.state is not None
    assert "cart_abandoned" in [t.rule for t in a.state.triggers.timers]  # a's own, moved on
    step = fire_due(a.state, T0 + timedelta(hours=3), "tick-a", FULL)
    assert "cart_abandoned" not in [f.rule for f in step.outputs if isinstance(f, TriggerFired)]


# --------------------------------------------------------------------------- model and events


def test_the_identify_event_defaults_to_identify_on_the_clickstream():
    assert FULL.identify == ("clickstream", "identify")
    custom = parse_model(
        default_definition_text() + '\n[identity]\nsource = "research"\ntype = "login"\n'
    )
    assert custom.identify == ("research", "login")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('[identity]\ntype = "page_view"\n', "must not be evidence"),
        ('[identity]\nsource = "email"\n', "is not one of"),
        ('[identity]\nkind = "x"\n', "may only set"),
        ("[identity]\ntype = 3\n", "non-empty string"),
    ],
)
def test_a_bad_identity_table_is_refused(table: str, message: str) -> None:
    with pytest.raises(DefinitionError, match=message):
        parse_model(default_definition_text() + "\n" + table)


def test_which_events_identify_and_which_are_anonymous():
    base = ev("clickstream", "identify", T0, "x")
    with_ids = msgspec.structs.replace
    assert is_identify(with_ids(base, customer_id="c", anonymous_id="anon"), FULL)
    assert not is_identify(with_ids(base, customer_id="anon", anonymous_id="anon"), FULL)
    assert not is_identify(with_ids(base, customer_id="c"), FULL)
    page = with_ids(ev("clickstream", "page_view", T0, "y"), customer_id="c", anonymous_id="a")
    assert not is_identify(page, FULL)
    assert is_anonymous(with_ids(base, customer_id="anon", anonymous_id="anon"))
    assert not is_anonymous(with_ids(base, customer_id="c", anonymous_id="anon"))
    assert not is_anonymous(base)


def test_an_identify_is_applied_where_its_anonymous_id_lives_and_nothing_else_is():
    base = ev("clickstream", "identify", T0, "x")
    with_ids = msgspec.structs.replace
    assert partition_key(with_ids(base, customer_id="c", anonymous_id="anon"), FULL) == "anon"
    page = with_ids(ev("clickstream", "page_view", T0, "y"), customer_id="c", anonymous_id="a")
    assert partition_key(page, FULL) == "c"
    assert partition_key(with_ids(base, customer_id="a", anonymous_id="a"), FULL) == "a"


def test_the_engine_imports_no_shell_library():
    """Functional core: nothing under processor/engine imports faust, aiokafka or the shell."""
    import ast
    from pathlib import Path

    import processor.engine

    root = Path(processor.engine.__file__).parent
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                top = name.split(".")[0]
                assert top not in ("faust", "aiokafka", "mode"), (path.name, name)
                assert not name.startswith("processor.app"), (path.name, name)


# --------------------------------------------------------------------------- link and resolve


def _identify_event(customer: str = CUSTOMER, anonymous: str = "anon-1") -> Event:
    event = ev("clickstream", "identify", T0 + timedelta(days=1), "login-1")
    return msgspec.structs.replace(event, customer_id=customer, anonymous_id=anonymous)


@SETTINGS
@given(one_cycle())
def test_link_hands_over_the_anonymous_state_and_tombstones_its_chunks(events):
    b = Party("anon-1", FULL).run(events)
    decided = link(b.state, b.chunks(), _identify_event(), FULL)
    assert (decided.anonymous_id, decided.customer_id) == ("anon-1", CUSTOMER)
    assert decided.state == b.state
    assert set(decided.tombstones) >= set(b.sealed)  # every chunk key the anonymous id has
    assert [c for c in decided.chunks] == b.chunks()
    assert decided.record.identify.event_id == "login-1"
    again = link(b.state, b.chunks(), _identify_event(), FULL)
    assert again == decided  # a replay decides the same


def test_link_refuses_what_is_not_its_own():
    b = Party("anon-2", FULL).run([ev("clickstream", "page_view", T0, "b1")])
    with pytest.raises(ValueError, match="another id"):
        link(b.state, (), _identify_event(), FULL)
    with pytest.raises(ValueError, match="not an identify event"):
        link(None, (), _identify_event(anonymous=CUSTOMER), FULL)


def test_resolve_forwards_only_anonymous_events_of_a_linked_id():
    anonymous = msgspec.structs.replace(
        ev("clickstream", "page_view", T0, "x"), customer_id="anon-1", anonymous_id="anon-1"
    )
    assert resolve(anonymous, None) == anonymous
    moved = resolve(anonymous, CUSTOMER)
    assert (moved.customer_id, moved.anonymous_id) == (CUSTOMER, "anon-1")
    known = msgspec.structs.replace(anonymous, customer_id="cust-9")
    assert resolve(known, CUSTOMER) == known
    plain = ev("clickstream", "page_view", T0, "y")
    assert resolve(plain, CUSTOMER) == plain


def test_a_whole_identity_flow_on_one_partition_pair():
    """Anonymous events, identify, merge; a later anonymous-only event lands on the customer."""
    anon = Party("anon-1", FULL).run(
        [
            msgspec.structs.replace(e, anonymous_id="anon-1")
            for e in (
                ev("clickstream", "product_view", T0, "b1"),
                ev("clickstream", "add_to_cart", T0 + timedelta(hours=1), "b2"),
            )
        ]
    )
    customer = Party(CUSTOMER, FULL).run([ev("clickstream", "page_view", T0, "a1")])
    decided = link(anon.state, anon.chunks(), _identify_event(), FULL)
    anonymous_party = Party("anon-1", FULL)  # what the merge hands over travels in `decided`
    anonymous_party.state, anonymous_party.sealed = decided.state, dict(enumerate(decided.chunks))
    merged = customer.absorb(anonymous_party, decided.record.identify.event_id)
    assert [(c.from_stage, c.to_stage) for c in merged.changes] == [
        ("need_recognition", "evaluation")
    ]
    later = msgspec.structs.replace(
        ev("clickstream", "order_completed", T0 + timedelta(days=2), "b3"),
        customer_id="anon-1",
        anonymous_id="anon-1",
    )
    assert resolve(later, decided.customer_id).customer_id == CUSTOMER
    step = customer.send(resolve(later, decided.customer_id))
    assert customer.state is not None and customer.state.stage == "purchase"
    assert [c.customer_id for c in step.outputs if isinstance(c, StageChange)] == [CUSTOMER]
    assert customer.send(resolve(later, decided.customer_id)).outcome == "duplicate"


# --------------------------------------------------------------------------- across cycles


@st.composite
def histories_across_cycles(draw: st.DrawFn) -> tuple[list[Event], list[Event], list[Event]]:
    def renamed(events: list[Event], prefix: str) -> list[Event]:
        return [msgspec.structs.replace(e, event_id=prefix + e.event_id) for e in events]

    return (
        renamed(draw(many_cycles()), "a-"),
        renamed(draw(many_cycles()), "b-"),
        renamed(draw(many_cycles()), "l-"),
    )


@SETTINGS
@given(histories_across_cycles())
def test_across_cycles_a_merge_keeps_the_engines_invariants(histories):
    """Beyond one cycle the policy is a summary (the later cycle leads, one more if both
    sides bought), but still a state the engine can go on with: its sequence continues,
    nothing applied is forgotten."""
    a_events, b_events, later = histories
    a = Party(CUSTOMER, FULL).run(a_events)
    b = Party("anon-1", FULL).run(b_events)
    before = a.state
    merged = a.absorb(b, "identify-1")
    state = a.state
    if b.state is None:
        assert state == before
        return
    assert state is not None
    both_bought = before is not None and None not in (before.purchase_at, b.state.purchase_at)
    cycles = [s.cycle for s in (before, b.state) if s is not None]
    assert state.cycle == max(cycles) + (1 if both_bought else 0)
    assert state.sequence == (0 if before is None else before.sequence) + len(merged.changes)
    assert state.recent_changes[-1].to_stage == state.stage
    assert state.recent_changes[-1].cycle == state.cycle
    assert len(state.recent_event_ids) == state.applied_count % DEDUPE_CHUNK
    assert set(a.sealed) <= set(state.sealed_chunks)
    assert state.purchase_at is None or FULL.rank[state.stage] >= FULL.purchase_rank
    assert applied_ids(a, a_events) | applied_ids(b, b_events) <= remembered(a)

    a.run(later)
    final = a.state
    assert final is not None
    assert len(final.recent_event_ids) == final.applied_count % DEDUPE_CHUNK
    sequences = [c.sequence for c in final.recent_changes]
    assert sequences == list(range(final.sequence - len(sequences) + 1, final.sequence + 1))


# --------------------------------------------------------------------------- replays and aliases


@given(two_histories())
@SETTINGS
def test_a_replayed_merge_without_the_anonymous_state_is_a_duplicate(histories):
    """The replay of an identify after the anonymous state was tombstoned sends None."""
    a_events, b_events = histories
    customer = Party(CUSTOMER, FULL).run(a_events)
    anon = Party("anon-1", FULL).run(b_events)
    ref = EventRef("login-1", "journey.clickstream", "identify")
    first = merge(customer.state, anon.state, FULL, into=CUSTOMER, via=ref, b_sealed=anon.chunks())
    if first.outcome != "applied":
        return  # nothing was merged: nothing to repeat
    assert first.state is not None
    if "login-1" not in first.state.recent_event_ids:
        assert any("login-1" in c.event_ids for c in first.sealed)  # the shell's archive finds it
        return
    again = merge(first.state, None, FULL, into=CUSTOMER, via=ref)
    assert again.outcome == "duplicate" and again.state is first.state
    assert again.changes == first.changes


@given(two_histories())
@SETTINGS
def test_unlinking_a_forgotten_anonymous_id_leaves_no_trace_of_it_and_nothing_else_changes(
    histories,
):
    """The merged state no longer names the anonymous id; every change keeps its id; idempotent."""
    a_events, b_events = histories
    customer = Party(CUSTOMER, FULL).run(a_events)
    anon = Party("anon-1", FULL).run(b_events)
    merged = customer.absorb(anon, "login-1")
    aliases = ("anon-0", "anon-1", "anon-2")
    done = unlink(aliases, merged.state, "anon-1")
    assert done.aliases == ("anon-0", "anon-2")
    if merged.state is None:
        assert done.state is None
        return
    assert done.state is not None
    assert b"anon-1" not in msgspec.msgpack.encode(done.state)
    before, after = merged.state.recent_changes, done.state.recent_changes
    assert [c.id for c in after] == [c.id for c in before]
    assert msgspec.structs.replace(done.state, recent_changes=before) == merged.state
    assert not any(isinstance(c, MergedStageChange) for c in after)
    assert unlink(done.aliases, done.state, "anon-1") == done  # again: nothing more
    assert unlink(("anon-1",), None, "anon-1") == ((), None)


def test_unlinking_keeps_what_another_anonymous_id_merged():
    customer = Party(CUSTOMER, FULL)
    first = Party("anon-1", FULL).run([ev("clickstream", "page_view", T0, "a1")])
    second = Party("anon-2", FULL).run(
        [ev("clickstream", "checkout_started", T0 + timedelta(minutes=1), "a2")]
    )
    customer.absorb(first, "login-1")
    customer.absorb(second, "login-2")
    assert customer.state is not None
    froms = [getattr(c, "merged_from", None) for c in customer.state.recent_changes]
    assert froms == ["anon-1", "anon-2"]
    done = unlink(("anon-1", "anon-2"), customer.state, "anon-1")
    assert done.state is not None
    assert [getattr(c, "merged_from", None) for c in done.state.recent_changes] == [None, "anon-2"]
    assert done.aliases == ("anon-2",)


# --------------------------------------------------------------------------- an order on each side


@st.composite
def an_order_on_each_side(draw: st.DrawFn) -> tuple[list[Event], list[Event]]:
    """The customer's history over a year (its current cycle holds an order) and an
    anonymous visitor's one cycle with an order, somewhere in that year, each in event time.

    A guest checkout before the login, then a purchase as the known customer: the
    commonest identity merge across purchases.
    """
    a_events = sorted(draw(many_cycles()), key=lambda e: e.occurred_at)
    b_events = draw(one_cycle())
    order = ev(*ORDER, draw(cycle_times), "order")
    b_events = [e for e in b_events if e.event_id != "order"] + [order]
    shift = timedelta(hours=draw(st.integers(0, 340 * 24)))

    def moved(events: list[Event], prefix: str, by: timedelta) -> list[Event]:
        return [
            msgspec.structs.replace(e, event_id=prefix + e.event_id, occurred_at=e.occurred_at + by)
            for e in events
        ]

    return moved(a_events, "a-", timedelta()), sorted(
        moved(b_events, "b-", shift), key=lambda e: e.occurred_at
    )


@SETTINGS
@given(an_order_on_each_side())
def test_an_order_on_each_side_is_a_repeat_purchase_as_in_the_union(histories):
    """Both bought in their current cycle: the union's later order is a repeat purchase
    (rule 3a), so the merged customer is one cycle further, at the later order."""
    a_events, b_events = histories
    a = Party(CUSTOMER, STAGES).run(a_events)
    b = Party("anon-1", STAGES).run(b_events)
    assert b.state is not None and b.state.purchase_at is not None
    if a.state is None or a.state.purchase_at is None:
        return  # the customer's current cycle holds no order: not this case
    union = Party(CUSTOMER, STAGES).run(sorted([*a_events, *b_events], key=lambda e: e.occurred_at))

    a.absorb(b, "identify-1")

    assert counted(a.state, 1) == projection(union.state)
