"""The typed fast decoder agrees with the exact one on every input.

``decode_event`` tries a msgspec decoder first and falls back to
``decode_exact`` (the contract's definition). These properties check that the
two give equal results, events and rejections alike, on valid documents, on
documents one mutation away from valid, on the corners where msgspec and
orjson read JSON differently (big ints, huge floats, escapes, duplicate keys),
and on timestamps.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.contracts.inputs import (
    _parse_timestamp_exact,
    decode_event,
    decode_exact,
    parse_timestamp,
)
from processor.contracts.limits import Limits, decode_record
from processor.engine import Event

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)
digits = st.integers(min_value=0, max_value=99).map(lambda n: f"{n:02d}")
timestamps = st.one_of(
    st.builds(
        lambda y, mo, d, h, mi, s, t, frac, off: f"{y:04d}-{mo}-{d}{t}{h}:{mi}:{s}{frac}{off}",
        st.integers(min_value=0, max_value=9999),
        st.sampled_from(["01", "02", "12", "13", "00"]),
        st.sampled_from(["01", "28", "29", "30", "31", "32"]),
        digits,
        digits,
        digits,
        st.sampled_from(["T", "t", " "]),
        st.sampled_from(
            ["", ".1", ".123", ".123456", ".1234567", ".12345678", ".123456789", ".1234567890", "."]
        ),
        st.sampled_from(["Z", "z", "+00:00", "-05:00", "+23:59", "+24:00", "-00:60", "", "+0100"]),
    ),
    st.text(max_size=30),
)


def documents() -> st.SearchStrategy[dict[str, Any]]:
    base = st.fixed_dictionaries(
        {
            "event_id": st.sampled_from(["e-1", ""]) | st.text(max_size=6) | values,
            "customer_id": st.sampled_from(["c-1", ""]) | values,
            "type": st.sampled_from(["page_view", "order_completed", ""]) | values,
            "occurred_at": timestamps | values,
        },
        optional={
            "properties": st.dictionaries(st.text(max_size=5), scalars, max_size=4)
            | st.dictionaries(st.text(max_size=5), st.lists(scalars, max_size=4), max_size=3)
            | values,
            "anonymous_id": st.sampled_from(["a-1", "c-1", ""]) | st.text(max_size=6) | values,
            "extra": values,
        },
    )
    return base.flatmap(
        lambda doc: st.sets(st.sampled_from(sorted(doc)), max_size=2).map(
            lambda drop: {k: v for k, v in doc.items() if k not in drop}
        )
    )


def _same(raw: bytes) -> None:
    for source, topic in (("clickstream", "t.c"), ("support", "t.s")):
        fast = decode_event(raw, source, topic)  # type: ignore[arg-type]
        exact = decode_exact(raw, source, topic)  # type: ignore[arg-type]
        assert fast == exact, raw
        assert type(fast) is type(exact)


@settings(max_examples=400)
@given(doc=documents())
def test_both_decoders_agree_on_documents(doc: dict[str, Any]) -> None:
    _same(json.dumps(doc).encode())


@settings(max_examples=300)
@given(doc=documents(), cut=st.integers(min_value=0, max_value=400), junk=st.binary(max_size=3))
def test_both_decoders_agree_on_mangled_bytes(doc: dict[str, Any], cut: int, junk: bytes) -> None:
    raw = json.dumps(doc).encode()
    _same(raw[:cut] + junk + raw[cut:])
    _same(raw[:cut])


CORNERS = (
    [
        b'{"event_id":"e","customer_id":"c","type":"t","occurred_at":"2025-03-01T00:00:00Z",'
        b'"properties":{"n":' + n + b"}}"
        for n in (
            b"123456789012345678901234567890",
            b"18446744073709551615",
            b"18446744073709551616",
            b"-9223372036854775808",
            b"-9223372036854775809",
            b"1e400",
            b"-1e400",
            b"1e-400",
            b"1.7976931348623157e308",
            b"0.1000000000000000055511151231257827",
            b"-0",
            b"-0.0",
            b'"\\ud800"',
            b'"\\udc00"',
            b'"\\ud83d\\ude00"',
            b'"\\u0000"',
            b'"a\\nb"',
            b"NaN",
            b"Infinity",
            b"[1]",
            b'["a", 1, 2.5, true, null]',
            b"[1, 18446744073709551615]",
            b"[1, 18446744073709551616]",
            b"[-9223372036854775809]",
            b"9223372036854775807",
            b"9223372036854775808",
            b"[[1]]",
            b'[{"a": 1}]',
            b"{}",
            b"true",
        )
    ]
    + [
        b'{"event_id":"e","event_id":"f","customer_id":"c","type":"t",'
        b'"occurred_at":"2025-03-01T00:00:00Z"}',
        b'{"event_id":"e","customer_id":"c","type":"t","occurred_at":"2025-03-01T00:00:00Z",'
        b'"properties":{"a":1},"properties":{"b":2}}',
        b'{"event_id":"e","customer_id":"c","type":"t","occurred_at":"2025-03-01T00:00:00Z",'
        b'"properties":null}',
        b'\xef\xbb\xbf{"event_id":"e","customer_id":"c","type":"t","occurred_at":"2025-03-01T00:00:00Z"}',
        b'{"event_id":"e","customer_id":"c","type":"t","occurred_at":"2025-03-01T00:00:00Z"} ',
        b'{"event_id":"e","customer_id":"c","type":"t","occurred_at":"2025-03-01T00:00:00Z"}x',
        b'{"event_id":"\xff","customer_id":"c","type":"t","occurred_at":"2025-03-01T00:00:00Z"}',
        b'{"event_id":"e","customer_id":"c","type":"t","occurred_at":"2025-02-30T00:00:00Z"}',
        b'{"event_id":"e","customer_id":"c","type":"t","occurred_at":"0001-01-01T00:00:00+01:00"}',
        b'{"event_id":"e","customer_id":"c","type":"t","occurred_at":"9999-12-31T23:00:00-01:00"}',
    ]
    + [
        b'{"event_id":"e","customer_id":"c","type":"t","occurred_at":"2025-03-01T00:00:00Z",'
        b'"anonymous_id":' + a + b"}"
        for a in (
            b'"a"',
            b'""',
            b"null",
            b"1",
            b"[]",
            b'"\\u0061"',
            b'"\u00e9"',
            b'"\ud800"',
            b'"\xc3\xa9"',
        )
    ]
    + [
        b'{"event_id":"e","customer_id":"c","type":"t","occurred_at":"2025-03-01T00:00:00Z",'
        b'"anonymous_id":"a","anonymous_id":""}',
        b'{"event_id":"e","customer_id":"c","type":"t","occurred_at":"2025-03-01T00:00:00Z",'
        b'"anonymous_id":"","anonymous_id":"a"}',
    ]
)


def test_both_decoders_agree_on_the_corners_where_msgspec_and_orjson_differ() -> None:
    for raw in CORNERS:
        _same(raw)


@settings(max_examples=1000)
@given(text=timestamps)
def test_the_common_timestamp_path_agrees_with_the_exact_parser(text: str) -> None:
    assert parse_timestamp(text) == _parse_timestamp_exact(text)
    fast = parse_timestamp(text)
    exact = _parse_timestamp_exact(text)
    if fast is not None and exact is not None:
        assert fast.utcoffset() == exact.utcoffset()
        assert fast.tzinfo is exact.tzinfo is UTC, "the same tzinfo object: encoded alike"
        assert fast.fold == exact.fold


@st.composite
def common_timestamps(draw: st.DrawFn) -> str:
    """Valid timestamps of the shapes producers send, which ``parse_timestamp`` reads
    without the exact parser: 'Z' or an offset (-00:00 too), 0 to 9 fraction digits."""
    moment = draw(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)))
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    digits = draw(st.integers(0, 9))
    if digits:
        text += "." + draw(st.text("0123456789", min_size=digits, max_size=digits))
    if draw(st.booleans()):
        return text + "Z"
    sign = draw(st.sampled_from("+-"))
    return text + f"{sign}{draw(st.integers(0, 23)):02d}:{draw(st.integers(0, 59)):02d}"


@settings(max_examples=1000)
@given(text=common_timestamps())
def test_the_common_shapes_parse_as_the_exact_parser_parses_them(text: str) -> None:
    fast = parse_timestamp(text)
    exact = _parse_timestamp_exact(text)
    assert fast == exact
    if fast is not None and exact is not None:
        assert fast.tzinfo is exact.tzinfo is UTC, "the same tzinfo object: encoded alike"
        assert (fast.microsecond, fast.fold) == (exact.microsecond, exact.fold)


@settings(max_examples=300)
@given(text=common_timestamps())
def test_the_common_shapes_decode_as_the_exact_decoder_decodes_them(text: str) -> None:
    """``decode_common`` parses the common shapes inline: the same datetime as the exact path."""
    doc = {"event_id": "e", "customer_id": "c", "type": "t", "occurred_at": text}
    _same(json.dumps(doc).encode())
    fast = decode_event(json.dumps(doc).encode(), "clickstream", "t.c")
    if isinstance(fast, Event):
        assert fast.occurred_at.tzinfo is UTC


def _record_by_the_rules(key: bytes | None, value: bytes | None, limits: Limits) -> object:
    """What ``decode_record`` must give, without its fast path: the size limit, the
    exact decoder, then the id lengths."""
    oversize = limits.too_large(key, value)
    if oversize is not None:
        return oversize
    decoded = decode_exact(value, "clickstream", "t.c")
    if isinstance(decoded, Event):
        return limits.check_event(decoded) or decoded
    return decoded


ids = st.sampled_from(["a", "\u00e9"]) | st.text("a\u00e9\U0001f600", min_size=1, max_size=12)
valid_documents = st.fixed_dictionaries(
    {"event_id": ids, "customer_id": ids, "type": ids, "occurred_at": common_timestamps()},
    optional={"anonymous_id": ids, "properties": st.dictionaries(st.text(max_size=3), scalars)},
)
"""Mostly valid events, with ids near the length limits: where the fast path decides."""


@settings(max_examples=1000)
@given(
    doc=valid_documents | documents(),
    key=st.none() | st.binary(max_size=40),
    max_id_length=st.integers(1, 48),
    max_event_bytes=st.integers(0, 1000),
    cut=st.none() | st.integers(0, 300),
)
def test_decode_record_gives_what_the_rules_give(
    doc: dict[str, Any],
    key: bytes | None,
    max_id_length: int,
    max_event_bytes: int,
    cut: int | None,
) -> None:
    """``decode_record`` takes the fast path with the id lengths checked inline; it gives
    what the size limit, the exact decoder and ``Limits.check_event`` give, in that order."""
    limits = Limits(max_event_bytes=max_event_bytes, max_id_length=max_id_length)
    value: bytes | None = json.dumps(doc, ensure_ascii=False).encode()  # unescaped: fast
    if cut is not None:
        value = value[:cut] if cut % 3 else None
    result = decode_record(key, value, "clickstream", "t.c", limits)
    expected = _record_by_the_rules(key, value, limits)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize("field", ["event_id", "customer_id", "type", "anonymous_id"])
@pytest.mark.parametrize("chars", range(1, 8))
def test_decode_record_measures_each_id_in_bytes(field: str, chars: int) -> None:
    """An id of four-byte characters just over the fast path's character bound."""
    limits = Limits(max_id_length=8)  # the fast path takes at most 2 characters
    doc = {"event_id": "e", "customer_id": "c", "type": "t", "occurred_at": "2025-03-01T00:00:00Z"}
    doc[field] = "\U0001f600" * chars
    value = json.dumps(doc, ensure_ascii=False).encode()
    result = decode_record(None, value, "clickstream", "t.c", limits)
    assert result == _record_by_the_rules(None, value, limits)
    assert isinstance(result, Event) == (chars <= 2)
