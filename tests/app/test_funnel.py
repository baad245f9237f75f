"""Customers per stage: incremental counts per partition, and merging workers' shares."""

from __future__ import annotations

from datetime import UTC, datetime

from processor.app.funnel import StageCounts, funnel_document, merge_funnels
from processor.engine import CustomerState, load_model

MODEL = load_model()
T = datetime(2026, 1, 1, tzinfo=UTC)


def state(stage: str, cycle: int = 1) -> CustomerState:
    return CustomerState("c", cycle, stage, T, 1, None, T, 1)


def test_moves_count_each_customer_once() -> None:
    counts = StageCounts()
    counts.move(0, None, state("need_recognition"))
    counts.move(0, state("need_recognition"), state("evaluation"))
    counts.move(1, None, state("purchase", 2))
    assert counts.per_stage(MODEL.stages) == {
        "need_recognition": 0,
        "information_search": 0,
        "evaluation": 1,
        "purchase": 1,
        "post_purchase": 0,
    }
    counts.keep_only({1})
    assert counts.per_stage(MODEL.stages)["evaluation"] == 0
    counts.replace_partition(0, [("evaluation", 1), ("evaluation", 1)])
    assert counts.per_stage(MODEL.stages)["evaluation"] == 2


def test_merge_counts_each_partition_once_and_sums_stages_and_cycles() -> None:
    a, b = StageCounts(), StageCounts()
    a.replace_partition(0, [("evaluation", 1), ("purchase", 2)])
    b.replace_partition(1, [("evaluation", 1)])
    stale = StageCounts()
    stale.replace_partition(0, [("need_recognition", 1)] * 5)  # partition 0, mid-rebalance
    merged = merge_funnels(
        [funnel_document(a, {0}), funnel_document(b, {1}), funnel_document(stale, {0})],
        MODEL.stages,
    )
    assert merged["customers"] == 3
    assert merged["stages"]["evaluation"] == 2
    assert merged["stages"]["need_recognition"] == 0
    assert merged["cycles"] == {"1": 2, "2": 1}
    assert merged["partitions"] == ["0", "1"]


def test_a_peer_answer_is_checked_before_merging() -> None:
    from processor.contracts.funnel import is_local_funnel

    assert is_local_funnel({"partitions": {"0": [["purchase", 1, 3]], "1": []}})
    for bad in (
        [],
        {"partitions": []},
        {"partitions": {"x": []}},
        {"partitions": {"0": [["purchase", 1]]}},
        {"partitions": {"0": [["purchase", "1", 3]]}},
        {"partitions": {"0": [[1, 1, 3]]}},
        {"partitions": {"0": "rows"}},
    ):
        assert not is_local_funnel(bad), bad
