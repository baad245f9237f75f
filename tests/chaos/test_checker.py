"""The checker itself: a clean history passes, and each kind of damage is caught.

The history is made with the pure engine and the real encoders, as a perfect
processor would have left it; no broker needed.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import msgspec
import orjson

from processor.contracts.bundle import decode_envelope, encode_bundle
from processor.contracts.inputs import Rejection
from processor.contracts.limits import Limits, decode_record
from processor.contracts.outputs import encode_dead_letter, encode_stage_change, encode_trigger
from processor.contracts.state import decode_state, encode_state
from processor.engine import CustomerState, Event, StageChange, apply, load_model, reemit
from processor.engine.triggers import TriggerFired
from processor.settings import Settings
from tests.chaos.checker import Observed, Produced, check
from tests.chaos.observe import Out
from tests.chaos.recheck import load
from tests.chaos.runner import _dump
from tests.chaos.workload import WorkloadShape, build

SETTINGS = Settings()
MODEL = load_model()
SHAPE = WorkloadShape(customers=40, hot_customers=1, hot_events=200, malformed_each=1)


def history() -> tuple[list[Produced], Observed]:
    """The workload as produced, and the outputs a correct processor would leave."""
    topic_of = {source: topic for topic, source in SETTINGS.source_topics.items()}
    produced: list[Produced] = []
    offsets: dict[tuple[str, int], int] = {}
    for planned in build(3, SHAPE):
        topic = topic_of[planned.source]
        partition = 0 if planned.key is None else sum(planned.key) % 3
        offset = offsets.get((topic, partition), 0)
        offsets[(topic, partition)] = offset + 1
        produced.append(Produced(planned, topic, partition, offset))
    states: dict[str, CustomerState] = {}
    changes: list[Out] = []
    triggers: list[Out] = []
    letters: list[Out] = []
    changelog: list[Out] = []
    applied: set[tuple[str, str]] = set()
    bundles: list[Out] = []
    for p in produced:
        decoded = decode_record(
            p.planned.key,
            p.planned.value,
            SETTINGS.source_topics[p.topic],
            p.topic,
            Limits(),
        )
        if isinstance(decoded, Rejection):
            letter = encode_dead_letter(
                reason=decoded.reason,
                detail=decoded.detail,
                topic=p.topic,
                partition=p.partition,
                offset=p.offset,
                key=p.planned.key,
                payload=p.planned.value,
            )
            letters.append(_out("dl", letter.key, letter.value, letter.headers, len(letters)))
            continue
        assert isinstance(decoded, Event)
        if MODEL.evidence_for(decoded.source, decoded.type) is not None:
            bundles.append(_out("ev", None, encode_bundle([decoded]), [], len(bundles)))
        state = states.get(decoded.customer_id)
        if state is not None and (decoded.customer_id, decoded.event_id) in applied:
            step = reemit(state, decoded.event_id)  # what the sealed dedupe chunks give
        else:
            step = apply(state, decoded, MODEL)
            applied.add((decoded.customer_id, decoded.event_id))
        if step.state is None or step.outcome == "ignored":
            continue
        for output in step.outputs:
            if isinstance(output, StageChange):
                r = encode_stage_change(output, "/test")
                changes.append(_out("sc", r.key, r.value, r.headers, len(changes)))
            elif isinstance(output, TriggerFired):
                r = encode_trigger(output, "/test")
                triggers.append(_out("tr", r.key, r.value, r.headers, len(triggers)))
        if step.state is not states.get(decoded.customer_id):
            states[decoded.customer_id] = step.state
            changelog.append(
                _out(
                    "cl", decoded.customer_id.encode(), encode_state(step.state), [], len(changelog)
                )
            )
    api = {c: {"applied_events": s.applied_count} for c, s in states.items()}
    return produced, Observed(changes, triggers, letters, changelog, api, bundles)  # type: ignore[arg-type]


def _out(topic: str, key: bytes | None, value: bytes, headers: list, offset: int) -> Out:  # type: ignore[type-arg]
    return Out(topic, 0, offset, key, value, tuple(headers))


def counts(produced: list[Produced], observed: Observed) -> dict[str, int]:
    report = check(produced, observed, SETTINGS, MODEL)
    return {name: f.count for name, f in report.findings.items() if f.count}


def test_a_correct_history_has_no_violations() -> None:
    produced, observed = history()
    report = check(produced, observed, SETTINGS, MODEL)
    assert report.violations == 0, report.render()
    assert report.facts["distinct stage changes"] > 100
    assert report.facts["dead letter records"] == sum(
        1 for p in produced if p.planned.kind == "malformed"
    )


def test_a_reissued_id_and_a_gap_are_caught() -> None:
    produced, observed = history()
    first = observed.stage_changes[5]
    doc = first.doc
    doc["changed_at"] = "2030-01-01T00:00:00Z"
    observed.stage_changes.append(replace(first, offset=9999, value=orjson.dumps(doc)))
    lost = next(r for r in observed.stage_changes if r.doc["sequence"] == 2)
    observed.stage_changes.remove(lost)
    found = counts(produced, observed)
    assert found["stage_changes.one_payload_per_id"] == 1
    assert found["stage_changes.one_payload_per_customer_sequence"] == 1
    assert found["stage_changes.sequences_1_to_n"] >= 1


def test_a_lost_event_a_regressed_state_and_a_missing_dead_letter_are_caught() -> None:
    produced, observed = history()
    customer = next(iter(observed.api))
    observed.api[customer] = {"applied_events": -1}
    records = [r for r in observed.changelog if r.key == customer.encode()]
    observed.changelog.append(replace(records[0], offset=10**6))  # an older state, written last
    del observed.dead_letters[0]
    ids = [
        tuple(a.event.event_id for a in decode_envelope(b.value or b"").arrivals)
        for b in observed.bundles
    ]
    lone = next(i for i, found in enumerate(ids) if found and ids.count(found) == 1)
    del observed.bundles[lone]  # the only bundle that carried its event
    other = next(c for c in observed.api if c != customer)
    written = [r for r in observed.changelog if r.key == other.encode()]
    assert len(written) >= 3
    last = decode_state(written[-1].value)  # type: ignore[arg-type]
    forked = msgspec.structs.replace(
        last, recent_event_ids=(*last.recent_event_ids[:-1], "another-event")
    )
    observed.changelog.append(replace(written[-1], offset=10**6 + 1, value=encode_state(forked)))
    found = counts(produced, observed)
    assert found["router.every_valid_event_bundled"] == 1
    assert found["changelog.one_history"] == 1
    assert found["changelog.never_goes_back"] == 1
    assert found["changelog.applied_count_equals_api"] == 1
    assert found["changelog.applied_count_equals_input"] == 1
    assert found["dead_letters.every_malformed_offset"] == 1


def test_out_of_order_first_occurrences_and_duplicate_triggers_are_caught() -> None:
    produced, observed = history()
    # The customer's sequence 1 re-emitted after sequence 2 is fine; 2 first, then 1, is not.
    chain = [r for r in observed.stage_changes if r.key == observed.stage_changes[0].key]
    assert len(chain) >= 2
    one, two = chain[0], chain[1]
    observed.stage_changes.remove(one)
    observed.stage_changes.insert(observed.stage_changes.index(two) + 1, one)
    trigger = observed.triggers[0].doc
    trigger["id"] = "another-id"
    observed.triggers.append(replace(observed.triggers[0], value=orjson.dumps(trigger)))
    found = counts(produced, observed)
    assert found["stage_changes.first_occurrences_in_sequence_order"] == 1
    assert found["triggers.at_most_once_per_customer_rule_cycle"] == 1


def test_a_change_dated_before_its_cycle_is_caught_and_enforced_with_event_time() -> None:
    produced, observed = history()
    start = next(r for r in observed.stage_changes if r.doc["cycle"] == 2)
    late = start.doc
    late["sequence"] = 1 + max(
        r.doc["sequence"] for r in observed.stage_changes if r.key == start.key
    )
    late["from_stage"], late["to_stage"] = late["to_stage"], "evaluation"
    late["changed_at"] = "2026-01-01T00:00:00Z"
    observed.stage_changes.append(replace(start, offset=10**6, value=orjson.dumps(late)))
    partition = check(produced, observed, SETTINGS, MODEL, order="partition")
    event_time = check(produced, observed, SETTINGS, MODEL, order="event-time")
    name = "stage_changes.not_dated_before_their_cycle"
    assert partition.findings[name].count == event_time.findings[name].count == 1
    assert not partition.findings[name].enforced and event_time.findings[name].enforced


def test_a_dumped_history_checks_the_same_when_loaded_again(tmp_path: Path) -> None:
    produced, observed = history()
    del observed.bundles[3]
    _dump(tmp_path, produced, observed, SETTINGS)
    settings, again, seen = load(tmp_path)
    before = counts(produced, observed)
    after = {
        name: f.count for name, f in check(again, seen, settings, MODEL).findings.items() if f.count
    }
    assert before == after == {"router.every_valid_event_bundled": 1}
