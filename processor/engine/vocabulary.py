"""The engine's vocabulary: the value types every part of the engine and the shell speaks.

Events in, stage changes and sealed dedupe chunks out, and the per-customer state
between them. They live apart from the rules (:mod:`processor.engine.core`) so that
the trigger kinds, the identity merge and the contracts can name them without
importing the rules that use them (and without an import circle).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple, get_args

import msgspec

Source = Literal["clickstream", "research", "support"]
"""The three kinds of input. Each has its own Kafka topic; names are configurable."""

SOURCES: tuple[Source, ...] = get_args(Source)

Stage = str
"""A stage name, one of the model's ``stages``."""

TRIGGER_NAMESPACE = uuid.UUID("4c1f7a9e-2d6b-5e83-b0a4-747269676732")
"""Namespace of the trigger ids of v2 (content ids). Never change it.

v1's ids (customer, rule, cycle and occurrence) used 9d3e3c8a-4a1b-5c2e-8f61-747269676772."""

RECENT_TRIGGERS = 8
"""Triggers kept in the state, for re-emission on replay and for queries."""


def uuid5_text(namespace: uuid.UUID, name: str) -> str:
    """``str(uuid.uuid5(namespace, name))``, without building a ``UUID`` object.

    The same SHA-1 and the same version and variant bits, so the same text (a
    property test compares the two). The ids of stage changes and triggers use
    :func:`_uuid5_text` with their namespace hashed in once.
    """
    return _uuid5_text(hashlib.sha1(namespace.bytes), name)


def _uuid5_text(namespace_sha1: hashlib._Hash, name: str) -> str:
    """The UUIDv5 text of ``name`` from a SHA-1 that has hashed its namespace already.

    Every stage change and trigger gets one (its id). Copying the seeded SHA-1
    and formatting its hex digest takes 0.86 us for a stage change's 200-character
    content; hashing ``namespace.bytes + name`` and setting the version and
    variant bits in a ``bytearray`` took 1.45 us. The version nibble is always
    ``5``; the variant sets the top two bits of the 17th hex digit to ``10``.
    """
    sha1 = namespace_sha1.copy()
    sha1.update(name.encode())
    h = sha1.hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT_DIGIT[h[16]]}{h[17:20]}-{h[20:32]}"


_VARIANT_DIGIT = {digit: "89ab"[int(digit, 16) & 0b11] for digit in "0123456789abcdef"}
"""A hex digit with its top two bits set to the RFC 4122 variant ``10``."""

_JSON = msgspec.json.Encoder()


def rfc3339(moment: datetime) -> str:
    """UTC, ``Z`` suffix, microseconds only when there are any: the wire's spelling.

    The text of ``moment.astimezone(UTC).isoformat().replace("+00:00", "Z")``
    (a property test compares them), written by msgspec in 0.13 us instead of
    1.1 us; a stage change needs two, and its id the same two again. Moments
    decoded from the inputs are already in UTC and skip ``astimezone``.
    """
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return _JSON.encode(moment)[1:-1].decode()


def _isoformat(rfc3339_text: str) -> str:
    """``moment.astimezone(UTC).isoformat()`` from the moment's :func:`rfc3339` text.

    The content ids of v2 hash this spelling (``+00:00``, not ``Z``) and must not move.
    """
    return rfc3339_text[:-1] + "+00:00"


class Timer(msgspec.Struct, frozen=True, gc=False):
    """An armed absence: fires at ``deadline`` (event time) unless cancelled first."""

    rule: str
    deadline: datetime
    anchor: str
    """The event id that armed (or last re-armed) the timer: the evidence."""


class Fired(msgspec.Struct, frozen=True, gc=False):
    """How often a rule fired in a cycle, and when last: enforces once-per-cycle and cool-downs."""

    rule: str
    cycle: int
    count: int
    last_at: datetime


class TriggerFired(msgspec.Struct, frozen=True, gc=False):
    """A trigger for marketing automation; the unit of output on ``journey.triggers``."""

    rule: str
    """The trigger rule that fired (``trigger`` on the wire)."""
    customer_id: str
    cycle: int
    occurrence: int
    stage: str
    fired_at: datetime
    reason: str
    evidence: tuple[str, ...]
    model_name: str
    model_version: str
    caused_by: str
    """The applied event id or timer tick id whose processing fired it (for re-emission)."""

    @property
    def id(self) -> str:
        """Deterministic from everything the trigger says: see :func:`trigger_id`."""
        return trigger_id(self)


def trigger_id(fired: TriggerFired) -> str:
    """A UUIDv5 of the trigger's whole content (trigger.v2).

    The same trigger, re-emitted after a crash (a replayed event, or a replayed
    tick that finds the timer still armed), has the same id, so marketing
    automation dedupes on it and never acts twice. A different trigger never has
    it, even when a customer's state was lost (a recreated changelog, a wiped
    volume, an embedded broker that restarted) and the rule fires again in a
    history that starts over: ``uuid5(customer, rule, cycle, occurrence)`` (v1)
    would then have named two payloads.

    ``caused_by`` is left out: it is not on the wire, and for an absence it is
    the tick's random id, which a replay does not reproduce. Everything else is
    event time or derived from the input, so a replay gives the same content.
    """
    return trigger_id_from(fired, rfc3339(fired.fired_at))


def trigger_id_from(fired: TriggerFired, fired_at: str) -> str:
    """:func:`trigger_id`, given the :func:`rfc3339` text of ``fired_at`` (the encoder has it)."""
    content = (
        fired.rule,
        fired.customer_id,
        fired.cycle,
        fired.occurrence,
        fired.stage,
        _isoformat(fired_at),
        fired.reason,
        tuple(fired.evidence),
        fired.model_name,
        fired.model_version,
    )
    return _uuid5_text(_TRIGGER_SHA1, repr(content))


_TRIGGER_SHA1 = hashlib.sha1(TRIGGER_NAMESPACE.bytes)


class TriggerState(msgspec.Struct, frozen=True, gc=False):
    """A customer's armed timers, firing counts of the current cycle, and recent triggers."""

    timers: tuple[Timer, ...] = ()
    fired: tuple[Fired, ...] = ()
    recent: tuple[TriggerFired, ...] = ()

    @property
    def next_deadline(self) -> datetime | None:
        return min((t.deadline for t in self.timers), default=None)


DEDUPE_CHUNK = 32
"""Event ids are remembered in chunks of this many; the open chunk lives in the state."""

DEDUPE_KEEP_CHUNKS = 32
"""Sealed chunks kept per customer: 32 x 32 = 1,024, so at least the last 1,000 events."""

RECENT_CHANGES = 8
"""Stage changes kept in the state, for re-emission on replay and for queries."""

STAGE_CHANGE_NAMESPACE = uuid.UUID("8a3e5d2c-6b1f-5e4a-9c7d-737461676532")
"""Namespace of the stage-change ids of v2 (content ids). Never change it.

v1's ids (customer and sequence) used 5f0b7c1e-3f1a-5d7e-9a53-6a6f75726e79."""


class Event(msgspec.Struct, frozen=True, gc=False):
    """One valid input event, decoded from any of the three input topics."""

    event_id: str
    customer_id: str
    source: Source
    topic: str
    type: str
    occurred_at: datetime
    properties: Mapping[str, Any] = msgspec.field(default_factory=dict)
    late: bool = False
    """It arrived after the partition's event-time clock had passed it (see ordering.py);
    the stage changes it causes say so."""
    anonymous_id: str | None = None
    """The visitor's anonymous id, when the event carries one (input.event.v2.json).

    Equal to ``customer_id`` while the visitor is not known yet; different on an
    identify event, which links the anonymous id to the customer (see identity.py)."""


class EventRef(msgspec.Struct, frozen=True, gc=False):
    """An input event by id, topic and type: the evidence a stage change rests on.

    The stage-change contract calls it ``trigger``; in the code a trigger is
    only ever a marketing trigger (:class:`TriggerFired`, fired by a rule)."""

    event_id: str
    topic: str
    type: str


class StageChange(msgspec.Struct, frozen=True, gc=False):
    """A customer moved from one stage to another; the unit of output."""

    customer_id: str
    cycle: int
    sequence: int
    from_stage: Stage | None
    to_stage: Stage
    changed_at: datetime
    previous_stage_entered_at: datetime | None
    evidence: EventRef
    """The input event the move rests on (``trigger`` on the wire)."""
    model_name: str
    model_version: str
    caused_by: str
    """The applied event that produced this change; usually the evidence, but a purchase can
    also produce a post-purchase change whose evidence is an earlier support contact."""
    late: bool = False
    """Caused by an event that arrived after the event-time clock had passed it."""

    @property
    def id(self) -> str:
        """Deterministic from everything the change says: see :func:`stage_change_id`."""
        return stage_change_id(self)


class MergedStageChange(StageChange, frozen=True, kw_only=True):
    """A stage change made by merging an anonymous journey into the customer's (identity.py).

    A subclass rather than an optional field, so that every other change and every
    stored state encodes byte for byte as before. Its id is a v2 content id like any
    other (recomputable from the stage-change.v2 document; the identify event as its
    evidence keeps it apart); the anonymous id travels in the ``ce_journeymergedfrom``
    header."""

    merged_from: str
    """The anonymous id whose journey was merged."""


def stage_change_id(change: StageChange) -> str:
    """A UUIDv5 of the change's whole content (stage-change.v2).

    The same change, re-emitted after a crash, has the same id, so consumers
    dedupe on it. A different change never has it, even when a customer's
    state was lost (a recreated changelog, a wiped volume, an embedded broker
    that restarted) and the processor starts the customer's sequence again:
    ``uuid5(customer, sequence)`` (v1) would then name two payloads.
    """
    previous = change.previous_stage_entered_at
    return stage_change_id_from(
        change, rfc3339(change.changed_at), None if previous is None else rfc3339(previous)
    )


def stage_change_id_from(
    change: StageChange, changed_at: str, previous_stage_entered_at: str | None
) -> str:
    """:func:`stage_change_id`, given the :func:`rfc3339` texts of the change's two moments.

    The stage-change document carries the same texts: computing them once for
    both saves the encoder two of its four time formattings.
    """
    content = (
        change.customer_id,
        change.cycle,
        change.sequence,
        change.from_stage,
        change.to_stage,
        _isoformat(changed_at),
        None if previous_stage_entered_at is None else _isoformat(previous_stage_entered_at),
        change.evidence.event_id,
        change.evidence.topic,
        change.evidence.type,
        change.model_name,
        change.model_version,
        change.late,
    )
    return _uuid5_text(_STAGE_CHANGE_SHA1, repr(content))


_STAGE_CHANGE_SHA1 = hashlib.sha1(STAGE_CHANGE_NAMESPACE.bytes)


class SupportContact(msgspec.Struct, frozen=True, gc=False):
    """The latest support contact seen, kept to place it relative to a later-arriving purchase."""

    event_id: str
    topic: str
    type: str
    occurred_at: datetime
    after_purchase: Stage
    source: Source = "support"
    properties: Mapping[str, Any] = msgspec.field(default_factory=dict)

    def as_event(self, customer_id: str) -> Event:
        """The contact as the event it was, for trigger rules that look at it again later."""
        return Event(
            self.event_id,
            customer_id,
            self.source,
            self.topic,
            self.type,
            self.occurred_at,
            self.properties,
        )


class ChunkSealed(msgspec.Struct, frozen=True, gc=False):
    """The open dedupe chunk is full: the shell stores it under ``index`` and drops older ones."""

    customer_id: str
    index: int
    event_ids: tuple[str, ...]

    @property
    def expired_index(self) -> int:
        """The chunk that falls out of the dedupe window when this one is sealed (may be < 0)."""
        return self.index - DEDUPE_KEEP_CHUNKS


Output = StageChange | TriggerFired | ChunkSealed
Outcome = Literal["applied", "duplicate", "ignored"]


class CustomerState(msgspec.Struct, frozen=True, gc=False):
    """Everything the engine remembers about one customer. Bounded in size."""

    customer_id: str
    cycle: int
    stage: Stage
    stage_entered_at: datetime
    sequence: int
    purchase_at: datetime | None
    last_event_at: datetime
    applied_count: int
    recent_event_ids: tuple[str, ...] = ()
    recent_changes: tuple[StageChange, ...] = ()
    last_support: SupportContact | None = None
    triggers: TriggerState = msgspec.field(default_factory=TriggerState)

    @property
    def sealed_chunks(self) -> range:
        """Indexes of the sealed dedupe chunks that are still inside the window."""
        sealed = self.applied_count // DEDUPE_CHUNK
        return range(max(0, sealed - DEDUPE_KEEP_CHUNKS), sealed)


class Step(NamedTuple):
    """What one event did: the new state, what to send or store, and how it counts."""

    state: CustomerState | None
    outputs: tuple[Output, ...]
    outcome: Outcome
