"""The anonymous id's final record: it validates, has CloudEvents headers, replays identically."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import msgspec
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from processor.contracts.bundle import (
    MergeMessage,
    decode_envelope,
    decode_merge,
    encode_merge,
    encode_ordered_bundles,
)
from processor.contracts.identity import IDENTITY_MERGED_TYPE, encode_identity_merged
from processor.contracts.outputs import (
    MERGED_FROM_HEADER,
    STAGE_CHANGED_TYPE,
    encode_stage_change,
    stage_change_from_document,
)
from processor.contracts.state import decode_state, encode_state
from processor.engine import CustomerState, Event, EventRef, StageChange, apply, load_model
from processor.engine.identity import IdentityMerged, identity_merged, merge
from processor.engine.ordering import Arrival, Mark
from processor.engine.vocabulary import MergedStageChange
from tests.schemas import ALL, validator

MERGED = validator("identity-merged.v1.json")
STAGE_CHANGE = validator("stage-change.v2.json")
MODEL = load_model()
ids = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=20)


def identify(customer: str, anonymous: str, event_id: str, when: datetime) -> Event:
    return Event(
        event_id, customer, "clickstream", "journey.clickstream", "identify", when,
        anonymous_id=anonymous,
    )  # fmt: skip


@given(
    customer=ids,
    anonymous=ids,
    event_id=ids,
    when=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
)
def test_real_records_validate_and_carry_cloudevent_headers(
    customer: str, anonymous: str, event_id: str, when: datetime
) -> None:
    if customer == anonymous:
        return
    merged = identity_merged(identify(customer, anonymous, event_id, when), MODEL)
    record = encode_identity_merged(merged, "/journey-processor/t")
    doc = orjson.loads(record.value)
    MERGED.validate(doc)
    assert (doc["anonymous_id"], doc["customer_id"]) == (anonymous, customer)
    assert doc["identify"] == {
        "event_id": event_id,
        "topic": "journey.clickstream",
        "type": "identify",
    }
    assert datetime.fromisoformat(doc["identified_at"].replace("Z", "+00:00")) == when
    assert doc["model"] == MODEL.label
    assert uuid.UUID(doc["id"]).version == 5
    headers = dict(record.headers)
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_type"] == IDENTITY_MERGED_TYPE.encode()
    assert headers["ce_id"] == doc["id"].encode()
    assert headers["ce_time"] == doc["identified_at"].encode()
    assert headers["ce_subject"] == anonymous.encode()
    assert headers["ce_source"] == b"/journey-processor/t"
    assert record.key == anonymous.encode()


def test_a_replayed_identify_gives_identical_bytes_and_id() -> None:
    when = datetime(2026, 3, 2, 8, 13, 59, tzinfo=UTC)
    first = encode_identity_merged(identity_merged(identify("c", "a", "e", when), MODEL), "/s")
    again = encode_identity_merged(identity_merged(identify("c", "a", "e", when), MODEL), "/s")
    assert first == again


def test_the_id_names_the_two_ids_and_the_identify_event() -> None:
    when = datetime(2026, 3, 2, tzinfo=UTC)
    base = identity_merged(identify("c", "a", "e", when), MODEL)
    others = [
        identity_merged(identify("c2", "a", "e", when), MODEL),
        identity_merged(identify("c", "a2", "e", when), MODEL),
        identity_merged(identify("c", "a", "e2", when), MODEL),
    ]
    assert len({base.id, *(o.id for o in others)}) == 4
    namespace = uuid.UUID("3c7e1a52-9d4b-5f06-8a2e-6964656e7469")
    assert base.id == str(uuid.uuid5(namespace, "a\x1fc\x1fe"))


def test_the_examples_are_what_the_encoder_writes() -> None:
    for example in ALL["identity-merged.v1.json"]["examples"]:
        when = datetime.fromisoformat(example["identified_at"].replace("Z", "+00:00"))
        event = identify(
            example["customer_id"], example["anonymous_id"], example["identify"]["event_id"], when
        )
        record = encode_identity_merged(identity_merged(event, MODEL), "/s")
        assert orjson.loads(record.value) == example


@pytest.mark.parametrize(
    ("customer", "anonymous", "type_"),
    [("c", "c", "identify"), ("c", None, "identify"), ("c", "a", "page_view")],
)
def test_only_an_identify_event_makes_one(customer: str, anonymous: str | None, type_: str) -> None:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    event = Event(
        "e", customer, "clickstream", "journey.clickstream", type_, when, anonymous_id=anonymous
    )
    with pytest.raises(ValueError, match="not an identify event"):
        identity_merged(event, MODEL)


def test_the_record_type_is_the_engines() -> None:
    assert IdentityMerged.__struct_fields__ == (
        "anonymous_id", "customer_id", "identify", "identified_at", "model_name", "model_version",
    )  # fmt: skip


# --------------------------------------------------------------------------- merged changes


def _merged_state() -> tuple[CustomerState, MergedStageChange]:
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    a = apply(None, Event("a1", "c", "clickstream", "journey.clickstream", "page_view", t0), MODEL)
    b = apply(
        None, Event("b1", "anon", "clickstream", "journey.clickstream", "add_to_cart", t0), MODEL
    )
    via = EventRef("login-1", "journey.clickstream", "identify")
    merged = merge(a.state, b.state, MODEL, into="c", via=via)
    (change,) = merged.changes
    assert isinstance(change, MergedStageChange) and merged.state is not None
    return merged.state, change


@pytest.mark.parametrize("late", [False, True])
def test_a_merged_change_survives_the_state_codec(late: bool) -> None:
    state, change = _merged_state()
    if late:
        change = msgspec.structs.replace(change, late=True)
        state = msgspec.structs.replace(state, recent_changes=(change,))
    restored = decode_state(encode_state(state))
    assert restored == state
    assert isinstance(restored.recent_changes[-1], MergedStageChange)
    assert restored.recent_changes[-1].id == change.id


def test_a_merged_change_is_a_v2_stage_change_with_the_merge_in_a_header() -> None:
    _, change = _merged_state()
    record = encode_stage_change(change, "/s")
    doc = orjson.loads(record.value)
    STAGE_CHANGE.validate(doc)
    assert stage_change_from_document(doc).id == doc["id"] == change.id
    assert doc["trigger"] == {
        "event_id": "login-1",
        "topic": "journey.clickstream",
        "type": "identify",
    }
    assert (doc["from_stage"], doc["to_stage"]) == ("need_recognition", "evaluation")
    headers = dict(record.headers)
    assert headers[MERGED_FROM_HEADER] == b"anon"
    assert headers["ce_type"] == STAGE_CHANGED_TYPE.encode()
    fields = {f: getattr(change, f) for f in StageChange.__struct_fields__}
    plain = encode_stage_change(StageChange(**fields), "/s")
    assert plain.value == record.value
    assert MERGED_FROM_HEADER not in dict(plain.headers)


# --------------------------------------------------------------------------- merge messages

MERGE_MESSAGE = validator("internal.merge.v1.json")


@pytest.mark.parametrize("with_state", [True, False])
def test_merge_messages_validate_and_round_trip(with_state: bool) -> None:
    state, _ = _merged_state()
    message = MergeMessage(
        customer_id="c",
        anonymous_id="anon",
        identify=EventRef("login-1", "journey.clickstream", "identify"),
        identified_at=datetime(2026, 3, 2, 8, tzinfo=UTC),
        state=state if with_state else None,
        chunks=(("e1", "e2"), ("e3",)),
        source=("journey.clickstream", 2, 41),
    )
    raw = encode_merge(message)
    MERGE_MESSAGE.validate(orjson.loads(raw))
    assert decode_merge(raw) == message
    assert encode_merge(decode_merge(raw)) == raw


def test_the_merge_examples_decode_and_re_encode_byte_for_byte() -> None:
    for example in ALL["internal.merge.v1.json"]["examples"]:
        raw = orjson.dumps(example)
        assert encode_merge(decode_merge(raw)) == raw


def test_a_merge_message_of_another_version_is_refused() -> None:
    example = ALL["internal.merge.v1.json"]["examples"][0]
    with pytest.raises(ValueError, match="unknown control message"):
        decode_merge(orjson.dumps(example | {"v": 2}))


# --------------------------------------------------------------------------- bundles

BUNDLE_V2 = validator("internal.event-bundle.v2.json")
BUNDLE_V3 = validator("internal.event-bundle.v3.json")


@given(
    anonymous=st.lists(st.one_of(st.none(), ids), min_size=1, max_size=8),
    max_bytes=st.sampled_from([300, 700, 2**62]),
)
def test_bundles_carry_anonymous_ids_as_v3_and_stay_v2_without(
    anonymous: list[str | None], max_bytes: int
) -> None:
    t0 = datetime(2026, 3, 1, tzinfo=UTC)

    def event(i: int, a: str | None) -> Event:
        return Event(
            f"e{i}", a or "c", "clickstream", "journey.clickstream", "page_view", t0, anonymous_id=a
        )

    arrivals = [Arrival(event(i, a), 0, i) for i, a in enumerate(anonymous)]
    marks = {("journey.clickstream", 0): Mark(t0, False)}
    raws = list(encode_ordered_bundles(arrivals, marks, max_bytes))
    decoded = [a for raw in raws for a in decode_envelope(raw).arrivals]
    assert decoded == arrivals
    for raw in raws:
        doc = orjson.loads(raw)
        carries = any("anonymous_id" in e for e in doc["events"])
        assert doc["v"] == (3 if carries else 2)
        (BUNDLE_V3 if carries else BUNDLE_V2).validate(doc)
    if all(a is None for a in anonymous):
        plain = [Arrival(msgspec.structs.replace(a.event), 0, a.offset) for a in arrivals]
        assert list(encode_ordered_bundles(plain, marks, max_bytes)) == raws


def test_the_v3_bundle_examples_decode_with_their_anonymous_ids() -> None:
    for example in ALL["internal.event-bundle.v3.json"]["examples"]:
        envelope = decode_envelope(orjson.dumps(example))
        expected = [e.get("anonymous_id") for e in example["events"]]
        assert [a.event.anonymous_id for a in envelope.arrivals] == expected
