"""The chaos workload: a seeded mix of good journeys and hostile input.

Everything is decided by the seed, so a failing run can be replayed. The
workload keeps, for every record, what the checker needs to judge the
outputs: the bytes sent, the key, and for malformed records the dead-letter
reason the decoder must give.

Kinds of records:

* good events for many customers, spread over the three input topics, each
  customer's events in event-time order (so the produced order is also the
  event-time order), some customers with a second cycle (a repeat order or
  research more than 30 days after the purchase);
* the same good events with a wrong key (another customer's id) or no key;
* malformed records, one or more of every decoder reason, and a tombstone;
* events of a type the model does not know (ignored, never dead-lettered);
* re-sent old event ids: byte-identical copies of an earlier record of the
  same customer, sent again with the same key, within the dedupe window;
* a few hot customers with thousands of events each, clickstream only and
  correctly keyed, cycling through many repeat purchases.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import orjson

from processor.engine import Source

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)

Kind = Literal["good", "duplicate", "ignored", "malformed"]

Step = tuple[Source, str, timedelta, dict[str, object]]
"""(source, type, time since the journey started, properties)"""


@dataclass(frozen=True, slots=True)
class Planned:
    """One record to produce, and what it is."""

    source: Source
    key: bytes | None
    value: bytes | None
    kind: Kind
    reason: str | None = None
    """The dead-letter reason a malformed record must get."""
    customer_id: str | None = None
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class WorkloadShape:
    customers: int = 300
    hot_customers: int = 3
    hot_events: int = 1500
    malformed_each: int = 3
    """Malformed records per decoder reason."""
    wrong_key_ratio: float = 0.08
    null_key_ratio: float = 0.08
    resend_ratio: float = 0.05
    ignored_ratio: float = 0.02


def _time(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def _event(
    customer: str, event_id: str, event_type: str, at: datetime, **properties: object
) -> bytes:
    return orjson.dumps(
        {
            "event_id": event_id,
            "customer_id": customer,
            "type": event_type,
            "occurred_at": _time(at),
            "properties": properties,
        }
    )


def _journey(rng: random.Random, start: datetime) -> list[Step]:
    """One customer's events as (source, type, offset from start, properties), in time order."""
    steps: list[Step] = []
    t = timedelta(minutes=rng.randint(0, 600))

    def add(source: Source, event_type: str, minutes: float, **props: object) -> None:
        nonlocal t
        t += timedelta(minutes=minutes)
        steps.append((source, event_type, t, props))

    add("clickstream", "page_view", 0)
    depth = rng.random()
    if depth > 0.15:
        options: list[tuple[Source, str]] = [
            ("clickstream", "product_view"),
            ("research", "review_read"),
        ]
        add(*rng.choice(options), 5)
        if rng.random() < 0.5:
            add("research", "search_query", 3)
    if depth > 0.35:
        add("research", rng.choice(["pricing_view", "comparison_view"]), 30)
        if rng.random() < 0.4:
            add("support", "product_question", 10)
        add("clickstream", "checkout_started", 20)
    if depth > 0.55:
        add("clickstream", "order_completed", rng.choice([5, 30, 90]))
        if rng.random() < 0.6:
            add("support", rng.choice(["ticket_opened", "chat_started"]), 60 * 24)
        if rng.random() < 0.3:
            add("support", "satisfaction_rating", 60 * 48, score=rng.randint(1, 5))
        if rng.random() < 0.1:
            add("support", "complaint", 60)
        second = rng.random()
        if second < 0.15:  # a repeat order: cycle 2 at purchase
            add("clickstream", "order_completed", 60 * 24 * 10)
        elif second < 0.25:  # back to research after more than 30 days: cycle 2 by rule 3b
            add("research", "review_read", 60 * 24 * 35)
    return steps


def _hot_journey(rng: random.Random, events: int) -> list[Step]:
    """Thousands of clickstream events: browsing and a repeat order every ~40 events."""
    steps: list[Step] = []
    t = timedelta(0)
    for n in range(events):
        t += timedelta(minutes=rng.randint(1, 30))
        if n % 40 == 39:
            event_type = "order_completed"
        elif n % 40 == 37:
            event_type = "checkout_started"
        else:
            event_type = rng.choice(["page_view", "product_view", "site_search", "add_to_cart"])
        steps.append(("clickstream", event_type, t, {}))
    return steps


MALFORMED: dict[str, list[bytes | None]] = {
    "not_utf8": [b"\xff\xfe\xfa not utf-8", b'{"event_id": "\xc3\x28"}'],
    "not_json": [b'{"event_id": "x", ', b"hello", None, b"\x00" * 2048],
    "not_an_object": [b"[1, 2, 3]", b'"just a string"', b"42"],
    "missing_field": [
        b'{"event_id": "m1", "customer_id": "c", "type": "page_view"}',
        b'{"customer_id": "c", "type": "page_view", "occurred_at": "2026-03-01T09:00:00Z"}',
    ],
    "invalid_field": [
        b'{"event_id": "i1", "customer_id": 42, "type": "page_view",'
        b' "occurred_at": "2026-03-01T09:00:00Z"}',
        b'{"event_id": "", "customer_id": "c", "type": "page_view",'
        b' "occurred_at": "2026-03-01T09:00:00Z"}',
        b'{"event_id": "i3", "customer_id": "c", "type": "page_view",'
        b' "occurred_at": "2026-03-01T09:00:00Z", "properties": [1]}',
        b'{"event_id": "i4", "customer_id": "' + b"c" * 300 + b'", "type": "page_view",'
        b' "occurred_at": "2026-03-01T09:00:00Z"}',  # over JOURNEY_MAX_ID_LENGTH: invalid_field
    ],
    "invalid_timestamp": [
        b'{"event_id": "t1", "customer_id": "c", "type": "page_view",'
        b' "occurred_at": "2026-13-45T09:00:00Z"}',
        b'{"event_id": "t2", "customer_id": "c", "type": "page_view",'
        b' "occurred_at": "2026-03-01T09:00:00"}',
        b'{"event_id": "t3", "customer_id": "c", "type": "page_view", "occurred_at": 17}',
    ],
    "too_large": [b"\x00" * 70_000, b'{"event_id": "big", "pad": "' + b"x" * 70_000 + b'"}'],
}
"""Examples of every decoder reason (a tombstone, a None value, is ``not_json``)."""


def build(seed: int, shape: WorkloadShape) -> list[Planned]:
    """The whole workload in production order."""
    rng = random.Random(seed)
    prefix = f"s{seed}"
    streams: list[list[Planned]] = []
    next_id = 0

    def plan_customer(customer: str, steps: list[Step], *, hot: bool) -> list[Planned]:
        nonlocal next_id
        start = T0 + timedelta(days=rng.randint(0, 20))
        planned: list[Planned] = []
        for source, event_type, offset, props in steps:
            next_id += 1
            event_id = f"{prefix}-e{next_id}"
            value = _event(customer, event_id, event_type, start + offset, **props)
            key: bytes | None = customer.encode()
            if not hot:
                roll = rng.random()
                if roll < shape.wrong_key_ratio:
                    key = f"{prefix}-c{rng.randrange(shape.customers)}".encode()
                elif roll < shape.wrong_key_ratio + shape.null_key_ratio:
                    key = None
            planned.append(Planned(source, key, value, "good", None, customer, event_id))
            if key == customer.encode() and rng.random() < shape.resend_ratio:
                # Re-sent later, same bytes and key: a producer retry or a replayed export.
                earlier = rng.choice([p for p in planned[-20:] if p.kind == "good"])
                if earlier.key == customer.encode():
                    planned.append(
                        Planned(
                            earlier.source,
                            earlier.key,
                            earlier.value,
                            "duplicate",
                            None,
                            customer,
                            earlier.event_id,
                        )
                    )
            if rng.random() < shape.ignored_ratio:
                next_id += 1
                ignored = _event(
                    customer, f"{prefix}-e{next_id}", "newsletter_open", start + offset
                )
                planned.append(Planned(source, key, ignored, "ignored", None, customer))
        return planned

    for i in range(shape.customers):
        customer = f"{prefix}-c{i}"
        streams.append(plan_customer(customer, _journey(rng, T0), hot=False))
    for i in range(shape.hot_customers):
        customer = f"{prefix}-hot{i}"
        streams.append(plan_customer(customer, _hot_journey(rng, shape.hot_events), hot=True))

    malformed: list[Planned] = []
    for reason, examples in MALFORMED.items():
        for n in range(shape.malformed_each * len(examples)):
            value = examples[n % len(examples)]
            source: Source = rng.choice(["clickstream", "research", "support"])
            key = rng.choice([None, b"some-key", f"{prefix}-c0".encode()])
            if value is None:
                key = key or b"tombstone"  # a record needs a key or a value
            malformed.append(Planned(source, key, value, "malformed", reason))

    # Interleave: take the next record of a random stream, keeping each stream's order.
    # Hot streams are long, so they are drawn in proportion to what they have left.
    out: list[Planned] = []
    cursors = [0] * len(streams)
    remaining = [len(s) for s in streams]
    total = sum(remaining)
    live = [i for i, n in enumerate(remaining) if n]
    while live:
        pick = rng.choices(live, weights=[remaining[i] for i in live])[0]
        out.append(streams[pick][cursors[pick]])
        cursors[pick] += 1
        remaining[pick] -= 1
        if not remaining[pick]:
            live.remove(pick)
        if malformed and rng.random() < len(malformed) / max(1, total - len(out)):
            out.append(malformed.pop())
    out.extend(malformed)
    return out
