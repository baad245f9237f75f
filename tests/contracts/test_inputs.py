"""The input contract: ``decode_event`` turns exactly what ``schemas/input.*.v2.json`` accept
into an Event, and everything else into a Rejection with the right reason code.

v2 is v1 plus the optional ``anonymous_id``; every v1 document without one is a v2
document and decodes as it did.

The schemas are validated with format checking on. jsonschema checks ``date-time`` only
when ``rfc3339-validator`` is installed; without it the schemas' ``pattern`` and ``allOf``
carry the whole timestamp rule, which is what these tests pin down.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from processor.contracts.inputs import (
    REJECT_REASONS,
    RFC3339,
    Rejection,
    decode_event,
    parse_timestamp,
)
from processor.contracts.limits import Limits, decode_record
from processor.engine import SOURCES, Event, FixedEvidence, Source, load_model

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
TOPICS: dict[Source, str] = {s: f"journey.{s}" for s in SOURCES}


def _load(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / name).read_text(encoding="utf-8"))


def _registry() -> Registry:
    resources = []
    for path in sorted(SCHEMAS.glob("*.json")):
        contents = json.loads(path.read_text(encoding="utf-8"))
        resources.append((contents["$id"], Resource.from_contents(contents)))
    return Registry().with_resources(resources)


REGISTRY = _registry()
INPUT_SCHEMAS: dict[Source, dict[str, Any]] = {s: _load(f"input.{s}.v2.json") for s in SOURCES}
COMMON = _load("input.event.v2.json")
V1_SCHEMAS: dict[Source, dict[str, Any]] = {s: _load(f"input.{s}.v1.json") for s in SOURCES}
VALIDATORS = {
    source: Draft202012Validator(
        schema, registry=REGISTRY, format_checker=Draft202012Validator.FORMAT_CHECKER
    )
    for source, schema in INPUT_SCHEMAS.items()
}


def schema_accepts(doc: Any, source: Source = "clickstream") -> bool:
    return VALIDATORS[source].is_valid(doc)


def decode(doc: Any, source: Source = "clickstream") -> Event | Rejection:
    return decode_event(orjson.dumps(doc), source, TOPICS[source])


def event_doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "event_id": "cs-1",
        "customer_id": "cust-1",
        "type": "page_view",
        "occurred_at": "2026-03-02T08:14:05Z",
        "properties": {"url": "/"},
    }
    doc.update(changes)
    return doc


def without(name: str) -> dict[str, Any]:
    doc = event_doc()
    del doc[name]
    return doc


# --------------------------------------------------------------------------- the schemas


def test_the_per_source_schemas_share_the_common_event_schema() -> None:
    for source, schema in INPUT_SCHEMAS.items():
        assert schema["$ref"] == "input.event.v2.json", source
    assert COMMON["required"] == ["event_id", "customer_id", "type", "occurred_at"]


def test_v2_only_adds_the_optional_anonymous_id() -> None:
    v1 = _load("input.event.v1.json")
    assert set(COMMON["properties"]) - set(v1["properties"]) == {"anonymous_id"}
    assert COMMON["properties"]["anonymous_id"] == COMMON["properties"]["anonymous_id"] | {
        "type": "string",
        "minLength": 1,
    }
    assert COMMON["properties"]["occurred_at"] == v1["properties"]["occurred_at"]
    assert COMMON["required"] == v1["required"]


@pytest.mark.parametrize("source", SOURCES)
def test_v1_examples_are_v2_events_without_an_anonymous_id(source: Source) -> None:
    for example in [*V1_SCHEMAS[source]["examples"], *_load("input.event.v1.json")["examples"]]:
        assert schema_accepts(example, source)
        event = decode(example, source)
        assert isinstance(event, Event)
        assert event.anonymous_id is None


def test_occurred_at_carries_the_decoders_own_pattern() -> None:
    occurred = COMMON["properties"]["occurred_at"]
    assert occurred["pattern"] == RFC3339.pattern
    assert occurred["format"] == "date-time"


@pytest.mark.parametrize("source", SOURCES)
def test_known_types_of_the_default_definition_are_documented(source: Source) -> None:
    model = load_model()
    schema = INPUT_SCHEMAS[source]
    known = sorted(model.known_types(source))
    assert schema["properties"]["type"]["examples"] == known
    for event_type in known:
        assert event_type in schema["description"]
        evidence = model.evidence_for(source, event_type)
        if isinstance(evidence, FixedEvidence):
            assert f"{event_type} ({evidence.stage})" in schema["description"]


@pytest.mark.parametrize("source", SOURCES)
def test_examples_decode_to_events(source: Source) -> None:
    examples = INPUT_SCHEMAS[source]["examples"]
    assert len(examples) >= 3
    for example in examples:
        assert schema_accepts(example, source)
        event = decode(example, source)
        assert isinstance(event, Event), event
        assert event.source == source
        assert event.topic == TOPICS[source]
        assert event.event_id == example["event_id"]
        assert event.customer_id == example["customer_id"]
        assert event.type == example["type"]
        assert event.occurred_at == parse_timestamp(example["occurred_at"])
        assert event.properties == example.get("properties", {})
        assert event.anonymous_id == example.get("anonymous_id")


def test_common_examples_decode_to_events() -> None:
    for example in COMMON["examples"]:
        assert Draft202012Validator(COMMON, registry=REGISTRY).is_valid(example)
        assert isinstance(decode(example), Event)


def test_unknown_types_are_valid_events() -> None:
    doc = event_doc(type="newsletter_click")
    assert schema_accepts(doc)
    event = decode(doc)
    assert isinstance(event, Event)
    assert load_model().evidence_for("clickstream", event.type) is None


# --------------------------------------------------------------------------- rejections


def assert_rejected(result: Event | Rejection, reason: str) -> Rejection:
    assert isinstance(result, Rejection), result
    assert result.reason == reason, result
    assert result.reason in REJECT_REASONS
    assert result.detail
    return result


@pytest.mark.parametrize(
    "raw",
    [b"\xff", b"\xc3\x28", b'{"event_id": "\xe9t\xe9"}', b"\xed\xa0\x80", b"\x80abc"],
)
def test_not_utf8(raw: bytes) -> None:
    assert_rejected(decode_event(raw, "clickstream", "journey.clickstream"), "not_utf8")


@pytest.mark.parametrize(
    "raw",
    [b"", b"   ", b"{", b"event_id=1", b"{'event_id': 'x'}", b'{"a": 1,}', b"NaN", b"\x00"],
)
def test_not_json(raw: bytes) -> None:
    assert_rejected(decode_event(raw, "research", "journey.research"), "not_json")


def test_a_tombstone_is_not_json() -> None:
    rejection = assert_rejected(decode_event(None, "support", "journey.support"), "not_json")
    assert "tombstone" in rejection.detail


@pytest.mark.parametrize("doc", [[], [event_doc()], 42, 1.5, "an event", None, True])
def test_not_an_object(doc: Any) -> None:
    assert_rejected(decode(doc), "not_an_object")
    assert not schema_accepts(doc)


@pytest.mark.parametrize("name", ["event_id", "customer_id", "type", "occurred_at"])
def test_missing_field(name: str) -> None:
    rejection = assert_rejected(decode(without(name)), "missing_field")
    assert name in rejection.detail
    assert not schema_accepts(without(name))


def test_properties_is_optional() -> None:
    doc = without("properties")
    assert schema_accepts(doc)
    event = decode(doc)
    assert isinstance(event, Event)
    assert event.properties == {}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("event_id", ""),
        ("customer_id", ""),
        ("event_id", 17),
        ("customer_id", None),
        ("customer_id", ["cust-1"]),
        ("anonymous_id", ""),
        ("anonymous_id", None),
        ("anonymous_id", 42),
        ("anonymous_id", ["anon-1"]),
        ("type", 3),
        ("type", None),
        ("type", {"name": "page_view"}),
        ("properties", []),
        ("properties", "url=/"),
        ("properties", None),
        ("properties", 0),
    ],
)
def test_invalid_field(name: str, value: Any) -> None:
    doc = event_doc(**{name: value})
    rejection = assert_rejected(decode(doc), "invalid_field")
    assert name in rejection.detail
    assert not schema_accepts(doc)


@pytest.mark.parametrize("anonymous_id", ["anon-1", "cust-1", "\u00e9"])
def test_anonymous_id_is_optional_and_kept(anonymous_id: str) -> None:
    doc = event_doc(anonymous_id=anonymous_id)
    assert schema_accepts(doc)
    result = decode(doc)
    assert isinstance(result, Event)
    assert result.anonymous_id == anonymous_id
    plain = decode(event_doc())
    assert isinstance(plain, Event)
    assert plain.anonymous_id is None


def test_anonymous_id_is_checked_after_the_other_ids_and_before_the_type() -> None:
    doc = event_doc(customer_id="", anonymous_id="")
    assert "customer_id" in assert_rejected(decode(doc), "invalid_field").detail
    doc = event_doc(anonymous_id="", type=3)
    assert "anonymous_id" in assert_rejected(decode(doc), "invalid_field").detail


def test_an_empty_type_is_a_valid_if_useless_event() -> None:
    doc = event_doc(type="")
    assert schema_accepts(doc)
    assert isinstance(decode(doc), Event)


@pytest.mark.parametrize(
    "value",
    [
        None,
        1772439245,
        1772439245.5,
        "",
        "yesterday",
        "2026-02-30T10:00:00Z",
        "2026-01-01T10:00:00",
        "2026-01-01 10:00:00Z",
        "2026-01-01",
        "2026-01-01T10:00Z",
        "2026-01-01T25:00:00Z",
        "2026-01-01T10:00:00+0530",
        "2026-01-01T10:00:00 +05:30",
        "Mon, 02 Mar 2026 08:14:05 GMT",
    ],
)
def test_invalid_timestamp(value: Any) -> None:
    doc = event_doc(occurred_at=value)
    assert_rejected(decode(doc), "invalid_timestamp")
    assert not schema_accepts(doc)


def test_checks_run_in_a_fixed_order() -> None:
    """Missing fields are reported before invalid ones, ids before the timestamp."""
    doc = {"event_id": "", "type": 1, "occurred_at": "never"}
    assert_rejected(decode(doc), "missing_field")
    doc = {"event_id": "", "customer_id": "c", "type": 1, "occurred_at": "never"}
    assert "event_id" in assert_rejected(decode(doc), "invalid_field").detail


@pytest.mark.parametrize(
    ("raw", "reasons"),
    [
        (b"[" * 1100 + b"]" * 1100, {"not_json"}),
        (b'{"event_id":"e","customer_id":"c","type":"t","occurred_at":1e400}', {"not_json"}),
        (
            b'{"event_id":"\\ud800","customer_id":"c","type":"t",'
            b'"occurred_at":"2026-01-01T00:00:00Z"}',
            {"not_json"},
        ),
        # Valid UTF-8 with a byte-order mark: currently reported as not_utf8.
        (b"\xef\xbb\xbf" + orjson.dumps(event_doc()), {"not_json", "not_utf8"}),
    ],
)
def test_documented_json_parser_limits(raw: bytes, reasons: set[str]) -> None:
    result = decode_event(raw, "clickstream", "journey.clickstream")
    assert isinstance(result, Rejection)
    assert result.reason in reasons


@pytest.mark.parametrize(("depth", "ok"), [(1024, True), (1025, False)])
def test_documents_nest_at_most_1024_levels(depth: int, ok: bool) -> None:
    inner = depth - 2  # the document and its properties object are two levels
    head = orjson.dumps(event_doc(properties=None))[:-1]
    raw = head.replace(
        b'"properties":null', b'"properties":' + b'{"x":' * inner + b"{}" + b"}" * inner
    )
    result = decode_event(raw + b"}", "clickstream", "journey.clickstream")
    if ok:
        assert isinstance(result, Event)
    else:
        assert_rejected(result, "not_json")


@given(raw=st.binary(max_size=200), source=st.sampled_from(SOURCES))
def test_decoding_arbitrary_bytes_never_raises(raw: bytes, source: Source) -> None:
    result = decode_event(raw, source, TOPICS[source])
    assert isinstance(result, Event | Rejection)
    if isinstance(result, Rejection):
        assert result.reason in REJECT_REASONS


# --------------------------------------------------------------------------- timestamps


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-02T08:14:05Z", datetime(2026, 3, 2, 8, 14, 5, tzinfo=UTC)),
        ("2026-03-02t08:14:05z", datetime(2026, 3, 2, 8, 14, 5, tzinfo=UTC)),
        ("2026-03-02T08:14:05.1Z", datetime(2026, 3, 2, 8, 14, 5, 100000, tzinfo=UTC)),
        ("2026-03-02T08:14:05.12Z", datetime(2026, 3, 2, 8, 14, 5, 120000, tzinfo=UTC)),
        ("2026-03-02T08:14:05.123Z", datetime(2026, 3, 2, 8, 14, 5, 123000, tzinfo=UTC)),
        ("2026-03-02T08:14:05.1234Z", datetime(2026, 3, 2, 8, 14, 5, 123400, tzinfo=UTC)),
        ("2026-03-02T08:14:05.12345Z", datetime(2026, 3, 2, 8, 14, 5, 123450, tzinfo=UTC)),
        ("2026-03-02T08:14:05.123456Z", datetime(2026, 3, 2, 8, 14, 5, 123456, tzinfo=UTC)),
        ("2026-03-02T08:14:05.1234567Z", datetime(2026, 3, 2, 8, 14, 5, 123456, tzinfo=UTC)),
        ("2026-03-02T08:14:05.12345678Z", datetime(2026, 3, 2, 8, 14, 5, 123456, tzinfo=UTC)),
        ("2026-03-02T08:14:05.123456789Z", datetime(2026, 3, 2, 8, 14, 5, 123456, tzinfo=UTC)),
        ("2026-03-02T08:14:05+05:30", datetime(2026, 3, 2, 2, 44, 5, tzinfo=UTC)),
        ("2026-03-02T08:14:05-00:00", datetime(2026, 3, 2, 8, 14, 5, tzinfo=UTC)),
        ("2026-01-01T00:30:00+23:59", datetime(2025, 12, 31, 0, 31, tzinfo=UTC)),
        ("2024-02-29T12:00:00Z", datetime(2024, 2, 29, 12, tzinfo=UTC)),
        ("2000-02-29T12:00:00Z", datetime(2000, 2, 29, 12, tzinfo=UTC)),
        ("0002-01-01T00:00:00+01:00", datetime(1, 12, 31, 23, tzinfo=UTC)),
        ("9998-12-31T23:59:59.999999-01:00", datetime(9999, 1, 1, 0, 59, 59, 999999, tzinfo=UTC)),
        ("0001-01-01T00:00:00Z", None),
        ("9999-12-31T23:59:59.999999Z", None),
        ("2026-02-30T10:00:00Z", None),
        ("2026-04-31T10:00:00Z", None),
        ("2023-02-29T10:00:00Z", None),
        ("1900-02-29T10:00:00Z", None),
        ("2026-00-10T10:00:00Z", None),
        ("2026-13-10T10:00:00Z", None),
        ("2026-01-00T10:00:00Z", None),
        ("0000-01-01T10:00:00Z", None),
        ("2026-01-01T24:00:00Z", None),
        ("2026-01-01T10:60:00Z", None),
        ("2026-12-31T23:59:60Z", None),
        ("2026-01-01T10:00:00", None),
        ("2026-01-01 10:00:00Z", None),
        ("2026-01-01T10:00:00.Z", None),
        ("2026-01-01T10:00:00.1234567890Z", None),
        ("2026-01-01T10:00:00+24:00", None),
        ("2026-01-01T10:00:00+5:30", None),
        ("2026-01-01T10:00:00UTC", None),
        (" 2026-01-01T10:00:00Z", None),
        ("2026-01-01T10:00:00Z ", None),
        ("\u0662\u0660\u0662\u0666-01-01T10:00:00Z", None),
        ("2026-01-01T10:00:00.\u0661Z", None),
        ("2026-01-01T10:00:00+05:\u0663\u0660", None),
        ("\uff12026-01-01T10:00:00Z", None),
    ],
)
def test_timestamps_decoder_and_schema_agree(text: str, expected: datetime | None) -> None:
    assert parse_timestamp(text) == expected
    result = decode(event_doc(occurred_at=text))
    if expected is None:
        assert_rejected(result, "invalid_timestamp")
    else:
        assert isinstance(result, Event)
        assert result.occurred_at == expected
        assert result.occurred_at.tzinfo is UTC
    assert schema_accepts(event_doc(occurred_at=text)) == (expected is not None)


NOT_RFC3339 = [
    pytest.param("2026-01-01T10:00:00Z\n", id="trailing-newline"),
    pytest.param("2026-01-01T10:00:00+05:60", id="offset-minutes-60"),
    pytest.param("2026-01-01T10:00:00+22:99", id="offset-minutes-99"),
    pytest.param("2026-01-01T10:00:00.123456\u0667\u0668\u0669Z", id="non-ascii-fraction-digits"),
]
"""Timestamps that look nearly right but are not RFC 3339: both sides must reject them."""


@pytest.mark.parametrize("text", NOT_RFC3339)
def test_the_schema_rejects_non_rfc3339_timestamps(text: str) -> None:
    assert not schema_accepts(event_doc(occurred_at=text))


@pytest.mark.parametrize("text", NOT_RFC3339)
def test_the_decoder_rejects_non_rfc3339_timestamps(text: str) -> None:
    assert_rejected(decode(event_doc(occurred_at=text)), "invalid_timestamp")


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_decoding_never_raises_on_an_out_of_range_instant(text: str) -> None:
    assert not schema_accepts(event_doc(occurred_at=text))  # years 1 and 9999: documented limit
    assert_rejected(decode(event_doc(occurred_at=text)), "invalid_timestamp")


def test_date_time_format_checking_if_available() -> None:
    pytest.importorskip("rfc3339_validator")
    checker = Draft202012Validator.FORMAT_CHECKER
    assert "date-time" in checker.checkers
    only_format = Draft202012Validator({"format": "date-time"}, format_checker=checker)
    assert not only_format.is_valid("2026-02-30T10:00:00Z")


# --------------------------------------------------------------------------- equivalence

_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
_YEARS = st.one_of(
    st.just("2026"),
    st.sampled_from(["0001", "1900", "2000", "2023", "2024", "2100", "2400", "9999"]),
    st.integers(1, 9999).map("{:04d}".format),
)
_GOOD_OFFSETS = st.one_of(
    st.sampled_from(["Z", "z", "+00:00", "-00:00", "+05:30", "-08:00", "+23:59", "-23:59"]),
    st.tuples(st.sampled_from("+-"), st.integers(0, 23), st.integers(0, 59)).map(
        lambda t: f"{t[0]}{t[1]:02d}:{t[2]:02d}"
    ),
)
_ODD_PARTS: dict[str, st.SearchStrategy[str]] = {
    "year": st.sampled_from(["0000", "226", "20260", "\uff12026"]),
    "month": st.sampled_from(["00", "13", "1", "99"]),
    "day": st.sampled_from(["00", "32", "1", "99"]),
    "hour": st.sampled_from(["24", "25", "1", "99"]),
    "minute": st.sampled_from(["60", "61", "1", "99"]),
    "second": st.sampled_from(["60", "61", "1", "99"]),
    "fraction": st.one_of(
        st.just("."), st.text("0123456789", min_size=10, max_size=14).map(".".__add__)
    ),
    "offset": st.one_of(
        st.sampled_from(["", "+24:00", "-24:00", "+0530", "+05", "UTC", " Z", "+5:30", "Zz"]),
        st.tuples(st.sampled_from("+-"), st.integers(0, 99), st.integers(0, 99)).map(
            lambda t: f"{t[0]}{t[1]:02d}:{t[2]:02d}"
        ),
    ),
    "sep": st.sampled_from([" ", "_", "", "TT", "\u0422"]),
    "date_sep": st.sampled_from(["/", "", "."]),
}


@st.composite
def timestamps(draw: st.DrawFn) -> str:
    """Half well-formed RFC 3339 timestamps; the rest with one out-of-range or odd part."""
    if draw(st.integers(0, 14)) == 0:
        return draw(
            st.one_of(
                _TEXT,
                st.from_regex(RFC3339, fullmatch=True),
                st.from_regex(RFC3339.pattern.replace(r"\d", "[0-9]"), fullmatch=True),
                st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
            )
        )
    digits = draw(st.text("0123456789", min_size=0, max_size=9))
    parts = {
        "year": draw(_YEARS),
        "month": f"{draw(st.integers(1, 12)):02d}",
        "day": f"{draw(st.integers(1, 31)):02d}",  # 29-31 are sometimes not a date
        "hour": f"{draw(st.integers(0, 23)):02d}",
        "minute": f"{draw(st.integers(0, 59)):02d}",
        "second": f"{draw(st.integers(0, 59)):02d}",
        "fraction": f".{digits}" if digits else "",
        "offset": draw(_GOOD_OFFSETS),
        "sep": draw(st.sampled_from(["T", "t"])),
        "date_sep": "-",
    }
    odd = draw(st.sampled_from([None] * 16 + [*_ODD_PARTS, "suffix", "prefix", "cut", "digit"]))
    if odd in _ODD_PARTS:
        parts[odd] = draw(_ODD_PARTS[odd])
    p = parts
    text = (
        f"{p['year']}{p['date_sep']}{p['month']}{p['date_sep']}{p['day']}{p['sep']}"
        f"{p['hour']}:{p['minute']}:{p['second']}{p['fraction']}{p['offset']}"
    )
    if odd == "suffix":
        text += draw(st.sampled_from(["\n", " ", "\t", "\r\n", "x", "Z", "\u0000"]))
    elif odd == "prefix":
        text = draw(st.sampled_from([" ", "\n", "+", "-", "0"])) + text
    elif odd == "cut":
        text = text[: draw(st.integers(0, len(text) - 1))]
    elif odd == "digit":
        where = draw(st.integers(0, len(text) - 1))
        digit = draw(st.sampled_from(["\u0660", "\u0967", "\uff11", "\u0663", "\U0001d7d8"]))
        text = text[:where] + digit + text[where + 1 :]
    return text


_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_TEXT, children, max_size=3),
    max_leaves=6,
)
_IDS = st.one_of(
    st.from_regex(r"[a-z]{1,4}-[0-9a-f]{1,8}", fullmatch=True),
    st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=8),
)
_FIELDS = ["event_id", "customer_id", "type", "occurred_at", "properties", "anonymous_id"]


@st.composite
def documents(draw: st.DrawFn) -> Any:
    """Mostly well-formed event documents with a few random mutations."""
    if draw(st.integers(0, 24)) == 0:
        return draw(_JSON_VALUES)
    known = sorted({t for s in SOURCES for t in load_model().known_types(s)})
    doc: dict[str, Any] = {
        "event_id": draw(_IDS),
        "customer_id": draw(_IDS),
        "type": draw(st.one_of(st.sampled_from(known), _TEXT)),
        "occurred_at": draw(timestamps()),
    }
    if draw(st.booleans()):
        doc["properties"] = draw(st.dictionaries(_TEXT, _JSON_VALUES, max_size=3))
    if draw(st.integers(0, 2)) == 0:
        doc["anonymous_id"] = draw(st.one_of(st.just(doc["customer_id"]), _IDS))
    if draw(st.integers(0, 3)) == 0:
        doc.update(draw(st.dictionaries(_TEXT, _JSON_VALUES, max_size=2)))
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2]))):
        name = draw(st.sampled_from(_FIELDS))
        mutation = draw(st.sampled_from(["delete", "replace", "empty"]))
        if mutation == "delete":
            doc.pop(name, None)
        elif mutation == "replace":
            doc[name] = draw(_JSON_VALUES)
        else:
            doc[name] = ""
    return doc


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=documents(), source=st.sampled_from(SOURCES))
def test_the_decoder_accepts_exactly_what_the_schema_accepts(doc: Any, source: Source) -> None:
    result = decode(doc, source)
    valid = schema_accepts(doc, source)
    event("decoded" if isinstance(result, Event) else f"rejected: {result.reason}")
    if valid:
        assert isinstance(result, Event), (result, doc)
        assert result.event_id == doc["event_id"]
        assert result.customer_id == doc["customer_id"]
        assert result.type == doc["type"]
        assert result.properties == doc.get("properties", {})
        assert result.occurred_at == parse_timestamp(doc["occurred_at"])
        assert result.anonymous_id == doc.get("anonymous_id")
    else:
        errors = [e.message for e in VALIDATORS[source].iter_errors(doc)]
        assert isinstance(result, Rejection), (errors, doc)
        assert result.reason in REJECT_REASONS


@given(
    # Years 0001 and 9999 are refused on purpose (an offset could move them out of range).
    moment=st.datetimes(
        min_value=datetime(2, 1, 2), max_value=datetime(9998, 12, 30), timezones=st.just(UTC)
    ),
    minutes=st.integers(-23 * 60 - 59, 23 * 60 + 59),
    digits=st.integers(0, 9),
    lower=st.booleans(),
)
def test_every_rfc3339_spelling_of_an_instant_decodes_to_it(
    moment: datetime, minutes: int, digits: int, lower: bool
) -> None:
    local = moment.astimezone(timezone(timedelta(minutes=minutes)))
    text = (
        f"{local.year:04d}-{local.month:02d}-{local.day:02d}"
        f"T{local.hour:02d}:{local.minute:02d}:{local.second:02d}"
    )
    fraction = f"{local.microsecond:06d}000"[:digits]
    text += f".{fraction}" if digits else ""
    if minutes == 0:
        text += "Z"
    else:
        sign = "+" if minutes > 0 else "-"
        text += f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    if lower:
        text = text.lower()
    doc = event_doc(occurred_at=text)
    assert schema_accepts(doc)
    event = decode(doc)
    assert isinstance(event, Event)
    truncated = moment.replace(microsecond=int(f"{moment.microsecond:06d}"[:digits].ljust(6, "0")))
    assert event.occurred_at == truncated


# --------------------------------------------------------------------------- id lengths


@pytest.mark.parametrize(
    ("anonymous_id", "rejected"),
    [("a" * 16, False), ("a" * 17, True), ("\u00e9" * 8, False), ("\u00e9" * 8 + "a", True)],
)
def test_the_id_length_limit_holds_for_anonymous_ids(anonymous_id: str, rejected: bool) -> None:
    limits = Limits(max_id_length=16)
    raw = orjson.dumps(event_doc(anonymous_id=anonymous_id))
    result = decode_record(None, raw, "clickstream", "journey.clickstream", limits)
    if rejected:
        rejection = assert_rejected(result, "invalid_field")
        assert rejection.detail.startswith("anonymous_id is ")
        assert "JOURNEY_MAX_ID_LENGTH" in rejection.detail
    else:
        assert isinstance(result, Event)
        assert result.anonymous_id == anonymous_id


def test_an_event_without_anonymous_id_is_measured_as_before() -> None:
    limits = Limits(max_id_length=16)
    raw = orjson.dumps(event_doc(customer_id="c" * 17))
    result = decode_record(None, raw, "clickstream", "journey.clickstream", limits)
    assert assert_rejected(result, "invalid_field").detail.startswith("customer_id is ")


def test_a_record_over_the_size_limit_says_how_large_it_is_and_the_setting() -> None:
    limits = Limits(max_event_bytes=100)
    value = orjson.dumps({"event_id": "e", "customer_id": "c", "type": "t", "pad": "x" * 100})
    rejected = decode_record(b"key", value, "clickstream", "t.c", limits)
    assert rejected == Rejection(
        "too_large",
        f"key and value are {3 + len(value)} bytes; at most 100 (JOURNEY_MAX_EVENT_BYTES)",
    )
    assert limits.too_large(b"key", value) == rejected  # erasure requests are told the same
    assert limits.too_large(None, b"x" * 100) is None  # the limit itself is allowed
