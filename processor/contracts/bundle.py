"""The internal repartition topic: bundles of valid events, all bound for one partition.

The router reads the input topics, whose keys and partition counts are not ours
to trust, and re-partitions every event by customer_id. Sending one record per
target partition per batch, rather than one per event, amortises Faust's
per-record cost on the stateful side: the engine agent handles a bundle of
events per stream iteration and writes each customer's state once per bundle.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from processor.engine import Event

BUNDLE_VERSION = 1


def _event_document(event: Event) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "customer_id": event.customer_id,
        "source": event.source,
        "topic": event.topic,
        "type": event.type,
        "occurred_at": event.occurred_at,
        "properties": event.properties,
    }


@dataclass(frozen=True, slots=True)
class Tick:
    """Fire the partition's absence timers due at ``now`` (event time); ``id`` names this tick.

    Ticks travel on the events topic, in order with the events of their
    partition, so timers fire in-stream; a replayed tick keeps its id.
    """

    id: str
    now: datetime


def encode_bundle(events: list[Event]) -> bytes:
    return orjson.dumps({"v": BUNDLE_VERSION, "events": [_event_document(e) for e in events]})


def encode_bundles(events: Iterable[Event], max_bytes: int) -> Iterator[bytes]:
    """The events as bundles whose values stay under ``max_bytes`` (in order, none empty).

    Each event's document is encoded once; a bundle is those documents joined,
    which is byte for byte what :func:`encode_bundle` gives for the same events.
    The caller keeps every single event far below ``max_bytes`` (see limits.py).
    """
    head, tail = b'{"v":%d,"events":[' % BUNDLE_VERSION, b"]}"
    parts: list[bytes] = []
    size = len(head) + len(tail)
    for event in events:
        part = orjson.dumps(_event_document(event))
        if parts and size + len(part) + 1 > max_bytes:
            yield head + b",".join(parts) + tail
            parts, size = [], len(head) + len(tail)
        parts.append(part)
        size += len(part) + 1
    if parts:
        yield head + b",".join(parts) + tail


def encode_tick(tick: Tick) -> bytes:
    return orjson.dumps(
        {"v": BUNDLE_VERSION, "events": [], "tick": {"id": tick.id, "now": tick.now}}
    )


def decode_message(raw: bytes) -> tuple[list[Event], Tick | None]:
    """The events of a bundle, and its tick if it is one."""
    doc = orjson.loads(raw)
    tick = doc.get("tick")
    events = _events(doc)
    if tick is None:
        return events, None
    return events, Tick(tick["id"], datetime.fromisoformat(tick["now"]))


def decode_bundle(raw: bytes) -> list[Event]:
    return _events(orjson.loads(raw))


def _events(doc: dict[str, Any]) -> list[Event]:
    if doc.get("v") != BUNDLE_VERSION:
        raise ValueError(f"unknown bundle version {doc.get('v')!r}")
    return [
        Event(
            event_id=e["event_id"],
            customer_id=e["customer_id"],
            source=e["source"],
            topic=e["topic"],
            type=e["type"],
            occurred_at=datetime.fromisoformat(e["occurred_at"]),
            properties=e["properties"],
        )
        for e in doc["events"]
    ]
