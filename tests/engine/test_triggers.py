"""Trigger rules: the seven default rules, timers, idempotence, cool-downs and validation."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable
from datetime import UTC, timedelta, timezone
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.contracts.outputs import encode_trigger
from processor.contracts.state import decode_state, encode_state
from processor.engine import (
    CustomerState,
    DefinitionError,
    Event,
    JourneyModel,
    Source,
    StageChange,
    Step,
    apply,
    load_model,
    parse_model,
    reemit,
)
from processor.engine.core import _apply_general, _apply_still, _context, _moves, _target, fire_due
from processor.engine.model import default_definition_text
from processor.engine.triggers import (
    TRIGGER_NAMESPACE,
    Reactions,
    Timer,
    TriggerFired,
    TriggerState,
    on_applied,
    trigger_id,
)
from tests.engine.events import CUSTOMER, T0, TOPICS, at, ev

MODEL = load_model()  # with the default [[triggers]]
DEFAULT_RULES = (
    "sales_assist",
    "cart_abandoned",
    "stalled_in_evaluation",
    "purchase_completed",
    "repeat_purchase",
    "churn_risk",
    "winback",
)


def run(
    events: Iterable[Event],
    state: CustomerState | None = None,
    model: JourneyModel = MODEL,
) -> tuple[CustomerState | None, list[Step]]:
    """Apply events in order; return the final state and every Step."""
    steps: list[Step] = []
    for event in events:
        step = apply(state, event, model)
        steps.append(step)
        state = step.state
    return state, steps


def fired(outputs: Iterable[Any]) -> list[TriggerFired]:
    return [o for o in outputs if isinstance(o, TriggerFired)]


def all_fired(steps: Iterable[Step]) -> list[TriggerFired]:
    return [t for step in steps for t in fired(step.outputs)]


def names(steps: Iterable[Step]) -> list[str]:
    return [t.rule for t in all_fired(steps)]


def timer(state: CustomerState | None, rule: str) -> Timer | None:
    assert state is not None
    return next((t for t in state.triggers.timers if t.rule == rule), None)


def expected_id(t: TriggerFired) -> str:
    """trigger.v2: a UUIDv5 of the whole content, spelled out here independently."""
    content = (
        t.rule,
        t.customer_id,
        t.cycle,
        t.occurrence,
        t.stage,
        t.fired_at.astimezone(UTC).isoformat(),
        t.reason,
        t.evidence,
        t.model_name,
        t.model_version,
    )
    return str(uuid.uuid5(TRIGGER_NAMESPACE, repr(content)))


V1_NAMESPACE = uuid.UUID("9d3e3c8a-4a1b-5c2e-8f61-747269676772")
"""trigger.v1's ids: customer, rule, cycle and occurrence only."""


def v1_id(t: TriggerFired) -> str:
    key = f"{t.customer_id}\n{t.rule}\n{t.cycle}\n{t.occurrence}"
    return str(uuid.uuid5(V1_NAMESPACE, key))


def test_default_model_has_the_seven_rules():
    assert tuple(r.name for r in MODEL.triggers) == DEFAULT_RULES


# --------------------------------------------------------------------------- sales_assist


def test_sales_assist_fires_on_entering_evaluation():
    view, cart = ev("product_view", at(0)), ev("add_to_cart", at(0, hours=1))

    _, steps = run([view, cart])

    assert names(steps[:1]) == []
    [signal] = all_fired(steps[1:])
    assert signal.rule == "sales_assist"
    assert signal.customer_id == CUSTOMER
    assert signal.cycle == 1
    assert signal.occurrence == 1
    assert signal.stage == "evaluation"
    assert signal.fired_at == cart.occurred_at
    assert signal.evidence == (cart.event_id,)
    assert signal.caused_by == cart.event_id
    assert signal.model_name == MODEL.name
    assert signal.model_version == MODEL.version
    assert signal.id == expected_id(signal)


def test_sales_assist_fires_when_the_first_event_is_already_evaluation_evidence():
    cart = ev("add_to_cart", at(0))

    _, steps = run([cart])

    assert names(steps) == ["sales_assist"]


def test_sales_assist_fires_once_per_cycle_and_again_in_the_next_cycle():
    events = [
        ev("add_to_cart", at(0)),
        ev("pricing_view", at(0, hours=1)),
        ev("product_question", at(0, hours=2)),  # before any purchase: evaluation
        ev("order_completed", at(1)),
        ev("ticket_opened", at(2)),
        ev("comparison_view", at(5)),  # within 30 days of the purchase: no new cycle
        ev("comparison_view", at(40)),  # a new cycle, straight into evaluation
        ev("add_to_cart", at(40, hours=1)),
    ]

    state, steps = run(events)

    assert state is not None and state.cycle == 2
    assists = [t for t in all_fired(steps) if t.rule == "sales_assist"]
    assert [(t.cycle, t.occurrence, t.caused_by) for t in assists] == [
        (1, 1, events[0].event_id),
        (2, 1, events[6].event_id),
    ]
    assert assists[0].id != assists[1].id


# --------------------------------------------------------------- purchase / repeat_purchase


def test_purchase_completed_fires_on_entering_purchase_but_repeat_purchase_does_not():
    order = ev("order_completed", at(1))

    _, steps = run([ev("product_view", at(0)), order])

    assert names(steps) == ["purchase_completed"]
    [signal] = all_fired(steps)
    assert signal.stage == "purchase"
    assert signal.fired_at == order.occurred_at
    assert signal.evidence == (order.event_id,)


def test_repeat_purchase_fires_on_a_repeat_order_in_cycle_2():
    first, second = ev("order_completed", at(0)), ev("order_completed", at(3))

    state, steps = run([first, second])

    assert state is not None and state.cycle == 2
    assert names(steps[:1]) == ["purchase_completed"]
    second_fired = all_fired(steps[1:])
    assert sorted(t.rule for t in second_fired) == ["purchase_completed", "repeat_purchase"]
    assert all(t.cycle == 2 and t.occurrence == 1 for t in second_fired)
    assert all(t.evidence == (second.event_id,) for t in second_fired)


def test_repeat_purchase_fires_in_cycle_3_too():
    orders = [ev("order_completed", at(d)) for d in (0, 3, 6)]

    _, steps = run(orders)

    repeats = [t for t in all_fired(steps) if t.rule == "repeat_purchase"]
    assert [t.cycle for t in repeats] == [2, 3]


def test_purchase_that_goes_on_to_post_purchase_still_fires_purchase_completed():
    # The complaint occurred after the purchase but arrives first.
    complaint = ev("ticket_opened", at(2))
    order = ev("order_completed", at(1))

    state, steps = run([ev("add_to_cart", at(0)), complaint, order])

    assert state is not None and state.stage == "post_purchase"
    assert "purchase_completed" in names(steps[2:])


# --------------------------------------------------------------------------- churn_risk


def _bought() -> tuple[CustomerState, list[Step]]:
    state, steps = run([ev("add_to_cart", at(0)), ev("order_completed", at(1))])
    assert state is not None
    return state, steps


def test_churn_risk_fires_on_a_complaint_in_post_purchase():
    state, _ = _bought()
    complaint = ev("complaint", at(2))

    state, steps = run([complaint], state)

    assert state is not None and state.stage == "post_purchase"
    churn = [t for t in all_fired(steps) if t.rule == "churn_risk"]
    assert len(churn) == 1
    assert churn[0].stage == "post_purchase"
    assert churn[0].evidence == (complaint.event_id,)
    assert churn[0].fired_at == complaint.occurred_at


@pytest.mark.parametrize(
    ("properties", "fires"),
    [
        ({"score": 1}, True),
        ({"score": 2}, True),
        ({"score": 3}, False),
        ({"score": 4}, False),
        ({}, False),
        ({"score": "bad"}, False),
        ({"other": 1}, False),
    ],
)
def test_churn_risk_on_a_low_satisfaction_rating(properties, fires):
    state, _ = _bought()
    state, _ = run([ev("ticket_opened", at(2))], state)  # in post_purchase now

    _, steps = run([ev("satisfaction_rating", at(3), properties=properties)], state)

    assert ("churn_risk" in names(steps)) is fires


def test_churn_risk_does_not_fire_on_a_complaint_before_the_purchase():
    events = [ev("add_to_cart", at(0)), ev("complaint", at(0, hours=1))]

    state, steps = run(events)

    assert state is not None and state.stage == "evaluation"
    assert "churn_risk" not in names(steps)


def test_churn_risk_does_not_fire_on_a_late_complaint_that_occurred_before_the_purchase():
    state, _ = _bought()
    state, _ = run([ev("ticket_opened", at(2))], state)
    assert state is not None and state.stage == "post_purchase"

    # Occurred in the evaluation (before the order at day 1), arrives after it.
    _, steps = run([ev("complaint", at(0, hours=12))], state)

    assert "churn_risk" not in names(steps)


def test_churn_risk_fires_on_a_post_purchase_complaint_arriving_before_the_order():
    complaint = ev("complaint", at(2))  # occurred after the order at day 1
    events = [ev("add_to_cart", at(0)), complaint, ev("order_completed", at(1))]

    state, steps = run(events)

    assert state is not None and state.stage == "post_purchase"
    churn = [t for t in all_fired(steps) if t.rule == "churn_risk"]
    assert [t.evidence for t in churn] == [(complaint.event_id,)]


def test_churn_risk_fires_at_most_once_per_cycle_and_again_in_the_next():
    state, _ = _bought()
    events = [
        ev("complaint", at(2)),
        ev("complaint", at(3)),
        ev("satisfaction_rating", at(4), properties={"score": 1}),
        ev("order_completed", at(10)),  # cycle 2
        ev("complaint", at(11)),
        ev("complaint", at(12)),
    ]

    _, steps = run(events, state)

    churn = [t for t in all_fired(steps) if t.rule == "churn_risk"]
    assert [(t.cycle, t.occurrence, t.evidence) for t in churn] == [
        (1, 1, (events[0].event_id,)),
        (2, 1, (events[4].event_id,)),
    ]


# --------------------------------------------------------------------------- cart_abandoned


def test_cart_abandoned_fires_at_the_deadline():
    checkout = ev("checkout_started", at(0, hours=2))
    deadline = checkout.occurred_at + timedelta(hours=1)

    state, steps = run([ev("product_view", at(0)), checkout])

    assert "cart_abandoned" not in names(steps)
    armed = timer(state, "cart_abandoned")
    assert armed == Timer("cart_abandoned", deadline, checkout.event_id)
    assert state is not None

    step = fire_due(state, deadline, "tick-1", MODEL)

    assert step.outcome == "applied"
    [signal] = fired(step.outputs)
    assert signal.rule == "cart_abandoned"
    assert signal.fired_at == deadline
    assert signal.evidence == (checkout.event_id,)
    assert signal.caused_by == "tick-1"
    assert signal.cycle == 1
    assert signal.stage == "evaluation"
    assert signal.id == expected_id(signal)
    assert timer(step.state, "cart_abandoned") is None


def test_cart_abandoned_does_not_fire_before_the_deadline():
    checkout = ev("checkout_started", at(0))
    state, _ = run([checkout])
    assert state is not None

    step = fire_due(state, checkout.occurred_at + timedelta(minutes=59), "tick-early", MODEL)

    assert fired(step.outputs) == []
    assert step.outcome == "ignored"
    assert step.state == state
    assert timer(step.state, "cart_abandoned") is not None


def test_an_order_after_the_checkout_cancels_cart_abandoned():
    checkout = ev("checkout_started", at(0))
    order = ev("order_completed", at(0, minutes=30))

    state, steps = run([checkout, order])

    assert timer(state, "cart_abandoned") is None
    assert state is not None
    step = fire_due(state, at(1), "tick-1", MODEL)
    assert "cart_abandoned" not in names([step])
    assert "cart_abandoned" not in names(steps)


def test_an_order_after_the_deadline_arriving_before_the_tick_still_cancels():
    checkout = ev("checkout_started", at(0))
    order = ev("order_completed", at(0, hours=2))

    state, _ = run([checkout, order])

    assert timer(state, "cart_abandoned") is None


def test_an_order_that_occurred_before_the_checkout_does_not_cancel_it():
    checkout = ev("checkout_started", at(0, hours=2))
    older_order = ev("order_completed", at(0, hours=1))  # arrives late

    state, _ = run([ev("product_view", at(0)), checkout, older_order])

    assert state is not None and state.stage == "purchase" and state.cycle == 1
    deadline = checkout.occurred_at + timedelta(hours=1)
    assert timer(state, "cart_abandoned") == Timer("cart_abandoned", deadline, checkout.event_id)
    step = fire_due(state, deadline, "tick-1", MODEL)
    [signal] = [t for t in fired(step.outputs) if t.rule == "cart_abandoned"]
    assert signal.evidence == (checkout.event_id,)


def test_a_repeat_order_in_a_new_cycle_drops_a_pending_cart_abandoned():
    state, _ = run([ev("order_completed", at(0)), ev("checkout_started", at(5))])
    assert state is not None and state.cycle == 1
    assert timer(state, "cart_abandoned") is not None

    # Occurred before the checkout, so it is not the order that completes that cart; but
    # it is a repeat purchase, and a new cycle drops the old cycle's timers.
    state, _ = run([ev("order_completed", at(4))], state)

    assert state is not None and state.cycle == 2
    assert timer(state, "cart_abandoned") is None


def test_a_second_checkout_re_arms_cart_abandoned_to_the_later_deadline():
    first = ev("checkout_started", at(0))
    second = ev("checkout_started", at(0, minutes=30))
    later_deadline = second.occurred_at + timedelta(hours=1)

    state, _ = run([first, second])

    assert timer(state, "cart_abandoned") == Timer(
        "cart_abandoned", later_deadline, second.event_id
    )
    assert state is not None
    early = fire_due(state, first.occurred_at + timedelta(hours=1), "tick-1", MODEL)
    assert "cart_abandoned" not in names([early])
    assert early.state is not None

    late = fire_due(early.state, later_deadline, "tick-2", MODEL)
    [signal] = [t for t in fired(late.outputs) if t.rule == "cart_abandoned"]
    assert signal.fired_at == later_deadline
    assert signal.evidence == (second.event_id,)


def test_an_older_checkout_arriving_late_does_not_move_the_deadline_back():
    later = ev("checkout_started", at(0, minutes=30))
    older = ev("checkout_started", at(0))

    state, _ = run([later, older])

    assert timer(state, "cart_abandoned") == Timer(
        "cart_abandoned", later.occurred_at + timedelta(hours=1), later.event_id
    )


# ------------------------------------------------------------------- stalled_in_evaluation


def test_entering_evaluation_arms_stalled_in_evaluation_for_72h():
    cart = ev("add_to_cart", at(0, hours=3))

    state, _ = run([ev("product_view", at(0)), cart])

    assert timer(state, "stalled_in_evaluation") == Timer(
        "stalled_in_evaluation", cart.occurred_at + timedelta(hours=72), cart.event_id
    )


def test_moving_to_purchase_cancels_stalled_in_evaluation():
    state, _ = run([ev("add_to_cart", at(0)), ev("order_completed", at(1))])

    assert timer(state, "stalled_in_evaluation") is None
    assert state is not None
    step = fire_due(state, at(10), "tick-1", MODEL)
    assert "stalled_in_evaluation" not in names([step])


def test_stalled_in_evaluation_fires_at_the_deadline_when_still_in_evaluation():
    cart = ev("add_to_cart", at(0))
    deadline = cart.occurred_at + timedelta(hours=72)
    # More evaluation activity does not re-arm: the customer is still not deciding.
    state, _ = run([cart, ev("pricing_view", at(1)), ev("comparison_view", at(2))])
    assert state is not None and state.stage == "evaluation"
    assert state.triggers.next_deadline == deadline

    early = fire_due(state, deadline - timedelta(seconds=1), "tick-0", MODEL)
    assert fired(early.outputs) == []

    step = fire_due(state, deadline + timedelta(hours=5), "tick-1", MODEL)

    [signal] = fired(step.outputs)
    assert signal.rule == "stalled_in_evaluation"
    assert signal.fired_at == deadline
    assert signal.evidence == (cart.event_id,)
    assert signal.stage == "evaluation"
    assert step.state is not None and step.state.triggers.timers == ()


# --------------------------------------------------------------------------- winback


def _in_post_purchase() -> tuple[CustomerState, Event]:
    contact = ev("ticket_opened", at(2))
    state, _ = run([ev("order_completed", at(0)), contact])
    assert state is not None and state.stage == "post_purchase"
    return state, contact


def test_entering_post_purchase_arms_winback_for_60_days():
    state, contact = _in_post_purchase()

    assert timer(state, "winback") == Timer(
        "winback", contact.occurred_at + timedelta(days=60), contact.event_id
    )


def test_any_later_event_in_post_purchase_re_arms_winback():
    state, _ = _in_post_purchase()
    view = ev("product_view", at(10))  # pre-purchase evidence, no new cycle yet

    state, _ = run([view], state)

    assert state is not None and state.stage == "post_purchase"
    assert timer(state, "winback") == Timer(
        "winback", view.occurred_at + timedelta(days=60), view.event_id
    )

    rating = ev("satisfaction_rating", at(12), properties={"score": 5})
    state, _ = run([rating], state)
    assert timer(state, "winback") == Timer(
        "winback", rating.occurred_at + timedelta(days=60), rating.event_id
    )


def test_an_older_event_arriving_late_does_not_move_winback_back():
    state, _ = _in_post_purchase()
    view = ev("product_view", at(10))
    state, _ = run([view], state)

    state, _ = run([ev("product_view", at(5))], state)

    assert timer(state, "winback") == Timer(
        "winback", view.occurred_at + timedelta(days=60), view.event_id
    )


def test_winback_fires_at_the_deadline_when_silent():
    state, contact = _in_post_purchase()
    deadline = contact.occurred_at + timedelta(days=60)

    assert fired(fire_due(state, deadline - timedelta(minutes=1), "t0", MODEL).outputs) == []
    step = fire_due(state, deadline, "t1", MODEL)

    [signal] = fired(step.outputs)
    assert signal.rule == "winback"
    assert signal.fired_at == deadline
    assert signal.evidence == (contact.event_id,)
    assert signal.stage == "post_purchase"
    assert signal.cycle == 1


def test_a_new_cycle_cancels_winback():
    state, _ = _in_post_purchase()

    repeat_order, _ = run([ev("order_completed", at(20))], state)
    new_search, _ = run([ev("product_view", at(45))], state)  # > 30 days after purchase

    for after in (repeat_order, new_search):
        assert after is not None and after.cycle == 2
        assert timer(after, "winback") is None
        step = fire_due(after, at(200), "tick-1", MODEL)
        assert "winback" not in names([step])


# --------------------------------------------------------------------------- timers in state


def test_timers_live_in_the_state_and_next_deadline_is_the_earliest():
    cart = ev("add_to_cart", at(0))
    checkout = ev("checkout_started", at(0, hours=1))

    state, _ = run([cart, checkout])

    assert state is not None
    assert {t.rule for t in state.triggers.timers} == {"cart_abandoned", "stalled_in_evaluation"}
    assert state.triggers.next_deadline == checkout.occurred_at + timedelta(hours=1)
    deadlines = [t.deadline for t in state.triggers.timers]
    assert deadlines == sorted(deadlines)

    step = fire_due(state, state.triggers.next_deadline, "tick-1", MODEL)
    assert step.state is not None
    assert step.state.triggers.next_deadline == cart.occurred_at + timedelta(hours=72)

    final = fire_due(step.state, at(30), "tick-2", MODEL)
    assert final.state is not None
    assert final.state.triggers.next_deadline is None


def test_trigger_state_round_trips_through_the_state_encoding():
    cart = ev("add_to_cart", at(0))
    checkout = ev("checkout_started", at(0, hours=1))
    state, _ = run([cart, checkout])
    assert state is not None
    step = fire_due(state, at(0, hours=2), "tick-1", MODEL)
    state = step.state
    assert state is not None
    assert state.triggers.timers and state.triggers.fired and state.triggers.recent

    decoded = decode_state(encode_state(state))

    assert decoded == state
    assert decoded.triggers == state.triggers
    assert decoded.triggers.next_deadline == state.triggers.next_deadline
    assert [t.id for t in decoded.triggers.recent] == [t.id for t in state.triggers.recent]
    # The decoded state behaves identically: the same tick re-emits, a later one fires.
    assert fire_due(decoded, at(0, hours=2), "tick-1", MODEL) == fire_due(
        state, at(0, hours=2), "tick-1", MODEL
    )
    assert fire_due(decoded, at(5), "tick-2", MODEL) == fire_due(state, at(5), "tick-2", MODEL)


def test_empty_trigger_state_round_trips():
    state, _ = run([ev("page_view", at(0))])
    assert state is not None and state.triggers.timers == ()

    assert decode_state(encode_state(state)) == state


# --------------------------------------------------------------------------- idempotence


def test_replaying_an_event_re_emits_the_identical_trigger():
    state, _ = _bought()
    complaint = ev("complaint", at(2))
    step = apply(state, complaint, MODEL)
    original = fired(step.outputs)
    assert "churn_risk" in [t.rule for t in original]
    assert step.state is not None

    again = apply(step.state, complaint, MODEL)
    replayed = reemit(step.state, complaint.event_id)

    for dup in (again, replayed):
        assert dup.outcome == "duplicate"
        assert dup.state == step.state
        assert fired(dup.outputs) == original
        assert [t.id for t in fired(dup.outputs)] == [t.id for t in original]


def test_replay_re_emits_stage_changes_and_triggers_together():
    order = ev("order_completed", at(1))
    state, steps = run([ev("add_to_cart", at(0)), order])
    assert state is not None

    dup = reemit(state, order.event_id)

    assert dup.outputs == steps[1].outputs
    assert [t.rule for t in fired(dup.outputs)] == ["purchase_completed"]
    assert any(isinstance(o, StageChange) for o in dup.outputs)


def test_fire_due_with_the_same_tick_re_emits_and_a_new_tick_fires_nothing():
    checkout = ev("checkout_started", at(0))
    state, _ = run([checkout])
    assert state is not None
    first = fire_due(state, at(0, hours=1), "tick-1", MODEL)
    assert first.outcome == "applied"
    assert [t.rule for t in fired(first.outputs)] == ["cart_abandoned"]
    assert first.state is not None

    same = fire_due(first.state, at(0, hours=1), "tick-1", MODEL)
    assert same.outcome == "duplicate"
    assert same.state == first.state
    assert same.outputs == first.outputs
    assert [t.id for t in fired(same.outputs)] == [t.id for t in fired(first.outputs)]

    new = fire_due(first.state, at(0, hours=1), "tick-2", MODEL)
    assert fired(new.outputs) == []
    assert new.outcome == "ignored"
    assert new.state == first.state


def test_each_timer_fires_once_even_when_re_armed_in_the_same_cycle():
    state, _ = run([ev("checkout_started", at(0))])
    assert state is not None
    step = fire_due(state, at(0, hours=1), "tick-1", MODEL)
    assert step.state is not None

    # A second checkout in the same cycle re-arms, but the rule fired this cycle already.
    state, _ = run([ev("checkout_started", at(0, hours=2))], step.state)
    assert state is not None
    again = fire_due(state, at(0, hours=4), "tick-2", MODEL)

    assert "cart_abandoned" not in names([again])


def test_trigger_ids_are_deterministic_and_differ_across_customers_and_cycles():
    def orders(customer: str) -> list[TriggerFired]:
        events = [
            ev("order_completed", at(0), customer=customer, event_id=f"{customer}-o1"),
            ev("order_completed", at(3), customer=customer, event_id=f"{customer}-o2"),
        ]
        _, steps = run(events)
        return [t for t in all_fired(steps) if t.rule == "purchase_completed"]

    a1, a2 = orders("cust-a")
    b1, _ = orders("cust-b")
    again1, again2 = orders("cust-a")

    assert (a1.id, a2.id) == (again1.id, again2.id)
    assert a1.id == expected_id(a1)
    assert a2.id == expected_id(a2)
    assert len({a1.id, a2.id, b1.id}) == 3


# --------------------------------------------------------------------------- content ids (v2)


def _one_of_each_kind() -> list[TriggerFired]:
    """A stage_entered, an event and an absence trigger, of one customer."""
    order = ev("order_completed", at(0), event_id="o1")
    complaint = ev("complaint", at(2), event_id="c1")
    state, steps = run([ev("checkout_started", at(-1, hours=-2), event_id="k1"), order, complaint])
    assert state is not None
    checkout_state, _ = run([ev("checkout_started", at(0), event_id="k2")])
    assert checkout_state is not None
    tick = fire_due(checkout_state, at(0, hours=1), "tick:random-1", MODEL)
    return all_fired(steps) + fired(tick.outputs)


CONTENT_CHANGES: dict[str, Any] = {
    "rule": "other_rule",
    "customer_id": "cust-2",
    "cycle": 7,
    "occurrence": 2,
    "stage": "awareness",
    "fired_at": T0 + timedelta(seconds=1),
    "reason": "another reason",
    "evidence": ("other-event",),
    "model_name": "other-model",
    "model_version": "2",
}


@pytest.mark.parametrize("field", sorted(CONTENT_CHANGES))
def test_every_content_field_changes_the_trigger_id(field: str) -> None:
    """Two different triggers never share an id (v2), whatever field tells them apart."""
    kinds = _one_of_each_kind()
    assert {t.rule for t in kinds} >= {"purchase_completed", "churn_risk", "cart_abandoned"}
    for signal in kinds:
        changed = msgspec.structs.replace(signal, **{field: CONTENT_CHANGES[field]})
        assert getattr(changed, field) != getattr(signal, field)
        assert changed.id != signal.id, field
        assert trigger_id(changed) == changed.id == expected_id(changed)


def test_the_trigger_id_covers_every_field_but_caused_by() -> None:
    """A field added to TriggerFired must go into the id (or be argued out, as caused_by is)."""
    assert set(TriggerFired.__struct_fields__) == {*CONTENT_CHANGES, "caused_by"}
    for signal in _one_of_each_kind():
        # caused_by is not on the wire; for an absence it is the tick's random id.
        assert msgspec.structs.replace(signal, caused_by="tick:random-2").id == signal.id
        # The same instant in another offset is the same content.
        local = signal.fired_at.astimezone(timezone(timedelta(hours=5)))
        assert msgspec.structs.replace(signal, fired_at=local).id == signal.id
        assert uuid.UUID(signal.id).version == 5
        assert signal.id != v1_id(signal)


def test_a_replay_re_emits_identical_ids_and_bytes() -> None:
    """Marketing automation dedupes on id: a replay must never look like a new trigger.

    The replays a worker can make: the same event again (kept state, or state
    recovered from the changelog), and a timer tick again under a new random
    tick id when the state after the first tick was never stored.
    """
    order = ev("order_completed", at(0), event_id="o1")
    complaint = ev("complaint", at(2), event_id="c1")
    state, steps = run([ev("add_to_cart", at(-1), event_id="a1"), order, complaint])
    assert state is not None
    first = all_fired(steps)
    assert [t.rule for t in first] == ["sales_assist", "purchase_completed", "churn_risk"]
    recovered = decode_state(encode_state(state))
    replayed = [
        t
        for source in (state, recovered)
        for event in (order, complaint)
        for t in fired(apply(source, event, MODEL).outputs)
    ]
    assert replayed == first[1:] * 2

    checkout_state, _ = run([ev("checkout_started", at(0), event_id="k1")])
    assert checkout_state is not None
    tick = fire_due(checkout_state, at(0, hours=1), "tick:first", MODEL)
    again = fire_due(decode_state(encode_state(checkout_state)), at(0, hours=1), "tick:2nd", MODEL)
    assert fired(tick.outputs) and fired(again.outputs)

    pairs = [
        *zip(first[1:] * 2, replayed, strict=True),
        *zip(fired(tick.outputs), fired(again.outputs), strict=True),
    ]
    for original, repeat in pairs:
        assert repeat.id == original.id
        a, b = encode_trigger(original, "/test"), encode_trigger(repeat, "/test")
        assert (a.key, a.value, a.headers) == (b.key, b.value, b.headers)


def test_a_history_started_again_after_lost_state_gets_new_trigger_ids() -> None:
    """The customer's state was lost; the rule fires again, in the same cycle and occurrence,
    for other content. v1 reissued the id; v2 does not."""
    before = fired(apply(None, ev("order_completed", at(0), event_id="o1"), MODEL).outputs)
    after = fired(apply(None, ev("order_completed", at(5), event_id="o9"), MODEL).outputs)
    [b] = [t for t in before if t.rule == "purchase_completed"]
    [a] = [t for t in after if t.rule == "purchase_completed"]
    assert (a.cycle, a.occurrence) == (b.cycle, b.occurrence) == (1, 1)
    assert v1_id(a) == v1_id(b)
    assert a.id != b.id


# --------------------------------------------------------------------------- repeat/cooldown


EVERY_QUESTION = """
[[triggers]]
name = "every_question"
when = "event"
stage = "evaluation"
events = [{ source = "support", type = "product_question" }]
repeat = true
cooldown = "1h"
"""


def test_a_repeating_rule_fires_again_only_after_its_cooldown():
    model = parse_model(default_definition_text() + EVERY_QUESTION)
    events = [
        ev("add_to_cart", at(0)),
        ev("product_question", at(0, minutes=10)),  # fires (1)
        ev("product_question", at(0, minutes=40)),  # 30 minutes later: cooling down
        ev("product_question", at(0, minutes=69)),  # 59 minutes: still cooling down
        ev("product_question", at(0, minutes=70)),  # exactly 1h: fires (2)
        ev("product_question", at(0, minutes=75)),  # cooling down
        ev("product_question", at(0, hours=5)),  # fires (3)
    ]

    _, steps = run(events, model=model)

    questions = [t for t in all_fired(steps) if t.rule == "every_question"]
    assert [t.caused_by for t in questions] == [
        events[1].event_id,
        events[4].event_id,
        events[6].event_id,
    ]
    assert [t.occurrence for t in questions] == [1, 2, 3]
    assert len({t.id for t in questions}) == 3
    # The default rules on the same model still fire once.
    assert names(steps).count("sales_assist") == 1


def test_a_repeating_rule_uses_event_time_not_arrival_order():
    model = parse_model(default_definition_text() + EVERY_QUESTION)
    events = [
        ev("add_to_cart", at(0)),
        ev("product_question", at(0, hours=3)),  # fires
        ev("product_question", at(0, hours=1)),  # earlier, arriving late: within cooldown
    ]

    _, steps = run(events, model=model)

    assert names(steps).count("every_question") == 1


# --------------------------------------------------------------------------- validation

BASE = default_definition_text().split("[[triggers]]", 1)[0]


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        ('name = "bad"\nwhen = "sometimes"\nstage = "evaluation"', "'when'"),
        ('name = "bad"\nwhen = "stage_entered"\nstage = "shopping"', "shopping"),
        (
            'name = "bad"\nwhen = "event"\nstage = "evaluation"\n'
            'events = [{ source = "support", type = "newsletter" }]',
            "not evidence",
        ),
        (
            'name = "bad"\nwhen = "event"\nstage = "post_purchase"\n'
            'events = [{ source = "support", type = "satisfaction_rating", '
            'where = "score <<= 2" }]',
            "score <<= 2",
        ),
        (
            'name = "bad"\nwhen = "absent"\nafter_stage = "evaluation"\n'
            'after_event = { source = "clickstream", type = "checkout_started" }\n'
            'within = "1h"',
            "anchor",
        ),
        ('name = "bad"\nwhen = "absent"\nwithin = "1h"', "anchor"),
        ('name = "bad"\nwhen = "absent"\nafter_stage = "evaluation"', "within"),
        (
            'name = "bad"\nwhen = "stage_entered"\nstage = "evaluation"\ncooldown = "1h"',
            "cooldown",
        ),
    ],
    ids=[
        "unknown-when",
        "unknown-stage",
        "not-evidence",
        "bad-predicate",
        "two-anchors",
        "no-anchor",
        "missing-within",
        "cooldown-without-repeat",
    ],
)
def test_bad_trigger_rules_are_rejected_naming_the_trigger(rule, problem):
    with pytest.raises(DefinitionError) as info:
        parse_model(f"{BASE}[[triggers]]\n{rule}\n", origin="bad.toml")

    message = str(info.value)
    assert message.startswith("bad.toml: ")
    assert "trigger 'bad'" in message
    assert problem in message


def test_duplicate_trigger_names_are_rejected_naming_the_trigger():
    rule = '[[triggers]]\nname = "twice"\nwhen = "stage_entered"\nstage = "purchase"\n'

    with pytest.raises(DefinitionError) as info:
        parse_model(BASE + rule + rule, origin="dup.toml")

    assert "twice" in str(info.value)
    assert "unique" in str(info.value)


def test_a_default_rule_name_cannot_be_reused():
    rule = '\n[[triggers]]\nname = "winback"\nwhen = "stage_entered"\nstage = "purchase"\n'

    with pytest.raises(DefinitionError, match="winback"):
        parse_model(default_definition_text() + rule)


def test_a_definition_without_triggers_fires_nothing():
    model = parse_model(BASE)
    assert model.triggers == ()

    state, steps = run(
        [ev("add_to_cart", at(0)), ev("checkout_started", at(0)), ev("order_completed", at(1))],
        model=model,
    )

    assert names(steps) == []
    assert state is not None and state.triggers.timers == ()


# --------------------------------------------------------------------------- property

KNOWN = sorted(MODEL.evidence)
ORDER: tuple[Source, str] = ("clickstream", "order_completed")
COMPLAINT: tuple[Source, str] = ("support", "complaint")
RATING: tuple[Source, str] = ("support", "satisfaction_rating")
KINDS = [*KNOWN, ORDER, ORDER, COMPLAINT, RATING, RATING]  # more of what triggers look at
RATINGS = st.one_of(st.just({}), st.builds(lambda s: {"score": s}, st.integers(0, 6)))
# Dense (hours in two weeks), medium (days in four months) or sparse (minutes in a year).
TIMES = [
    st.integers(0, 14 * 24).map(lambda h: T0 + timedelta(hours=h)),
    st.integers(0, 120).map(lambda d: T0 + timedelta(days=d)),
    st.integers(0, 365 * 24 * 60).map(lambda m: T0 + timedelta(minutes=m)),
]


@st.composite
def histories(draw: st.DrawFn) -> list[Event]:
    """Events of one customer, with unique ids, in time order or in random arrival order."""
    times = draw(st.sampled_from(TIMES))
    picked = draw(
        st.lists(st.tuples(st.sampled_from(KINDS), times, RATINGS), max_size=60),
    )
    if draw(st.booleans()):
        picked.sort(key=lambda p: p[1])
    return [
        Event(
            event_id=f"e{i}",
            customer_id=CUSTOMER,
            source=source,
            topic=TOPICS[source],
            type=type_,
            occurred_at=when,
            properties=props,
        )
        for i, ((source, type_), when, props) in enumerate(picked)
    ]


def _at_most_once_per_cycle(signals: list[TriggerFired]) -> None:
    keys = [(t.rule, t.cycle) for t in signals]
    assert len(keys) == len(set(keys)), keys
    assert all(t.occurrence == 1 for t in signals)
    ids = [t.id for t in signals]
    assert len(ids) == len(set(ids))
    assert all(t.rule in DEFAULT_RULES for t in signals)


@settings(max_examples=300, deadline=None)
@given(histories())
def test_no_default_rule_fires_twice_in_a_cycle(events):
    state, steps = run(events)

    assert all(step.outcome == "applied" for step in steps)
    signals = all_fired(steps)
    _at_most_once_per_cycle(signals)
    if state is not None:
        assert all(t.cycle <= state.cycle for t in signals)
        assert all(t.customer_id == CUSTOMER for t in signals)


@settings(max_examples=200, deadline=None)
@given(histories(), st.data())
def test_no_default_rule_fires_twice_in_a_cycle_with_timer_ticks(events, data):
    state: CustomerState | None = None
    signals: list[TriggerFired] = []
    for i, event in enumerate(events):
        step = apply(state, event, MODEL)
        signals += fired(step.outputs)
        state = step.state
        if state is not None and data.draw(st.booleans(), label=f"tick after {i}"):
            now = state.last_event_at + timedelta(hours=data.draw(st.integers(0, 24 * 90)))
            tick = fire_due(state, now, f"tick-{i}", MODEL)
            assert all(t.fired_at <= now for t in fired(tick.outputs))
            signals += fired(tick.outputs)
            state = tick.state

    _at_most_once_per_cycle(signals)


@settings(max_examples=300, deadline=None)
@given(histories(), st.data())
def test_a_quiet_event_is_exactly_what_the_full_evaluation_gives(events, data):
    """The engine skips trigger evaluation when Reactions.quiet says so: never wrongly."""
    state: CustomerState | None = None
    for i, event in enumerate(events):
        if state is not None and data.draw(st.booleans(), label=f"tick before {i}"):
            now = state.last_event_at + timedelta(hours=data.draw(st.integers(0, 24 * 90)))
            state = fire_due(state, now, f"tick-{i}", MODEL).state
        if state is not None and MODEL.reactions.quiet(
            state.triggers, state.stage, state.cycle, event.source, event.type
        ):
            full, fired_now = on_applied(
                state.triggers,
                _context(state, MODEL),
                previous_cycle=state.cycle,
                changes=(),
                event=event,
                judged=[(event, state.stage)],
            )
            assert (full, fired_now) == (state.triggers, ())
        step = apply(state, event, MODEL)
        state = step.state


@settings(max_examples=400, deadline=None)
@given(histories(), st.data())
def test_the_still_path_gives_exactly_what_the_general_path_gives(events, data):
    """apply() takes a short path for an event that moves no stage: never wrongly.

    ``_moves`` must say "moves" exactly when the general path emits a stage change,
    and where it does not, the short path must give the same step: state, outputs
    (triggers, a sealed dedupe chunk) and outcome."""
    state: CustomerState | None = None
    for i, event in enumerate(events):
        if state is not None and data.draw(st.booleans(), label=f"tick before {i}"):
            now = state.last_event_at + timedelta(hours=data.draw(st.integers(0, 24 * 90)))
            state = fire_due(state, now, f"tick-{i}", MODEL).state
        evidence = MODEL.evidence_for(event.source, event.type)
        if state is not None and evidence is not None:
            general = _apply_general(state, event, evidence, MODEL)
            moved = any(isinstance(o, StageChange) for o in general.outputs)
            target = _target(state, event, evidence)
            assert _moves(state, event, target, evidence, MODEL) == moved
            if not moved:
                assert _apply_still(state, event, target, evidence, MODEL) == general
            if event.event_id not in state.recent_event_ids:  # apply's own shortcuts too
                assert apply(state, event, MODEL) == general
        state = apply(state, event, MODEL).state


class _NeverQuiet(Reactions):
    """Reactions that never let the engine skip the full trigger evaluation."""

    def quiet(self, *args: Any) -> bool:
        return False

    def quiet_after(self, *args: Any) -> bool:
        return False


class _Everything(frozenset[tuple[str, str]]):
    """Every (source, type) pair: the engine's own shortcut before ``quiet`` finds each."""

    def __contains__(self, item: object) -> bool:
        return True


def _always_evaluating(model: JourneyModel) -> JourneyModel:
    loud = dataclasses.replace(model)
    reactions = _NeverQuiet.of(model.triggers)
    object.__setattr__(reactions, "pairs", _Everything())
    object.__setattr__(loud, "reactions", reactions)
    return loud


@settings(max_examples=400, deadline=None)
@given(histories(), st.data())
def test_skipping_quiet_evaluations_changes_no_step(events, data):
    """Reactions.quiet and quiet_after (also after stage changes) never skip wrongly:
    every step equals the step of an engine that evaluates every rule every time."""
    loud = _always_evaluating(MODEL)
    state: CustomerState | None = None
    for i, event in enumerate(events):
        if state is not None and data.draw(st.booleans(), label=f"tick before {i}"):
            now = state.last_event_at + timedelta(hours=data.draw(st.integers(0, 24 * 90)))
            state = fire_due(state, now, f"tick-{i}", MODEL).state
        step = apply(state, event, MODEL)
        assert step == apply(state, event, loud)
        state = step.state


def test_a_new_cycle_into_a_quiet_stage_still_drops_the_armed_timers():
    """A checkout after the purchase arms cart_abandoned; a page view 40 days later starts
    cycle 2 in need recognition (a stage no rule watches): the timer must go all the same.
    Only cart_abandoned is defined, so no firing count of cycle 1 gives the change away."""
    model = dataclasses.replace(
        MODEL, triggers=tuple(r for r in MODEL.triggers if r.name == "cart_abandoned")
    )
    loud = _always_evaluating(model)
    state: CustomerState | None = None
    for event in (ev("order_completed", 0), ev("checkout_started", 1), ev("page_view", 40)):
        step = apply(state, event, model)
        assert step == apply(state, event, loud)
        state = step.state
    assert state is not None and state.cycle == 2 and state.triggers.timers == ()


def test_entering_an_early_stage_is_quiet_and_a_watched_one_is_not():
    """quiet_after: a first page view (need recognition) wakes no rule; a first add to
    cart (evaluation: sales_assist, stalled_in_evaluation) does."""
    reactions = MODEL.reactions
    for type_, quiet in (("page_view", True), ("add_to_cart", False)):
        event = ev(type_, 0)
        _, [step] = run([event])
        assert step.state is not None
        change = step.outputs[0]
        assert isinstance(change, StageChange)
        assert (
            reactions.quiet_after(TriggerState(), change.to_stage, 1, None, event, (change,))
            is quiet
        )
        assert (step.state.triggers == TriggerState()) is quiet


def test_most_events_are_quiet_for_the_default_rules():
    """A page view during the search wakes no rule; a checkout or a complaint does."""
    state, _ = run([ev("product_view", 0)])
    assert state is not None and state.stage == "information_search"
    quiet = MODEL.reactions.quiet
    assert quiet(state.triggers, state.stage, state.cycle, "clickstream", "page_view")
    assert not quiet(state.triggers, state.stage, state.cycle, "clickstream", "checkout_started")
    assert not quiet(state.triggers, state.stage, state.cycle, "support", "complaint")
