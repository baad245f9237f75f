from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.demo.funnel import FunnelSnapshot, FunnelTracker, render, render_summary

STAGES = ("need_recognition", "information_search", "evaluation", "purchase", "post_purchase")


def change(customer: str, sequence: int, to_stage: str, cycle: int = 1) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{customer}/{sequence}")),
        "customer_id": customer,
        "cycle": cycle,
        "sequence": sequence,
        "from_stage": None,
        "to_stage": to_stage,
        "changed_at": "2025-03-01T10:00:00Z",
    }


def journey(customer: str, *steps: tuple[str, int]) -> list[dict[str, Any]]:
    """Changes with consecutive sequences, each step a (stage, cycle)."""
    return [change(customer, n, stage, cycle) for n, (stage, cycle) in enumerate(steps, 1)]


def snapshot_of(changes: list[dict[str, Any]]) -> FunnelSnapshot:
    tracker = FunnelTracker(STAGES)
    for doc in changes:
        tracker.observe(doc)
    return tracker.snapshot(produced=10, total=20, elapsed_s=2.0)


def test_a_repeated_id_counts_once() -> None:
    doc = change("cust-000001", 1, "need_recognition")
    snap = snapshot_of([doc, doc, dict(doc)])
    assert snap.stage_changes == 1
    assert snap.customers_per_stage["need_recognition"] == 1


def test_the_highest_sequence_wins_whatever_the_order() -> None:
    steps = journey("c", ("need_recognition", 1), ("evaluation", 1), ("purchase", 1))
    snap = snapshot_of([steps[2], steps[0], steps[1]])
    assert snap.customers_per_stage == {
        "need_recognition": 0,
        "information_search": 0,
        "evaluation": 0,
        "purchase": 1,
        "post_purchase": 0,
    }
    assert snap.stage_changes == 3


def test_counts_per_stage_and_cycle() -> None:
    changes = [
        *journey("a", ("need_recognition", 1)),
        *journey("b", ("information_search", 1), ("evaluation", 1)),
        *journey("c", ("evaluation", 1), ("purchase", 1), ("post_purchase", 1), ("purchase", 2)),
        *journey("d", ("purchase", 1), ("information_search", 2)),
    ]
    snap = snapshot_of(changes)
    assert snap.customers_per_stage == {
        "need_recognition": 1,
        "information_search": 1,
        "evaluation": 1,
        "purchase": 1,
        "post_purchase": 0,
    }
    assert snap.customers_per_cycle == {1: 2, 2: 2}
    assert snap.customers == 4
    assert snap.stage_changes == 9
    assert snap.buyers == 2
    assert snap.repeat_buyers == 1
    assert snap.customers_reached == {
        "need_recognition": 4,
        "information_search": 3,
        "evaluation": 3,
        "purchase": 2,
        "post_purchase": 1,
    }


def test_dead_letters_are_counted_by_reason() -> None:
    tracker = FunnelTracker(STAGES)
    for reason in ("not_json", "invalid_timestamp", "not_json", None):
        tracker.observe_dead_letter({"reason": reason})
    assert tracker.dead_letters_by_reason == {"not_json": 2, "invalid_timestamp": 1, "unknown": 1}
    assert tracker.snapshot(0, 0, 0.0).dead_letters == 4


def test_an_unknown_stage_is_shown_rather_than_lost() -> None:
    snap = snapshot_of(journey("a", ("advocacy", 1)))
    assert snap.stages[-1] == "advocacy"
    assert snap.customers_per_stage["advocacy"] == 1


stage_steps = st.lists(
    st.tuples(st.sampled_from(STAGES), st.integers(min_value=1, max_value=4)),
    min_size=1,
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(
    journeys=st.dictionaries(st.sampled_from([f"c{n}" for n in range(8)]), stage_steps),
    data=st.data(),
)
def test_order_and_repeats_do_not_change_the_snapshot(
    journeys: dict[str, list[tuple[str, int]]], data: st.DataObject
) -> None:
    once = [doc for customer, steps in journeys.items() for doc in journey(customer, *steps)]
    repeats = data.draw(st.lists(st.sampled_from(once), max_size=10)) if once else []
    delivered = data.draw(st.permutations(once + repeats))
    expected = snapshot_of(once)
    actual = snapshot_of(list(delivered))
    assert actual == expected
    assert actual.stage_changes == len(once)
    tracker = FunnelTracker(STAGES)
    for doc in delivered:
        tracker.observe(doc)
    for customer, steps in journeys.items():
        assert tracker.stage_of(customer) == steps[-1][0]


def big_snapshot() -> FunnelSnapshot:
    return FunnelSnapshot(
        stages=STAGES,
        customers_per_stage={
            "need_recognition": 1_234,
            "information_search": 2_345,
            "evaluation": 876,
            "purchase": 543,
            "post_purchase": 210,
        },
        customers_per_cycle={1: 4_800, 2: 380, 3: 24, 4: 3, 5: 1},
        stage_changes=17_431,
        dead_letters=25,
        produced=31_337,
        total=62_674,
        elapsed_s=8.0,
    )


@pytest.mark.parametrize("width", [30, 50, 64, 80, 120])
def test_render_fits_the_width(width: int) -> None:
    for line in render(big_snapshot(), width).splitlines():
        assert len(line) <= width, line


def test_render_shows_stages_counts_progress_and_totals() -> None:
    text = render(big_snapshot(), 80)
    lines = text.splitlines()
    assert len(lines) == 1 + len(STAGES) + 1
    assert "31,337/62,674" in lines[0]
    assert "50%" in lines[0]
    assert "3,917 ev/s" in lines[0]
    for stage, line in zip(STAGES, lines[1:], strict=False):
        assert line.startswith(stage)
        assert f"{big_snapshot().customers_per_stage[stage]:,}" in line
    assert "45.0%" in lines[2]
    assert "cycle 1: 4,800" in lines[-1] or "1: 4,800" in lines[-1]
    assert "17,431" in lines[-1]
    assert "25" in lines[-1]
    assert "\x1b" not in text


def test_bars_grow_with_customers() -> None:
    lines = render(big_snapshot(), 80).splitlines()[1:-1]
    filled = [line.count("█") for line in lines]
    assert filled[1] == max(filled)
    assert filled[0] > filled[2] > filled[3] > filled[4] > 0


def test_colour_only_when_asked() -> None:
    assert "\x1b[" in render(big_snapshot(), 80, colour=True)


def test_render_of_an_empty_run() -> None:
    tracker = FunnelTracker(STAGES)
    text = render(tracker.snapshot(produced=0, total=0, elapsed_s=0.0), 80)
    for stage in STAGES:
        assert stage in text
    assert all(len(line) <= 80 for line in text.splitlines())


def test_summary_reports_conversion_repeat_buyers_and_dead_letters() -> None:
    tracker = FunnelTracker(STAGES)
    for doc in [
        *journey("a", ("need_recognition", 1)),
        *journey("b", ("need_recognition", 1), ("information_search", 1)),
        *journey("c", ("information_search", 1), ("purchase", 1), ("purchase", 2)),
        *journey("d", ("evaluation", 1), ("purchase", 1), ("post_purchase", 1)),
    ]:
        tracker.observe(doc)
    tracker.observe_dead_letter({"reason": "not_json"})
    tracker.observe_dead_letter({"reason": "not_json"})
    tracker.observe_dead_letter({"reason": "invalid_timestamp"})
    text = render_summary(tracker.snapshot(100, 100, 4.0), tracker.dead_letters_by_reason)
    assert "information_search" in text
    assert " 75.0%" in text  # 3 of 4 got past need recognition
    assert " 66.7%" in text  # 2 of 3 searchers evaluated (or got further)
    assert "100.0%" in text  # both evaluators bought
    assert " 50.0%" in text  # one of two buyers is in post-purchase
    assert "Repeat buyers: 1 (50.0% of 2 buyers)" in text
    assert "Dead letters: 3 (not_json 2, invalid_timestamp 1)" in text


def test_summary_without_history_falls_back_to_current_stages() -> None:
    text = render_summary(big_snapshot(), {})
    assert "Dead letters: 25" in text
    assert "post_purchase" in text
