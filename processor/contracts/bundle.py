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

Origin = tuple[int, int]
"""Where an event was read: its input partition and offset (its topic is on the event).

Carried so that the engine, on whichever worker owns the customer, can count
each input record's outcome against the input partition it came from."""


def _event_document(event: Event, origin: Origin | None = None) -> dict[str, Any]:
    document = {
        "event_id": event.event_id,
        "customer_id": event.customer_id,
        "source": event.source,
        "topic": event.topic,
        "type": event.type,
        "occurred_at": event.occurred_at,
        "properties": event.properties,
    }
    if origin is not None:
        document["origin"] = origin
    return document


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


def encode_bundles(routed: Iterable[tuple[Event, Origin]], max_bytes: int) -> Iterator[bytes]:
    """Events and their origins as bundles under ``max_bytes`` each (in order, none empty).

    Each event's document is encoded once and a bundle is those documents
    joined, so splitting costs nothing extra. The caller keeps every single
    event far below ``max_bytes`` (see limits.py).
    """
    head, tail = b'{"v":%d,"events":[' % BUNDLE_VERSION, b"]}"
    parts: list[bytes] = []
    size = len(head) + len(tail)
    for event, origin in routed:
        part = orjson.dumps(_event_document(event, origin))
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


@dataclass(frozen=True, slots=True)
class Message:
    """A record of the internal topic: a bundle of events, or a tick."""

    events: list[Event]
    origins: list[Origin | None]
    tick: Tick | None = None


def decode_message(raw: bytes) -> Message:
    """The events of a bundle with their origins, and its tick if it is one."""
    doc = orjson.loads(raw)
    tick = doc.get("tick")
    events = _events(doc)
    origins: list[Origin | None] = [_origin(e.get("origin")) for e in doc["events"]]
    if tick is None:
        return Message(events, origins)
    return Message(events, origins, Tick(tick["id"], datetime.fromisoformat(tick["now"])))


def _origin(value: Any) -> Origin | None:
    if isinstance(value, list) and len(value) == 2:
        return int(value[0]), int(value[1])
    return None


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
