"""The schemas in ``schemas/`` are valid, their examples validate, and what the processor
writes (stage changes, dead letters, event bundles) validates against them."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from processor.contracts.bundle import BUNDLE_VERSION, decode_bundle, encode_bundle
from processor.contracts.inputs import REJECT_REASONS, decode_event
from processor.contracts.outputs import (
    STAGE_CHANGED_TYPE,
    TRIGGER_TYPE,
    encode_dead_letter,
    encode_stage_change,
    encode_trigger,
    restore_payload,
    stage_change_from_document,
    trigger_from_document,
)
from processor.engine import (
    SOURCES,
    CustomerState,
    Event,
    EventRef,
    Source,
    StageChange,
    apply,
    load_model,
    stage_change_id,
)
from processor.engine.triggers import TriggerFired, trigger_id
from tests.schemas import ALL, REGISTRY, SCHEMAS, validator

BASE = "https://journey-processor.dev/schemas/"
EXPECTED = {
    "input.event.v1.json",
    "input.clickstream.v1.json",
    "input.research.v1.json",
    "input.support.v1.json",
    "input.event.v2.json",
    "input.clickstream.v2.json",
    "input.research.v2.json",
    "input.support.v2.json",
    "stage-change.v1.json",
    "stage-change.v2.json",
    "dead-letter.v1.json",
    "dead-letter.v2.json",
    "internal.event-bundle.v1.json",
    "internal.event-bundle.v2.json",
    "trigger.v1.json",
    "trigger.v2.json",
    "customer-erased.v1.json",
    "erasure-request.v1.json",
    "internal.forget.v1.json",
    "identity-merged.v1.json",
    "internal.merge.v1.json",
    "internal.event-bundle.v3.json",
    "internal.forget.v2.json",
    "internal.forward.v1.json",
    "internal.forget.v3.json",
}
CE_SOURCE = "urn:journey-processor:journey-processor"
MODEL = load_model()


STAGE_CHANGE = validator("stage-change.v2.json")
DEAD_LETTER = validator("dead-letter.v2.json")
DEAD_LETTER_V1 = validator("dead-letter.v1.json")
BUNDLE = validator("internal.event-bundle.v1.json")


def assert_valid(check: Draft202012Validator, doc: Any) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in check.iter_errors(doc)]
    assert not errors, (errors, doc)


# --------------------------------------------------------------------------- all schemas


def test_the_expected_schemas_exist() -> None:
    assert set(ALL) == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_schema_is_valid_draft_2020_12(name: str) -> None:
    schema = ALL[name]
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == BASE + name
    assert schema["title"]
    assert len(schema["description"]) > 100


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_example_validates(name: str) -> None:
    examples = ALL[name]["examples"]
    assert len(examples) >= 3
    check = validator(name)
    for example in examples:
        assert_valid(check, example)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_schema_files_are_canonically_formatted(name: str) -> None:
    """Two-space JSON with a final newline, so diffs of contract changes stay readable."""
    text = (SCHEMAS / name).read_text(encoding="utf-8")
    assert text == json.dumps(ALL[name], indent=2, ensure_ascii=False) + "\n"


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_reference_resolves(name: str) -> None:
    resolver = REGISTRY.resolver(base_uri=ALL[name]["$id"])
    for ref in _refs(ALL[name]):
        assert ref.startswith("#") or not ref.startswith("http"), "use relative references"
        assert resolver.lookup(ref).contents is not None


def test_the_readme_lists_every_schema_and_topic() -> None:
    readme = (SCHEMAS / "README.md").read_text(encoding="utf-8")
    for name in EXPECTED - {"input.event.v1.json", "input.event.v2.json"}:
        assert f"[`{name}`]({name})" in readme
    for topic in (
        "journey.clickstream",
        "journey.research",
        "journey.support",
        "journey.stage-changes",
        "journey.dead-letter",
        "journey.erasure-requests",
        "journey.erasures",
        "journey.identities",
        "<app_id>-events-by-customer",
    ):
        assert f"| `{topic}` |" in readme
    assert STAGE_CHANGED_TYPE in readme
    assert TRIGGER_TYPE in readme


# --------------------------------------------------------------------------- stage changes

HEADER_NAMES = [
    "ce_specversion",
    "ce_id",
    "ce_source",
    "ce_type",
    "ce_time",
    "ce_subject",
    "content-type",
]


def check_stage_change_record(change: StageChange) -> dict[str, Any]:
    record = encode_stage_change(change, CE_SOURCE)
    document = orjson.loads(record.value)
    assert_valid(STAGE_CHANGE, document)
    assert record.key == change.customer_id.encode()
    headers = dict(record.headers)
    assert [name for name, _ in record.headers] == HEADER_NAMES
    spec = ALL["stage-change.v2.json"]["x-kafka"]["headers"]
    assert list(spec) == HEADER_NAMES
    for name, rule in spec.items():
        if "const" in rule:
            assert headers[name] == rule["const"].encode(), name
        if "field" in rule:
            assert headers[name] == document[rule["field"]].encode(), name
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_id"] == document["id"].encode()
    assert headers["ce_source"] == CE_SOURCE.encode()
    assert headers["ce_type"] == STAGE_CHANGED_TYPE.encode()
    assert headers["ce_time"] == document["changed_at"].encode()
    assert headers["ce_subject"] == change.customer_id.encode()
    assert headers["content-type"] == b"application/json"
    assert document["id"] == change.id == stage_change_id(change)
    assert stage_change_from_document(document).id == change.id
    return document


def test_the_stage_change_schema_documents_the_kafka_contract() -> None:
    schema = ALL["stage-change.v2.json"]
    assert schema["additionalProperties"] is False
    assert schema["x-kafka"]["key"] == "customer_id"
    assert schema["x-kafka"]["headers"]["ce_type"]["const"] == STAGE_CHANGED_TYPE
    for text in (*HEADER_NAMES, STAGE_CHANGED_TYPE, '"1.0"', "application/json", "key"):
        assert text in schema["description"], text


def test_stage_change_examples_are_consistent() -> None:
    for example in ALL["stage-change.v2.json"]["examples"]:
        assert example["id"] == stage_change_from_document(example).id
        assert example["model"] == MODEL.label
        assert example["to_stage"] in MODEL.stages


def _event(event_id: str, customer: str, source: Source, event_type: str, at: datetime) -> Event:
    return Event(event_id, customer, source, f"journey.{source}", event_type, at, {})


KNOWN = sorted((s, t) for s in SOURCES for t in MODEL.known_types(s))
START = datetime(2026, 3, 1, tzinfo=UTC)


@st.composite
def histories(draw: st.DrawFn) -> list[Event]:
    """Events for a few customers, with repeats, out-of-order times and long gaps."""
    kinds = st.one_of(st.sampled_from(KNOWN), st.just(("clickstream", "newsletter_click")))
    offsets = st.one_of(st.integers(0, 3 * 24 * 3600), st.integers(0, 200 * 24 * 3600)).map(
        lambda s: timedelta(seconds=s)
    )
    micros = st.sampled_from([0, 0, 1, 500000, 999999]).map(lambda u: timedelta(microseconds=u))
    events = []
    for _ in range(draw(st.integers(1, 25))):
        source, event_type = draw(kinds)
        events.append(
            _event(
                f"e{draw(st.integers(0, 30))}",
                draw(st.sampled_from(["cust-1", "cust-2", "ü-3"])),
                source,
                event_type,
                START + draw(offsets) + draw(micros),
            )
        )
    return events


@settings(max_examples=200, deadline=None)
@given(history=histories())
def test_engine_stage_changes_validate(history: list[Event]) -> None:
    states: dict[str, CustomerState | None] = {}
    seen = 0
    for event in history:
        step = apply(states.get(event.customer_id), event, MODEL)
        states[event.customer_id] = step.state
        for output in step.outputs:
            if isinstance(output, StageChange):
                document = check_stage_change_record(output)
                assert (document["sequence"] == 1) == (document["from_stage"] is None)
                seen += 1
    if any(MODEL.evidence_for(e.source, e.type) for e in history):
        assert seen > 0


@given(
    at=st.datetimes(
        min_value=datetime(1970, 1, 1),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))]),
    ),
    before=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3000)),
    sequence=st.integers(1, 10**6),
    customer=st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=10),
)
def test_any_stage_change_validates(
    at: datetime, before: timedelta, sequence: int, customer: str
) -> None:
    first = sequence == 1
    previous = None if first else at - before
    change = StageChange(
        customer_id=customer,
        cycle=1 if first else 1 + sequence // 3,
        sequence=sequence,
        from_stage=None if first else "evaluation",
        to_stage="purchase",
        changed_at=at,
        previous_stage_entered_at=previous,
        evidence=EventRef("e-1", "journey.clickstream", "order_completed"),
        model_name=MODEL.name,
        model_version=MODEL.version,
        caused_by="e-1",
    )
    document = check_stage_change_record(change)
    assert document["changed_at"].endswith("Z")
    assert datetime.fromisoformat(document["changed_at"]) == at


def _example_change() -> dict[str, Any]:
    return dict(ALL["stage-change.v2.json"]["examples"][1])


@pytest.mark.parametrize(
    "mutation",
    [
        {"extra": 1},
        {"id": "not-a-uuid"},
        {"id": "CE137DF0-FE1A-5F51-B892-6783C351DEB2"},
        {"customer_id": ""},
        {"cycle": 0},
        {"sequence": 0},
        {"sequence": 2.5},
        {"from_stage": None},
        {"previous_stage_entered_at": None},
        {"changed_at": "2026-03-02T08:30:00+00:00"},
        {"changed_at": "2026-03-02T08:30:00.12Z"},
        {"trigger": {"event_id": "e", "topic": "t"}},
        {"model": {"name": "buying-process"}},
        {"sequence": 1},
    ],
)
def test_the_stage_change_schema_rejects(mutation: dict[str, Any]) -> None:
    document = _example_change() | mutation
    assert not STAGE_CHANGE.is_valid(document)


def test_a_first_change_must_come_from_nothing() -> None:
    first = dict(ALL["stage-change.v2.json"]["examples"][0])
    assert STAGE_CHANGE.is_valid(first)
    assert not STAGE_CHANGE.is_valid(first | {"from_stage": "purchase"})
    assert not STAGE_CHANGE.is_valid(first | {"cycle": 2})


# --------------------------------------------------------------------------- dead letters


def test_dead_letter_reasons_are_the_decoders() -> None:
    schema = ALL["dead-letter.v2.json"]
    assert schema["properties"]["reason"]["enum"] == list(REJECT_REASONS)
    for reason in REJECT_REASONS:
        assert reason in schema["properties"]["reason"]["description"]


def test_dead_letter_examples_restore() -> None:
    encodings = set()
    for example in ALL["dead-letter.v2.json"]["examples"]:
        if example["payload_encoding"] == "omitted":
            with pytest.raises(ValueError, match="fetch it at source"):
                restore_payload(example)
            continue
        restored = restore_payload(example)
        assert example["original"]["length"] == (None if restored is None else len(restored))
        if example["payload"] is None:
            assert restored is None
            continue
        assert isinstance(restored, bytes)
        encodings.add(example["payload_encoding"])
        if example["payload_encoding"] == "base64":
            with pytest.raises(UnicodeDecodeError):
                restored.decode("utf-8")
        else:
            assert restored.decode("utf-8") == example["payload"]
    assert encodings == {"utf-8", "base64"}


_PAYLOADS = st.one_of(
    st.none(),
    st.binary(max_size=300),
    st.text(max_size=100).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=100).map(str.encode),
    st.sampled_from([b"", b"\xff", b"\xef\xbb\xbf{}", b"\x00", b'{"event_id": 1}']),
)


@settings(max_examples=300)
@given(
    payload=_PAYLOADS,
    key=st.one_of(st.none(), st.binary(max_size=20)),
    reason=st.sampled_from([r for r in REJECT_REASONS if r != "too_large"]),
    detail=st.text(st.characters(exclude_categories=("Cs",)), max_size=50),
    topic=st.sampled_from([f"journey.{s}" for s in SOURCES]),
    partition=st.integers(0, 2**31 - 1),
    offset=st.integers(0, 2**63 - 1),
)
def test_dead_letters_validate_and_restore_exactly(
    payload: bytes | None,
    key: bytes | None,
    reason: str,
    detail: str,
    topic: str,
    partition: int,
    offset: int,
) -> None:
    record = encode_dead_letter(
        reason=reason,
        detail=detail,
        topic=topic,
        partition=partition,
        offset=offset,
        key=key,
        payload=payload,
    )
    document = orjson.loads(record.value)
    assert_valid(DEAD_LETTER, document)
    assert record.key == key
    assert record.headers == [
        ("content-type", b"application/json"),
        ("journey_schema", b"dead-letter.v2"),
    ]
    assert document["source"] == {"topic": topic, "partition": partition, "offset": offset}
    assert restore_payload(document) == payload
    assert document["original"]["length"] == (None if payload is None else len(payload))
    assert document["original"]["key_length"] == (None if key is None else len(key))
    if payload is None:
        assert document["payload"] is None
    elif document["payload_encoding"] == "base64":
        assert base64.b64decode(document["payload"], validate=True) == payload
    else:
        assert document["payload"].encode("utf-8") == payload


@given(payload=st.binary(max_size=300), key=st.one_of(st.none(), st.binary(max_size=20)))
def test_too_large_dead_letters_carry_a_digest_not_the_bytes(
    payload: bytes, key: bytes | None
) -> None:
    record = encode_dead_letter(
        reason="too_large",
        detail="too big",
        topic="journey.clickstream",
        partition=2,
        offset=7,
        key=key,
        payload=payload,
    )
    document = orjson.loads(record.value)
    assert_valid(DEAD_LETTER, document)
    assert record.key is None and document["payload"] is None
    assert document["original"]["sha256"] == hashlib.sha256(payload).hexdigest()
    assert document["original"]["length"] == len(payload)
    assert document["original"]["key_sha256"] == (
        None if key is None else hashlib.sha256(key).hexdigest()
    )


def test_v1_examples_are_not_v2_documents() -> None:
    """v2 is a new version: a v1 consumer's document lacks what v2 requires."""
    for example in ALL["dead-letter.v1.json"]["examples"]:
        assert DEAD_LETTER_V1.is_valid(example)
        assert not DEAD_LETTER.is_valid(example)


@given(raw=st.one_of(st.none(), st.binary(max_size=100)), source=st.sampled_from(SOURCES))
def test_every_rejection_makes_a_valid_dead_letter(raw: bytes | None, source: Source) -> None:
    result = decode_event(raw, source, f"journey.{source}")
    if isinstance(result, Event):
        return
    record = encode_dead_letter(
        reason=result.reason,
        detail=result.detail,
        topic=f"journey.{source}",
        partition=0,
        offset=0,
        key=None,
        payload=raw,
    )
    document = orjson.loads(record.value)
    assert_valid(DEAD_LETTER, document)
    assert restore_payload(document) == raw


@pytest.mark.parametrize(
    "mutation",
    [
        {"reason": "bad_luck"},
        {"payload_encoding": "latin-1"},
        {"payload_encoding": "base64", "payload": "not base64!"},
        {"source": {"topic": "t", "partition": -1, "offset": 0}},
        {"source": {"topic": "t", "partition": 0}},
        {"extra": True},
        {"reason": "too_large"},
        {"payload_encoding": "omitted"},
        {"original": {"length": 3}},
        {"schema": "dead-letter.v1"},
    ],
)
def test_the_dead_letter_schema_rejects(mutation: dict[str, Any]) -> None:
    document = dict(ALL["dead-letter.v2.json"]["examples"][0]) | mutation
    assert not DEAD_LETTER.is_valid(document)


# --------------------------------------------------------------------------- bundles

_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=("Cs",)), max_size=10),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(st.characters(exclude_categories=("Cs",)), max_size=5), children)
    ),
    max_leaves=8,
)
_NAMES = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=10)


@st.composite
def events(draw: st.DrawFn, zone: st.SearchStrategy[timezone] | None = None) -> Event:
    source = draw(st.sampled_from(SOURCES))
    return Event(
        event_id=draw(_NAMES),
        customer_id=draw(_NAMES),
        source=source,
        topic=draw(st.sampled_from([f"journey.{source}", "other-topic"])),
        type=draw(st.text(st.characters(exclude_categories=("Cs",)), max_size=10)),
        occurred_at=draw(
            st.datetimes(
                min_value=datetime(1, 1, 2),
                max_value=datetime(9999, 12, 30),
                timezones=zone if zone is not None else st.just(UTC),
            )
        ),
        properties=draw(st.dictionaries(_NAMES, _JSON, max_size=3)),
    )


@settings(max_examples=200)
@given(batch=st.lists(events(), max_size=6))
def test_bundles_validate_and_round_trip(batch: list[Event]) -> None:
    raw = encode_bundle(batch)
    document = orjson.loads(raw)
    assert_valid(BUNDLE, document)
    assert document["v"] == BUNDLE_VERSION
    for item in document["events"]:
        assert item["occurred_at"].endswith("+00:00")
    decoded = decode_bundle(raw)
    assert decoded == batch
    for before, after in zip(batch, decoded, strict=True):
        assert after.occurred_at.utcoffset() == timedelta(0)
        assert after.occurred_at == before.occurred_at


@given(
    batch=st.lists(
        events(st.sampled_from([timezone(timedelta(hours=-8)), timezone(timedelta(minutes=330))])),
        min_size=1,
        max_size=3,
    )
)
def test_bundles_of_events_in_other_offsets_validate_too(batch: list[Event]) -> None:
    raw = encode_bundle(batch)
    assert_valid(BUNDLE, orjson.loads(raw))
    assert decode_bundle(raw) == batch


def test_decoded_input_events_bundle_and_round_trip() -> None:
    batch = []
    for source in SOURCES:
        for example in ALL[f"input.{source}.v1.json"]["examples"]:
            event = decode_event(orjson.dumps(example), source, f"journey.{source}")
            assert isinstance(event, Event)
            batch.append(event)
    raw = encode_bundle(batch)
    assert_valid(BUNDLE, orjson.loads(raw))
    assert decode_bundle(raw) == batch


def test_bundle_examples_decode() -> None:
    for example in ALL["internal.event-bundle.v1.json"]["examples"]:
        decoded = decode_bundle(orjson.dumps(example))
        assert len(decoded) == len(example["events"])
        assert encode_bundle(decoded) == orjson.dumps(example)


def test_a_bundle_of_another_version_is_refused() -> None:
    document = dict(ALL["internal.event-bundle.v1.json"]["examples"][0]) | {"v": 2}
    assert not BUNDLE.is_valid(document)
    with pytest.raises(ValueError, match="version"):
        decode_bundle(orjson.dumps(document))


@pytest.mark.parametrize(
    "mutation",
    [
        {"source": "email"},
        {"occurred_at": "2026-03-02T08:14:05"},
        {"event_id": ""},
        {"properties": []},
        {"extra": 1},
    ],
)
def test_the_bundle_schema_rejects(mutation: dict[str, Any]) -> None:
    example = ALL["internal.event-bundle.v1.json"]["examples"][0]
    document = {"v": 1, "events": [example["events"][0] | mutation]}
    assert not BUNDLE.is_valid(document)


TRIGGER = validator("trigger.v2.json")


@settings(max_examples=200, deadline=None)
@given(history=histories())
def test_every_trigger_validates_and_carries_cloudevent_headers(history: list[Event]) -> None:
    states: dict[str, CustomerState | None] = {}
    for event in history:
        step = apply(states.get(event.customer_id), event, MODEL)
        states[event.customer_id] = step.state
        for output in step.outputs:
            if isinstance(output, TriggerFired):
                record = encode_trigger(output, "/journey-processor/test")
                document = orjson.loads(record.value)
                TRIGGER.validate(document)
                headers = dict(record.headers)
                assert headers["ce_id"].decode() == document["id"]
                assert headers["ce_type"].decode() == TRIGGER_TYPE
                assert headers["ce_time"].decode() == document["fired_at"]
                assert record.key == output.customer_id.encode()
                assert document["id"] == output.id == trigger_id(output)
                assert trigger_from_document(document).id == output.id


def test_the_trigger_schema_documents_the_kafka_contract() -> None:
    schema = ALL["trigger.v2.json"]
    assert schema["additionalProperties"] is False
    assert schema["x-kafka"]["key"] == "customer_id"
    assert schema["x-kafka"]["headers"]["ce_type"]["const"] == TRIGGER_TYPE
    assert TRIGGER_TYPE in schema["description"]
    assert set(schema["required"]) == set(schema["properties"])


def test_trigger_examples_are_consistent() -> None:
    rules = {rule.name for rule in MODEL.triggers}
    for example in ALL["trigger.v2.json"]["examples"]:
        assert example["id"] == trigger_from_document(example).id
        assert example["model"] == MODEL.label
        assert example["stage"] in MODEL.stages
        assert example["trigger"] in rules


def test_trigger_v1_is_kept_as_released() -> None:
    """v1 is a released contract: its ce_type and its id rule stay documented as they were."""
    v1 = ALL["trigger.v1.json"]
    assert v1["x-kafka"]["headers"]["ce_type"]["const"] == "io.journey-processor.trigger.v1"
    assert "occurrence" not in v1["properties"]
    assert "customer_id, trigger, cycle and occurrence" in v1["properties"]["id"]["description"]
