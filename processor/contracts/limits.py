"""Size limits on what the processor accepts and sends, so no record it makes can be refused.

A producer we do not control can write anything the broker takes: a 300 KB
customer id, a 1 MB value. Carried through as is, such a record makes a
bundle, a dead letter or a changelog value larger than the broker accepts, and
the worker would either crash or (Faust's default) skip a batch. So the router
enforces, before anything is sent:

* an input record (key plus value) of at most ``max_event_bytes``; a larger one
  is dead-lettered as ``too_large``, without its bytes but with its length, its
  sha256 and where it is, so the original can be fetched from the input topic;
* ``event_id``, ``customer_id``, ``anonymous_id`` (when present) and ``type`` of
  at most ``max_id_length`` UTF-8 bytes; longer is ``invalid_field``.

Every record the worker then sends is bounded: a bundle is split so that its
value stays under ``max_message_bytes``, and a state value is bounded because
everything in it is (a fixed number of ids, each bounded).
"""

from __future__ import annotations

from dataclasses import dataclass

from processor.contracts.inputs import Rejection, decode_common, decode_exact
from processor.engine import Event, Source

BUNDLE_OVERHEAD_BYTES = 1_024
"""What a bundle adds around its events' documents, and one event document around its input."""


@dataclass(frozen=True, slots=True)
class Limits:
    max_event_bytes: int = 65_536
    max_id_length: int = 256
    max_message_bytes: int = 1_000_000

    def __post_init__(self) -> None:
        if self.max_event_bytes + 2 * BUNDLE_OVERHEAD_BYTES > self.max_message_bytes:
            raise ValueError(
                f"JOURNEY_MAX_EVENT_BYTES ({self.max_event_bytes}) must leave room under the "
                f"largest record the worker may send ({self.max_message_bytes} bytes)"
            )
        if self.max_id_length < 1:
            raise ValueError("JOURNEY_MAX_ID_LENGTH must be at least 1")

    @property
    def max_bundle_bytes(self) -> int:
        """The most a bundle's events' documents may add up to."""
        return self.max_message_bytes - BUNDLE_OVERHEAD_BYTES

    def too_large(self, key: bytes | None, value: bytes | None) -> Rejection | None:
        """A ``too_large`` rejection if key and value together exceed the limit."""
        size = len(key or b"") + len(value or b"")
        return self.too_large_rejection(size) if size > self.max_event_bytes else None

    def too_large_rejection(self, size: int) -> Rejection:
        """Why a record of ``size`` bytes (key and value) is refused: one text for every input."""
        return Rejection(
            "too_large",
            f"key and value are {size} bytes; at most {self.max_event_bytes} "
            "(JOURNEY_MAX_EVENT_BYTES)",
        )

    def check_event(self, event: Event) -> Rejection | None:
        """An ``invalid_field`` rejection if an id or the type is longer than allowed."""
        short = self.max_id_length // 4  # a code point is at most 4 UTF-8 bytes
        anonymous_id = event.anonymous_id or ""
        lengths = (len(event.event_id), len(event.customer_id), len(anonymous_id), len(event.type))
        if max(lengths) <= short:
            return None
        for name, value in (
            ("event_id", event.event_id),
            ("customer_id", event.customer_id),
            ("anonymous_id", anonymous_id),
            ("type", event.type),
        ):
            length = len(value.encode("utf-8", "surrogatepass"))
            if length > self.max_id_length:
                return Rejection(
                    "invalid_field",
                    f"{name} is {length} bytes long; at most {self.max_id_length} "
                    "(JOURNEY_MAX_ID_LENGTH)",
                )
        return None


def decode_record(
    key: bytes | None, value: bytes | None, source: Source, topic: str, limits: Limits
) -> Event | Rejection:
    """An input record as an event, or why not: the size limits first, then the contract."""
    size = len(key or b"") + len(value or b"")
    if size > limits.max_event_bytes:  # limits.too_large, inline: this runs per record
        return limits.too_large_rejection(size)
    if value is not None:
        # Most ids are far below the limit in characters (a code point is at most 4
        # UTF-8 bytes): then the fast path's event is the one check_event lets through.
        event = decode_common(value, source, topic, limits.max_id_length // 4)
        if event is not None:
            return event
    decoded = decode_exact(value, source, topic)  # what decode_event gives, when not common
    if type(decoded) is Event:
        return limits.check_event(decoded) or decoded
    return decoded
