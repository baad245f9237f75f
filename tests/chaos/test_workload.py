"""The chaos workload is what it says: seeded, and each record is of the kind it claims."""

from __future__ import annotations

from collections import Counter

from processor.contracts.inputs import REJECT_REASONS, Rejection
from processor.contracts.limits import Limits, decode_record
from processor.engine import Event, load_model
from tests.chaos.schedule import plan
from tests.chaos.workload import WorkloadShape, build

SHAPE = WorkloadShape(customers=60, hot_customers=2, hot_events=300)


def test_the_same_seed_gives_the_same_workload_and_schedule() -> None:
    assert build(4, SHAPE) == build(4, SHAPE)
    assert build(4, SHAPE) != build(5, SHAPE)
    assert plan(4, session_timeout=6.0) == plan(4, session_timeout=6.0)


def test_each_record_decodes_as_its_kind_says() -> None:
    model = load_model()
    reasons: Counter[str] = Counter()
    for p in build(7, SHAPE):
        decoded = decode_record(p.key, p.value, p.source, f"t.{p.source}", Limits())
        if p.kind == "malformed":
            assert isinstance(decoded, Rejection), p
            assert decoded.reason == p.reason, (p, decoded)
            reasons[decoded.reason] += 1
        else:
            assert isinstance(decoded, Event), p
            known = model.evidence_for(decoded.source, decoded.type) is not None
            assert known == (p.kind != "ignored"), p
    # Every reason the decoder can give; processing_error is the shell's own.
    assert set(reasons) == set(REJECT_REASONS) - {"processing_error"}


def test_the_workload_has_every_hostile_kind() -> None:
    planned = build(7, SHAPE)
    kinds = Counter(p.kind for p in planned)
    assert kinds["duplicate"] > 0 and kinds["ignored"] > 0 and kinds["malformed"] > 0
    keys = Counter(
        "none" if p.key is None else "own" if p.key == (p.customer_id or "").encode() else "other"
        for p in planned
        if p.kind == "good"
    )
    assert keys["none"] > 0 and keys["other"] > 0
    assert any(p.value is None for p in planned), "a tombstone"
    hot = Counter(p.customer_id for p in planned if p.customer_id and "hot" in p.customer_id)
    assert len(hot) == 2 and min(hot.values()) >= 300
    schedule = [f.kind for f in plan(7, session_timeout=6.0)[:5]]
    assert sorted(schedule) == ["kill", "kill_wipe", "pause", "rolling", "scale"]
    pause = next(f for f in plan(7, session_timeout=6.0) if f.kind == "pause")
    assert pause.hold > 6.0, "SIGSTOP longer than the session timeout"
