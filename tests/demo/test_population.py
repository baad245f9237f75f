from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.contracts.inputs import REJECT_REASONS, Rejection
from processor.contracts.limits import Limits, decode_record
from processor.demo.population import SOURCES, DemoRecord, count_by_source, generate
from processor.engine import CustomerState, Event, apply, load_model

START = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
CUSTOMERS = 400
MALFORMED = 16


def decode(record: DemoRecord) -> Event | Rejection:
    """As the router decodes: the default size limits, then the input contract."""
    return decode_record(record.key, record.value, record.source, f"demo.{record.source}", Limits())


@pytest.fixture(scope="module")
def records() -> list[DemoRecord]:
    return generate(CUSTOMERS, seed=11, start=START, malformed=MALFORMED)


@pytest.fixture(scope="module")
def decoded(records: list[DemoRecord]) -> list[tuple[DemoRecord, Event | Rejection]]:
    return [(record, decode(record)) for record in records]


@pytest.fixture(scope="module")
def events(decoded: list[tuple[DemoRecord, Event | Rejection]]) -> list[Event]:
    return [result for _, result in decoded if isinstance(result, Event)]


def test_the_same_seed_gives_the_same_records(records: list[DemoRecord]) -> None:
    assert generate(CUSTOMERS, seed=11, start=START, malformed=MALFORMED) == records


def test_another_seed_gives_other_records(records: list[DemoRecord]) -> None:
    assert generate(CUSTOMERS, seed=12, start=START, malformed=MALFORMED) != records


def test_exactly_the_malformed_records_are_rejected(
    decoded: list[tuple[DemoRecord, Event | Rejection]],
) -> None:
    rejected = [i for i, (_, result) in enumerate(decoded) if isinstance(result, Rejection)]
    assert len(rejected) == MALFORMED
    assert rejected[-1] - rejected[0] > len(decoded) // 2, "spread through the stream"


def test_every_decoding_rejection_reason_occurs(
    decoded: list[tuple[DemoRecord, Event | Rejection]],
) -> None:
    reasons = {result.reason for _, result in decoded if isinstance(result, Rejection)}
    assert reasons == set(REJECT_REASONS) - {"processing_error"}


def test_has_the_requested_customers(events: list[Event]) -> None:
    customers = {event.customer_id for event in events}
    assert customers == {f"cust-{n:06d}" for n in range(1, CUSTOMERS + 1)}


def test_event_ids_are_unique(events: list[Event]) -> None:
    assert len({event.event_id for event in events}) == len(events)


def test_all_sources_occur(records: list[DemoRecord]) -> None:
    counts = count_by_source(records)
    assert set(counts) == set(SOURCES)
    assert all(counts[source] > 0 for source in SOURCES)
    assert sum(counts.values()) == len(records)


def test_keys_are_mostly_the_customer_but_not_always(
    decoded: list[tuple[DemoRecord, Event | Rejection]],
) -> None:
    kinds: Counter[str] = Counter()
    for record, result in decoded:
        if not isinstance(result, Event):
            continue
        if record.key is None:
            kinds["null"] += 1
        elif record.key == result.customer_id.encode():
            kinds["customer"] += 1
        else:
            kinds["wrong"] += 1
    assert kinds["null"] > 0
    assert kinds["wrong"] > 0
    assert kinds["customer"] > 0.85 * sum(kinds.values())


def test_some_customers_order_more_than_once(events: list[Event]) -> None:
    orders = Counter(event.customer_id for event in events if event.type == "order_completed")
    assert any(count >= 2 for count in orders.values())


def test_some_customers_research_again_long_after_an_order(events: list[Event]) -> None:
    ordered: dict[str, list[datetime]] = defaultdict(list)
    for event in events:
        if event.type == "order_completed":
            ordered[event.customer_id].append(event.occurred_at)
    returners = {
        event.customer_id
        for event in events
        if event.source == "research"
        and any(event.occurred_at > at + timedelta(days=30) for at in ordered[event.customer_id])
    }
    assert returners


def test_support_contacts_happen_before_and_after_purchases(events: list[Event]) -> None:
    first_order: dict[str, datetime] = {}
    for event in events:
        if event.type == "order_completed":
            at = first_order.get(event.customer_id)
            first_order[event.customer_id] = min(at, event.occurred_at) if at else event.occurred_at
    support = [event for event in events if event.source == "support"]
    before = [
        e
        for e in support
        if e.customer_id not in first_order or e.occurred_at < first_order[e.customer_id]
    ]
    assert before and len(before) < len(support)
    assert {"product_question", "chat_started"} & {e.type for e in before}
    scores = {e.properties["score"] for e in support if e.type == "satisfaction_rating"}
    assert scores <= {1, 2, 3, 4, 5} and len(scores) > 1


def test_includes_event_types_the_processor_ignores(events: list[Event]) -> None:
    model = load_model()
    unknown = {e.type for e in events if model.evidence_for(e.source, e.type) is None}
    assert unknown


def test_timestamps_come_in_several_styles(
    decoded: list[tuple[DemoRecord, Event | Rejection]],
) -> None:
    stamps = [
        orjson.loads(record.value)["occurred_at"]
        for record, result in decoded
        if isinstance(result, Event)
    ]
    assert any(s.endswith("Z") for s in stamps)
    assert any(s.endswith("+02:00") for s in stamps)
    assert any("." in s for s in stamps)
    assert any("." not in s for s in stamps)


def test_events_span_about_120_days_in_rough_time_order(events: list[Event]) -> None:
    times = [event.occurred_at for event in events]
    assert min(times) >= START
    assert max(times) <= START + timedelta(days=121)
    assert max(times) - min(times) > timedelta(days=100)
    late = sum(1 for a, b in itertools.pairwise(times) if b < a - timedelta(hours=2))
    assert late < 0.01 * len(times)


def test_the_engine_sees_every_stage_and_repeat_cycles(events: list[Event]) -> None:
    model = load_model()
    states: dict[str, CustomerState] = {}
    for event in events:
        step = apply(states.get(event.customer_id), event, model)
        if step.state is not None:
            states[event.customer_id] = step.state
    assert {state.stage for state in states.values()} == set(model.stages)
    assert max(state.cycle for state in states.values()) >= 2
    assert len(states) == CUSTOMERS


def test_no_customers_gives_only_the_malformed_records() -> None:
    records = generate(0, seed=1, start=START, malformed=3)
    assert len(records) == 3
    assert all(isinstance(decode(record), Rejection) for record in records)


def test_negative_counts_are_refused() -> None:
    with pytest.raises(ValueError):
        generate(-1, seed=1, start=START, malformed=0)
    with pytest.raises(ValueError):
        generate(1, seed=1, start=START, malformed=-1)


def test_a_naive_start_is_utc() -> None:
    naive = generate(5, seed=3, start=START.replace(tzinfo=None), malformed=0)
    assert naive == generate(5, seed=3, start=START, malformed=0)


@settings(max_examples=25, deadline=None)
@given(
    customers=st.integers(min_value=1, max_value=30),
    malformed=st.integers(min_value=0, max_value=20),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_counts_hold_for_any_size(customers: int, malformed: int, seed: int) -> None:
    results = [decode(record) for record in generate(customers, seed, START, malformed)]
    assert sum(isinstance(result, Rejection) for result in results) == malformed
    valid = [result for result in results if isinstance(result, Event)]
    assert len({event.customer_id for event in valid}) == customers
    assert len({event.event_id for event in valid}) == len(valid)
