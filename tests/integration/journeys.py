"""Building input events for the integration tests, and what the engine says they should give."""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

from processor.contracts.inputs import decode_event
from processor.engine import CustomerState, Event, Source, apply, load_model
from processor.settings import Settings

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
_ids = itertools.count(1)


@dataclass(frozen=True)
class Sent:
    """One input record as produced: where to, with which key, and its raw value."""

    source: Source
    key: bytes | None
    value: bytes


def event(
    customer: str,
    source: Source,
    event_type: str,
    minutes: float,
    key: bytes | str | None = "customer",
    **properties: object,
) -> Sent:
    doc = {
        "event_id": f"ev-{next(_ids)}",
        "customer_id": customer,
        "type": event_type,
        "occurred_at": (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z"),
        "properties": properties,
    }
    record_key = customer.encode() if key == "customer" else key
    assert not isinstance(record_key, str)
    return Sent(source, record_key, orjson.dumps(doc))


def to_records(settings: Settings, sent: list[Sent]) -> list[tuple[str, bytes | None, bytes]]:
    topic_of = {source: topic for topic, source in settings.source_topics.items()}
    return [(topic_of[s.source], s.key, s.value) for s in sent]


def expected_final(settings: Settings, sent: list[Sent]) -> dict[str, CustomerState]:
    """Each customer's final state per the engine, applying events in produced order."""
    model = load_model()
    topic_of = {source: topic for topic, source in settings.source_topics.items()}
    states: dict[str, CustomerState | None] = defaultdict(lambda: None)
    for s in sent:
        decoded = decode_event(s.value, s.source, topic_of[s.source])
        if isinstance(decoded, Event):
            states[decoded.customer_id] = apply(states[decoded.customer_id], decoded, model).state
    return {c: st for c, st in states.items() if st is not None}
