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

import msgspec
import orjson

from processor.contracts.state import decode_state, encode_state_v1
from processor.engine import CustomerState, Event, EventRef
from processor.engine.erasure import ForgetRequest
from processor.engine.ordering import Arrival, InputPartition, Mark

BUNDLE_VERSION = 1
"""Version of ticks and of bundles written before event-time ordering (still read)."""

ORDERED_BUNDLE_VERSION = 2
"""Bundles with input positions and watermark marks (schemas/internal.event-bundle.v2.json)."""

ANONYMOUS_BUNDLE_VERSION = 3
"""v2 plus each event's optional ``anonymous_id`` (schemas/internal.event-bundle.v3.json).

Written only for a bundle that holds an event with an anonymous id, so every other
bundle stays v2, byte for byte."""

InputPosition = tuple[int, int]
"""Where an event was read: its input partition and offset (its topic is on the event).

A v2 bundle carries it, so that the engine, on whichever worker owns the
customer, breaks event-time ties the same way on every replay and counts each
input record's outcome against the input partition it came from."""


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


def encode_tick(tick: Tick) -> bytes:
    return orjson.dumps(
        {"v": BUNDLE_VERSION, "events": [], "tick": {"id": tick.id, "now": tick.now}}
    )


def decode_message(raw: bytes) -> tuple[list[Event], Tick | None]:
    """The events of a v1 bundle, and its tick if it is one."""
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
    return [_event(e) for e in doc["events"]]


def _event(e: dict[str, Any]) -> Event:
    """An event document of either bundle version."""
    return Event(
        event_id=e["event_id"],
        customer_id=e["customer_id"],
        source=e["source"],
        topic=e["topic"],
        type=e["type"],
        occurred_at=datetime.fromisoformat(e["occurred_at"]),
        properties=e["properties"],
        anonymous_id=e.get("anonymous_id"),
    )


FORGET_KIND = "forget"
"""``kind`` of a forget control message (schemas/internal.forget.v1.json).

Control messages are tagged with ``kind`` and versioned per kind with ``v``;
a record without ``kind`` is a bundle (v1 or v2) or a v1 tick."""


@dataclass(frozen=True, slots=True)
class ForgetMessage:
    """Forget a customer on the partition that owns it; ``source`` is where the request was read.

    It travels on the internal topic like a bundle, so it reaches the customer's
    partition in order with the events routed before and after it.
    """

    request: ForgetRequest
    source: tuple[str, int, int]
    """The erasure request's input topic, partition and offset (its counted outcome)."""
    alias_of: str | None = None
    """Set when this forgets an anonymous id because its customer was forgotten (v2): the
    request's outcome is counted where the customer was, not again here."""
    unlink_from: str | None = None
    """Set when a forgotten anonymous id was merged into this customer (v3): the message goes
    to that customer's partition and only removes the id from the customer's alias list (and
    from its state); the request is confirmed and counted on the anonymous id's partition."""


def encode_forget(message: ForgetMessage) -> bytes:
    """v1; v2 (internal.forget.v2.json: v1 plus ``alias_of``) for an alias's forget; v3
    (internal.forget.v3.json: v1 plus ``unlink_from``) to unlink a forgotten anonymous id."""
    request = message.request
    topic, partition, offset = message.source
    if message.alias_of is not None and message.unlink_from is not None:
        raise ValueError("a forget message is an alias's forget or an unlink, not both")
    extra: dict[str, str] = {}
    version = 1
    if message.alias_of is not None:
        extra, version = {"alias_of": message.alias_of}, 2
    elif message.unlink_from is not None:
        extra, version = {"unlink_from": message.unlink_from}, 3
    return orjson.dumps(
        {
            "kind": FORGET_KIND,
            "v": version,
            "customer_id": request.customer_id,
            "request_id": request.request_id,
            "requested_at": request.requested_at,
            "source": {"topic": topic, "partition": partition, "offset": offset},
            **extra,
        }
    )


def _forget(doc: dict[str, Any]) -> ForgetMessage:
    if doc.get("kind") != FORGET_KIND or doc.get("v") not in (1, 2, 3):
        raise ValueError(f"unknown control message {doc.get('kind')!r} v{doc.get('v')!r}")
    at = doc["requested_at"]
    request = ForgetRequest(
        doc["customer_id"], doc["request_id"], None if at is None else datetime.fromisoformat(at)
    )
    source = doc["source"]
    alias_of = doc.get("alias_of") if doc["v"] == 2 else None
    if doc["v"] == 2 and not isinstance(alias_of, str):
        raise ValueError("a v2 forget control message without alias_of")
    unlink_from = doc.get("unlink_from") if doc["v"] == 3 else None
    if doc["v"] == 3 and not isinstance(unlink_from, str):
        raise ValueError("a v3 forget control message without unlink_from")
    return ForgetMessage(
        request, (source["topic"], source["partition"], source["offset"]), alias_of, unlink_from
    )


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded record of the internal topic: arrivals with their marks, a tick, or a forget.

    ``ordered`` is False for a v1 bundle (no positions, no marks): its events are
    applied at once, as they were before event-time ordering.
    """

    arrivals: list[Arrival]
    marks: dict[InputPartition, Mark]
    tick: Tick | None = None
    ordered: bool = True
    forget: ForgetMessage | None = None
    merge: MergeMessage | None = None
    forward: ForwardMessage | None = None


def encode_ordered_bundle(arrivals: list[Arrival], marks: dict[InputPartition, Mark]) -> bytes:
    """One v2 bundle (the watermark-only bundles of the mark broadcaster, and tests)."""
    return b"".join(encode_ordered_bundles(arrivals, marks, max_bytes=2**62))


def encode_ordered_bundles(
    arrivals: Iterable[Arrival], marks: dict[InputPartition, Mark], max_bytes: int
) -> Iterator[bytes]:
    """v2 bundles of at most ``max_bytes`` each, in order; the marks ride on the last one.

    Each event's document is encoded once and a bundle is those documents
    joined, so splitting by bytes costs nothing extra. The marks cover the whole
    batch, so they go only on its last bundle (a receiver must not advance its
    clock before it has every event the marks vouch for). The caller keeps each
    event far below ``max_bytes`` (see limits.py). No arrivals: one bundle of marks.
    """
    tail = (
        b'],"marks":'
        + orjson.dumps([[t, p, m.watermark, m.idle] for (t, p), m in sorted(marks.items())])
        + b"}"
    )
    head = b'{"v":%d,"events":[' % ORDERED_BUNDLE_VERSION
    anonymous_head = b'{"v":%d,"events":[' % ANONYMOUS_BUNDLE_VERSION  # same length
    bare = b'],"marks":[]}'
    parts: list[bytes] = []
    anonymous = False
    size = len(head) + len(tail)
    for a in arrivals:
        doc = _event_document(a.event) | {"partition": a.partition, "offset": a.offset}
        if a.skewed:
            doc["skewed"] = True
        if a.event.anonymous_id is not None:
            doc["anonymous_id"] = a.event.anonymous_id
        part = orjson.dumps(doc)
        if parts and size + len(part) + 1 > max_bytes:
            yield (anonymous_head if anonymous else head) + b",".join(parts) + bare
            parts, size, anonymous = [], len(head) + len(tail), False
        parts.append(part)
        anonymous = anonymous or a.event.anonymous_id is not None
        size += len(part) + 1
    yield (anonymous_head if anonymous else head) + b",".join(parts) + tail


def decode_envelope(raw: bytes) -> Envelope:
    """Any record of the internal topic: a v3 or v2 bundle, a v1 bundle, a (v1) tick or a forget."""
    doc = orjson.loads(raw)
    kind = doc.get("kind")
    if kind == MERGE_KIND:
        return Envelope([], {}, merge=_merge(doc), ordered=False)
    if kind == FORWARD_KIND:
        return Envelope([], {}, forward=_forward(doc), ordered=False)
    if kind is not None:
        return Envelope([], {}, forget=_forget(doc), ordered=False)
    if doc.get("v") not in (ORDERED_BUNDLE_VERSION, ANONYMOUS_BUNDLE_VERSION):
        events, tick = decode_message(raw)
        return Envelope([Arrival(e, 0, n) for n, e in enumerate(events)], {}, tick, False)
    arrivals = [
        Arrival(_event(e), e["partition"], e["offset"], bool(e.get("skewed", False)))
        for e in doc["events"]
    ]
    marks = {
        (topic, partition): Mark(None if at is None else datetime.fromisoformat(at), idle)
        for topic, partition, at, idle in doc["marks"]
    }
    return Envelope(arrivals, marks)


MERGE_KIND = "merge"
"""``kind`` of a merge control message (schemas/internal.merge.v1.json)."""


@dataclass(frozen=True, slots=True)
class MergeMessage:
    """Merge an anonymous journey into a customer's, on the partition that owns the customer.

    The anonymous id's partition sends it, re-partitioned by ``customer_id``,
    when it applies an identify event: it carries the anonymous state and its
    sealed dedupe chunks as they were then, so the customer's partition can call
    :func:`processor.engine.identity.merge` without reading another partition.
    A replayed identify sends the same message; the customer remembers the
    identify event id, so the repeat is a duplicate.
    """

    customer_id: str
    anonymous_id: str
    identify: EventRef
    identified_at: datetime
    state: CustomerState | None
    chunks: tuple[tuple[str, ...], ...]
    """The anonymous side's sealed dedupe chunks in its window, oldest first."""
    source: tuple[str, int, int]
    """The identify event's input topic, partition and offset."""


def encode_merge(message: MergeMessage) -> bytes:
    topic, partition, offset = message.source
    # The JSON (v1) state codec: the message is JSON and its schema embeds the state document.
    state = None if message.state is None else orjson.Fragment(encode_state_v1(message.state))
    return orjson.dumps(
        {
            "kind": MERGE_KIND,
            "v": 1,
            "customer_id": message.customer_id,
            "anonymous_id": message.anonymous_id,
            "identify": {
                "event_id": message.identify.event_id,
                "topic": message.identify.topic,
                "type": message.identify.type,
                "occurred_at": message.identified_at,
            },
            "state": state,
            "chunks": [list(chunk) for chunk in message.chunks],
            "source": {"topic": topic, "partition": partition, "offset": offset},
        }
    )


def decode_merge(raw: bytes) -> MergeMessage:
    """A merge control message; raises ValueError for another kind or version."""
    return _merge(orjson.loads(raw))


def _merge(doc: dict[str, Any]) -> MergeMessage:
    if doc.get("kind") != MERGE_KIND or doc.get("v") != 1:
        raise ValueError(f"unknown control message {doc.get('kind')!r} v{doc.get('v')!r}")
    identify = doc["identify"]
    state = doc["state"]
    source = doc["source"]
    return MergeMessage(
        customer_id=doc["customer_id"],
        anonymous_id=doc["anonymous_id"],
        identify=EventRef(identify["event_id"], identify["topic"], identify["type"]),
        identified_at=datetime.fromisoformat(identify["occurred_at"]),
        state=None if state is None else decode_state(orjson.dumps(state)),
        chunks=tuple(tuple(chunk) for chunk in doc["chunks"]),
        source=(source["topic"], source["partition"], source["offset"]),
    )


FORWARD_KIND = "forward"
"""``kind`` of a forward control message (schemas/internal.forward.v1.json)."""


@dataclass(frozen=True, slots=True)
class ForwardMessage:
    """Events of a linked anonymous id, sent on to its customer's partition (the second hop).

    They were released in event-time order on the anonymous id's partition, and
    already carry the customer's id (:func:`processor.engine.identity.resolve`):
    the customer's partition applies them at once, without holding them again
    (their ``late`` flag is kept, so a replay re-emits the same bytes). Each
    keeps its input position, so its outcome is counted once, where it is applied.
    """

    customer_id: str
    events: tuple[tuple[Event, InputPosition | None], ...]


def encode_forward(message: ForwardMessage) -> bytes:
    events = []
    for event, origin in message.events:
        doc = _event_document(event) | {"anonymous_id": event.anonymous_id, "late": event.late}
        doc["origin"] = None if origin is None else list(origin)
        events.append(doc)
    return orjson.dumps(
        {"kind": FORWARD_KIND, "v": 1, "customer_id": message.customer_id, "events": events}
    )


def _forward(doc: dict[str, Any]) -> ForwardMessage:
    if doc.get("v") != 1:
        raise ValueError(f"unknown control message {doc.get('kind')!r} v{doc.get('v')!r}")
    events: list[tuple[Event, InputPosition | None]] = []
    for e in doc["events"]:
        event = _event(e)
        if e["late"]:
            event = msgspec.structs.replace(event, late=True)
        origin = e["origin"]
        events.append((event, None if origin is None else (origin[0], origin[1])))
    return ForwardMessage(doc["customer_id"], tuple(events))
