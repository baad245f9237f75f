"""The worker's own histogram type exposes what prometheus_client's Histogram does."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from processor.app.metrics import LoopHistogram, Metrics, Tally

BUCKETS = (1e-5, 0.5, 1, 2.5, 60, 86400)


def _exposition(registry: CollectorRegistry) -> list[str]:
    """The text format without the creation time (the two were made apart)."""
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if "_created" not in line]


@given(values=st.lists(st.floats(min_value=0, max_value=1e9, allow_nan=False)))
def test_loop_histogram_exposes_what_histogram_does(values: list[float]) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    loop = LoopHistogram("journey_x_seconds", "A duration", buckets=BUCKETS, registry=ours)
    reference = Histogram("journey_x_seconds", "A duration", buckets=BUCKETS, registry=theirs)
    for value in values:
        loop.observe(value)
        reference.observe(value)
    assert _exposition(ours) == _exposition(theirs)
    assert loop.count == len(values)


@given(
    values=st.lists(st.floats(min_value=0, max_value=1e9, allow_nan=False)),
    split=st.integers(0, 5),
)
def test_observe_each_is_observe_in_turn(values: list[float], split: int) -> None:
    registry = CollectorRegistry()
    one = LoopHistogram("journey_one_seconds", "A duration", buckets=BUCKETS, registry=registry)
    each = LoopHistogram("journey_each_seconds", "A duration", buckets=BUCKETS, registry=registry)
    for value in values:
        one.observe(value)
    each.observe_each(values[:split])
    each.observe_each(iter(values[split:]))
    assert each.counts == one.counts
    assert each.sum == one.sum  # the same additions in the same order: equal, not close


def test_a_tally_adds_each_label_set_once_with_the_same_totals() -> None:
    metrics = Metrics()
    tally = Tally()
    for _ in range(3):
        tally.add(metrics.records, "journey.clickstream", "0", "applied")
    tally.add(metrics.reemitted)
    assert metrics.registry.get_sample_value("journey_stage_changes_reemitted_total") == 0
    tally.flush()
    labels = {"topic": "journey.clickstream", "partition": "0", "outcome": "applied"}
    assert metrics.registry.get_sample_value("journey_records_total", labels) == 3
    assert metrics.registry.get_sample_value("journey_stage_changes_reemitted_total") == 1
    tally.flush()  # nothing new since
    assert metrics.registry.get_sample_value("journey_records_total", labels) == 3
