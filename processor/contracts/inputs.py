"""Decoding input records: exactly what ``schemas/input.*.v2.json`` accept becomes an Event.

v2 adds the optional ``anonymous_id`` to v1 (a non-empty string); a v1 document
without it decodes as before.

Anything else becomes a :class:`Rejection` with a short reason code, which the
shell dead-letters. Decoding never raises on bad bytes.

Two decoders, one contract. :func:`decode_exact` (orjson, then field checks) is
the definition: it says what is accepted and why not. :func:`decode_event` first
tries a typed msgspec decoder that only accepts the common shape of a valid
event (the six known fields, properties that are scalars or lists of scalars,
no ``\\u`` escapes, ints that orjson keeps as ints), and hands everything else
to :func:`decode_exact`.
So a rejection's reason and detail always come from the exact decoder, and a
property test checks that both agree on every input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import msgspec
import orjson

from processor.engine import Event, Source

RejectReason = Literal[
    "not_utf8",
    "not_json",
    "not_an_object",
    "missing_field",
    "invalid_field",
    "invalid_timestamp",
    "too_large",
]
"""Why a record was dead-lettered at decoding. ``processing_error`` is the shell's own."""

REJECT_REASONS: tuple[str, ...] = (
    "not_utf8",
    "not_json",
    "not_an_object",
    "missing_field",
    "invalid_field",
    "invalid_timestamp",
    "too_large",
    "processing_error",
)

RFC3339 = re.compile(
    r"^([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(\.[0-9]{1,9})?([Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$"
)
"""RFC 3339 date-time with a mandatory offset (matched whole, ASCII digits only).

The input schemas carry the same shape, plus calendar checks that
``datetime.fromisoformat`` does here. Use ``fullmatch``: ``$`` alone would
accept a trailing newline."""


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: RejectReason
    detail: str


_DIGITS_AS_9 = bytes.maketrans(b"0123456789", b"9999999999")
_COMMON_SHAPES = frozenset(
    f"9999-99-99T99:99:99{fraction}{zone}".encode()
    for fraction in ("", *(f".{'9' * digits}" for digits in range(1, 10)))
    for zone in ("Z", "+99:99", "-99:99")
)
"""The shapes producers send, every digit written as 9: upper-case ``T`` and ``Z``, a
fraction of 1 to 9 digits, and an offset (its range is checked by :data:`_OFFSETS`).
``datetime.fromisoformat`` reads them once a fraction is cut to microseconds; anything
else takes the exact path. An ASCII text translated to its shape and looked up is
cheaper than a regular expression (about 1,700 instructions against 3,700)."""

_OFFSETS = {
    f"{sign}{hours:02d}:{minutes:02d}": (1 if sign == "+" else -1)
    * timedelta(hours=hours, minutes=minutes)
    for sign in "+-"
    for hours in range(24)
    for minutes in range(60)
}
"""Every offset RFC 3339 admits, as what to subtract to reach UTC."""

_fromisoformat = datetime.fromisoformat


def parse_timestamp(text: str) -> datetime | None:
    """An RFC 3339 timestamp with offset, as an aware UTC datetime; None if it is not one.

    Fractions beyond microseconds are truncated: Python's datetime holds no more.
    """
    if (
        text.isascii()  # (the shapes are; and encode() cannot fail then)
        and text.encode().translate(_DIGITS_AS_9) in _COMMON_SHAPES
        and "0002" <= text < "9999"  # years 2 to 9998 (4 digits: compared as text)
    ):
        # A common shape, cheaper than the exact path but the same datetime: the date
        # and time are text[:19], then maybe a fraction, then 'Z' or a six-character
        # offset; text[:26] keeps a fraction to microseconds (the exact path's [:7]).
        try:
            if text[-1] == "Z":
                return _fromisoformat(text if len(text) <= 27 else text[:26] + "Z")
            offset = _OFFSETS.get(text[-6:])
            if offset is not None:  # else hours past 23 or minutes past 59: exact path
                # As UTC, then the offset subtracted: what astimezone(UTC) gives, in C and
                # without building a timezone per record. Years 2 to 9998 cannot overflow.
                return _fromisoformat(text[:-6][:26] + "Z") - offset
        except ValueError:  # Feb 30
            return None
    return _parse_timestamp_exact(text)


def _parse_timestamp_exact(text: str) -> datetime | None:
    match = RFC3339.fullmatch(text)
    if match is None or not 2 <= int(match.group(1)) <= 9998:
        return None  # years 1 and 9999 could leave datetime's range once moved to UTC
    fraction = (match.group(7) or "")[:7]
    offset = match.group(8)
    offset = "+00:00" if offset in ("Z", "z") else offset
    iso = f"{text[:10]}T{text[11:19]}{fraction}{offset}"
    try:
        return datetime.fromisoformat(iso).astimezone(UTC)
    except (ValueError, OverflowError):  # Feb 30; or year 1 / 9999 shifted out of range
        return None


Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
"""orjson reads integers up to 2**64 - 1 as ints and larger ones as floats; msgspec reads
them all as ints. The fast path takes int64 only (msgspec checks it while decoding), and a
larger int goes to the exact decoder."""

Scalar = str | Int64 | float | bool | None
Property = Scalar | list[Scalar]
"""A property value the fast path takes: producers send lists of product ids, for one."""


class _Common(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """The common shape of a valid input document, for the typed fast path."""

    event_id: str
    customer_id: str
    type: str
    occurred_at: str
    properties: dict[str, Property] = msgspec.field(default_factory=dict)
    anonymous_id: str | msgspec.UnsetType = msgspec.UNSET
    """UNSET when absent; an explicit null is not a string, so it fails here and goes exact."""


_decode_common = msgspec.json.Decoder(_Common).decode


def decode_event(raw: bytes | None, source: Source, topic: str) -> Event | Rejection:
    """Decode one input record value from ``topic`` (a ``source`` topic).

    The typed fast path returns only events the exact decoder returns too;
    whatever it does not take, or would judge differently, goes to :func:`decode_exact`.
    """
    if raw is not None:
        event = decode_common(raw, source, topic, _ANY_LENGTH)
        if event is not None:
            return event
    return decode_exact(raw, source, topic)


_BACKSLASH = ord("\\")
_UNSET = msgspec.UNSET

_ANY_LENGTH = 2**63
"""No limit on the length of ids: :func:`decode_event` leaves the limits to its caller."""


def decode_common(raw: bytes, source: Source, topic: str, max_chars: int) -> Event | None:
    """The typed fast path alone: the event if ``raw`` has the common shape of a valid
    event whose ids and type are at most ``max_chars`` characters long; else None, and
    the caller takes :func:`decode_exact`, which returns an equal event wherever this does.

    One function for everything the common record needs, for
    :func:`processor.contracts.limits.decode_record` (once per input record):
    decode_record's id checks are done here, on the fields, before an Event exists.
    """
    # A backslash first, as an int: ``b"\\" in raw`` first tries the needle as an int, and
    # that failed try costs more than the search (0.17 us against 0.03 us a record).
    if _BACKSLASH in raw and b"\\u" in raw:
        return None
    try:
        doc = _decode_common(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    event_id = doc.event_id
    customer_id = doc.customer_id
    event_type = doc.type
    anonymous_id: str | None = None
    if doc.anonymous_id is not _UNSET:
        anonymous_id = doc.anonymous_id
        if not anonymous_id or len(anonymous_id) > max_chars:
            return None
    if (
        not event_id
        or not customer_id
        or len(event_id) > max_chars
        or len(customer_id) > max_chars
        or len(event_type) > max_chars
    ):
        return None
    occurred_at = parse_timestamp(doc.occurred_at)
    if occurred_at is None:
        return None
    return Event(
        event_id,
        customer_id,
        source,
        topic,
        event_type,
        occurred_at,
        doc.properties,
        False,
        anonymous_id,
    )


def decode_exact(raw: bytes | None, source: Source, topic: str) -> Event | Rejection:
    """The contract's decoder: orjson, then each field checked, with the reason of a rejection."""
    if raw is None:
        return Rejection("not_json", "the record has no value (a tombstone)")
    try:
        doc: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        message = str(exc)
        if "UTF-8" in message or "utf-8" in message:
            return Rejection("not_utf8", message)
        return Rejection("not_json", message)
    if not isinstance(doc, dict):
        return Rejection("not_an_object", f"the value is a JSON {type(doc).__name__}")
    return decode_document(doc, source, topic)


def decode_document(doc: dict[str, Any], source: Source, topic: str) -> Event | Rejection:
    for name in ("event_id", "customer_id", "type", "occurred_at"):
        if name not in doc:
            return Rejection("missing_field", f"{name} is missing")
    event_id = doc["event_id"]
    customer_id = doc["customer_id"]
    event_type = doc["type"]
    occurred = doc["occurred_at"]
    for name, value in (("event_id", event_id), ("customer_id", customer_id)):
        if not isinstance(value, str) or not value:
            return Rejection("invalid_field", f"{name} must be a non-empty string")
    anonymous_id = doc.get("anonymous_id")
    if "anonymous_id" in doc and (not isinstance(anonymous_id, str) or not anonymous_id):
        return Rejection("invalid_field", "anonymous_id must be a non-empty string")
    if not isinstance(event_type, str):
        return Rejection("invalid_field", "type must be a string")
    if not isinstance(occurred, str):
        return Rejection("invalid_timestamp", "occurred_at must be an RFC 3339 string")
    occurred_at = parse_timestamp(occurred)
    if occurred_at is None:
        return Rejection(
            "invalid_timestamp", f"occurred_at {occurred[:64]!r} is not RFC 3339 with an offset"
        )
    properties = doc.get("properties", {})
    if not isinstance(properties, dict):
        return Rejection("invalid_field", "properties must be an object")
    return Event(
        event_id=event_id,
        customer_id=customer_id,
        source=source,
        topic=topic,
        type=event_type,
        occurred_at=occurred_at,
        properties=properties,
        anonymous_id=anonymous_id,
    )
