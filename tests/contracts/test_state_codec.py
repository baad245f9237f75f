"""The stored formats: customer state and sealed dedupe chunks."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta, timezone

import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.contracts import state as codec
from processor.contracts.state import (
    STATE_VERSION,
    V1_STATE_VERSION,
    chunk_key,
    decode_chunk,
    decode_state,
    encode_chunk,
    encode_chunk_v1,
    encode_state,
    encode_state_v1,
    state_version,
)
from processor.engine import (
    DEDUPE_CHUNK,
    ChunkSealed,
    CustomerState,
    Event,
    EventRef,
    Source,
    StageChange,
    SupportContact,
    apply,
    load_model,
)

MODEL = load_model()
T0 = datetime(2024, 1, 1, tzinfo=UTC)
TOPICS: dict[Source, str] = {
    "clickstream": "journey.clickstream",
    "research": "journey.research",
    "support": "journey.support",
}
KINDS = sorted(MODEL.evidence)

# Identifiers as they come out of JSON: any text without lone surrogates, and UUIDs in the
# canonical form v2 packs into 16 bytes as well as forms it must keep as text.
uuids = st.uuids().flatmap(
    lambda u: st.sampled_from([str(u), str(u).upper(), u.hex, str(u)[:-1] + " "])
)
ids = st.one_of(st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=12), uuids)
# Microseconds included: the format must keep them.
times = st.integers(0, 400 * 86400 * 10**6).map(lambda us: T0 + timedelta(microseconds=us))


@st.composite
def histories(draw: st.DrawFn) -> list[CustomerState]:
    """Every state a customer passes through over a random sequence of events."""
    customer = draw(ids)
    kinds = [*KINDS, *([("clickstream", "order_completed")] * 3)]
    picked = draw(
        st.lists(
            st.tuples(st.sampled_from(kinds), times),
            min_size=1,
            max_size=draw(st.sampled_from([5, 20, DEDUPE_CHUNK + 10])),
        )
    )
    prefix = draw(ids)
    states: list[CustomerState] = []
    state: CustomerState | None = None
    for i, ((source, event_type), when) in enumerate(picked):
        event_id = draw(uuids) if draw(st.booleans()) else f"{prefix}-{i}"
        event = Event(event_id, customer, source, TOPICS[source], event_type, when)
        state = apply(state, event, MODEL).state
        states.append(state)
    return states


def round_trip(state: CustomerState) -> CustomerState:
    return decode_state(encode_state(state))


@settings(max_examples=200, deadline=None)
@given(histories())
def test_state_round_trips(states):
    for state in states:
        decoded = round_trip(state)
        assert decoded == state
        assert msgspec.json.encode(decoded) == msgspec.json.encode(state)  # offsets too
        assert encode_state(decoded) == encode_state(state)


@settings(max_examples=200, deadline=None)
@given(histories())
def test_v1_states_in_old_changelogs_decode_to_the_same_value(states):
    # An upgraded worker recovers what its predecessor wrote: v1 and v2 give the same state.
    for state in states:
        old = decode_state(encode_state_v1(state))
        assert old == state
        assert msgspec.json.encode(old) == msgspec.json.encode(state)
        assert decode_state(encode_state(old)) == state
        assert state_version(encode_state_v1(state)) == state_version(encode_state(state))


def encode_uncached(state: CustomerState) -> bytes:
    """The bytes of a write that finds nothing kept of an earlier one."""
    codec._windows.clear()
    return encode_state(state)


@settings(max_examples=200, deadline=None)
@given(histories())
def test_the_kept_window_never_changes_the_bytes(states):
    # encode_state converts only the ids a window gained since the customer's last write.
    for state in states:
        codec._windows.clear()
        for earlier in states:  # last written: any state of the customer, older or newer
            encode_state(earlier)
            assert encode_state(state) == encode_uncached(state)


@pytest.mark.parametrize(
    "last, now",
    [
        (("a", "b"), ("a", "b", "c")),
        (("a", "b", "c"), ("a", "b", "c")),
        (("a", "b", "c"), ("a", "x", "c", "d")),
        (("a", "b", "c"), ("a", "b")),
        (("a", "b"), ()),
        ((), ("a",)),
        (("a", "b"), ("b", "a")),
        (("a", "b"), ("a", "b", "a")),  # not distinct: numbered one by one
    ],
)
def test_a_window_that_does_not_extend_the_last_one_is_converted_whole(last, now):
    def state(window: tuple[str, ...]) -> CustomerState:
        ids = tuple(str(uuid.UUID(int=ord(i), version=4)) if i < "x" else i for i in window)
        return CustomerState("c", 1, "evaluation", T0, 1, None, T0, 1, recent_event_ids=ids)

    encode_state(state(last))
    assert encode_state(state(now)) == encode_uncached(state(now))
    assert decode_state(encode_state(state(now))) == state(now)


def _reference_pack(text: str) -> bytes | None:
    try:
        parsed = uuid.UUID(text)
    except ValueError:
        return None
    return parsed.bytes if str(parsed) == text else None


@given(st.one_of(ids, st.uuids().map(str), st.text(alphabet="0123456789abcdefABCDEF- \n{}")))
def test_only_a_canonical_uuid_is_stored_as_16_bytes(text):
    assert codec._pack_uuid(text) == _reference_pack(text)


def test_state_round_trip_keeps_every_field():
    events = [
        ("clickstream", "page_view", T0),
        ("support", "complaint", T0 + timedelta(days=3, microseconds=7)),
        ("clickstream", "order_completed", T0 + timedelta(days=2, hours=1)),
    ]
    state = None
    for i, (source, event_type, when) in enumerate(events):
        event = Event(f"ev-{i}", "c\u00e9-1", source, TOPICS[source], event_type, when)
        state = apply(state, event, MODEL).state
    assert state.stage == "post_purchase"
    assert state.last_support is not None
    assert state.purchase_at is not None
    assert len(state.recent_changes) == 4

    decoded = round_trip(state)

    assert decoded == state
    assert decoded.last_support == state.last_support
    assert decoded.recent_changes == state.recent_changes
    assert [c.id for c in decoded.recent_changes] == [c.id for c in state.recent_changes]
    assert decoded.recent_changes[0].previous_stage_entered_at is None
    assert decoded.stage_entered_at.utcoffset() == timedelta(0)
    assert decoded.last_support.occurred_at.microsecond == 7
    assert isinstance(decoded.recent_event_ids, tuple)


def test_minimal_state_round_trips():
    state = CustomerState(
        customer_id="c",
        cycle=1,
        stage="need_recognition",
        stage_entered_at=T0,
        sequence=0,
        purchase_at=None,
        last_event_at=T0,
        applied_count=0,
    )
    assert round_trip(state) == state


def test_hand_built_state_round_trips_values_the_default_model_never_produces():
    # Another model's stages and a support contact whose after-purchase stage is not
    # post_purchase: the codec stores what it is given, not what the default model implies.
    change = StageChange(
        customer_id="c",
        cycle=3,
        sequence=17,
        from_stage="looking",
        to_stage="using",
        changed_at=T0 + timedelta(microseconds=1),
        previous_stage_entered_at=T0,
        evidence=EventRef("t-1", "other.topic", "call"),
        model_name="tiny",
        model_version="7",
        caused_by="t-0",
    )
    state = CustomerState(
        customer_id="c",
        cycle=3,
        stage="using",
        stage_entered_at=change.changed_at,
        sequence=17,
        purchase_at=T0,
        last_event_at=T0 + timedelta(days=1),
        applied_count=70,
        recent_event_ids=("a", "b"),
        recent_changes=(change,),
        last_support=SupportContact("t-1", "other.topic", "call", T0, "using"),
    )
    assert round_trip(state) == state


def test_state_carries_its_version():
    state = CustomerState("c", 1, "evaluation", T0, 1, None, T0, 1)
    assert encode_state(state)[0] == STATE_VERSION == 2
    doc = orjson.loads(encode_state_v1(state))
    assert doc["v"] == V1_STATE_VERSION
    assert doc["customer_id"] == "c"


def _demo_state() -> CustomerState:
    state = None
    steps = [
        ("clickstream", "page_view", T0),
        ("clickstream", "checkout_started", T0 + timedelta(hours=1)),
        ("support", "complaint", T0 + timedelta(days=3, microseconds=7)),
        ("clickstream", "order_completed", T0 + timedelta(days=2, hours=1)),
    ]
    for i, (source, event_type, when) in enumerate(steps):
        event_id = str(uuid.UUID(int=i + 1, version=4))
        event = Event(event_id, "cust-1", source, TOPICS[source], event_type, when)
        state = apply(state, event, MODEL).state
    assert state is not None
    return state


def test_v2_bytes_are_pinned():
    # A released format never changes: a new layout is a new version byte.
    raw = encode_state(_demo_state())
    assert hashlib.sha256(raw).hexdigest()[:16] == V2_DIGEST
    assert decode_state(raw) == _demo_state()


V2_DIGEST = "d71e4f1d95bf89a2"


def test_v2_is_smaller_than_v1_on_uuid_ids():
    state = _demo_state()
    assert len(encode_state(state)) < len(encode_state_v1(state)) / 2


def test_a_timestamp_that_is_not_utc_is_written_as_v1_and_kept_exactly():
    # msgpack's timestamp is UTC; the engine only makes UTC times, but a hand-built state
    # with another offset must not come back changed.
    paris = timezone(timedelta(hours=1))
    state = CustomerState("c", 1, "evaluation", T0.astimezone(paris), 1, None, T0, 1)
    raw = encode_state(state)
    assert raw[:1] == b"{"
    decoded = decode_state(raw)
    assert decoded == state and decoded.stage_entered_at.utcoffset() == timedelta(hours=1)


@pytest.mark.parametrize("raw", [b"", b"\x00", b"\x03abc", b"[1]", b"\x02\x00", b"\x02" + bytes(8)])
def test_decode_state_rejects_what_is_not_a_state(raw):
    with pytest.raises(ValueError):
        decode_state(raw)


@pytest.mark.parametrize("version", [None, 0, V1_STATE_VERSION + 1, "1"])
def test_decode_state_rejects_unknown_versions(version):
    doc = orjson.loads(encode_state_v1(CustomerState("c", 1, "evaluation", T0, 1, None, T0, 1)))
    if version is None:
        del doc["v"]
    else:
        doc["v"] = version
    with pytest.raises(ValueError, match="unknown customer state version"):
        decode_state(orjson.dumps(doc))


# --------------------------------------------------------------------------- chunks


@given(st.lists(ids, max_size=DEDUPE_CHUNK))
def test_chunk_round_trips(event_ids):
    assert decode_chunk(encode_chunk(tuple(event_ids))) == frozenset(event_ids)
    assert decode_chunk(encode_chunk_v1(tuple(event_ids))) == frozenset(event_ids)  # old chunks


def test_v2_chunk_of_uuids_is_16_bytes_an_id():
    event_ids = tuple(str(uuid.UUID(int=i, version=4)) for i in range(DEDUPE_CHUNK))
    assert len(encode_chunk(event_ids)) < 19 * DEDUPE_CHUNK
    assert decode_chunk(encode_chunk(event_ids)) == frozenset(event_ids)


def test_chunk_from_the_engine_round_trips():
    state = None
    sealed = []
    for i in range(DEDUPE_CHUNK):
        event = Event(f"id-{i}", "c", "clickstream", TOPICS["clickstream"], "page_view", T0)
        state, outputs, _ = apply(state, event, MODEL)
        sealed += [o for o in outputs if isinstance(o, ChunkSealed)]
    [chunk] = sealed
    decoded = decode_chunk(encode_chunk(chunk.event_ids))
    assert isinstance(decoded, frozenset)
    assert decoded == {f"id-{i}" for i in range(DEDUPE_CHUNK)}
    assert "id-0" in decoded and "id-32" not in decoded


@settings(max_examples=100, deadline=None)
@given(histories(), st.booleans())
def test_a_chunk_encodes_the_same_with_or_without_its_customer(states, written):
    # A chunk seals the window of the customer's last write and the id that filled it.
    for state in states:
        if written:
            encode_state(state)
        chunk = (*state.recent_event_ids, str(uuid.UUID(int=len(state.recent_event_ids))))
        assert encode_chunk(chunk, state.customer_id) == encode_chunk(chunk)
        assert decode_chunk(encode_chunk(chunk, state.customer_id)) == frozenset(chunk)


def test_chunk_key():
    assert chunk_key("cust-1", 0) == b"cust-1\x1f0"
    assert chunk_key("cust-1", 12) == b"cust-1\x1f12"
    assert chunk_key("caf\u00e9", 3) == "caf\u00e9\x1f3".encode()
    # Customer "a" chunk 12 and customer "a1" chunk 2 do not collide.
    assert chunk_key("a", 12) != chunk_key("a1", 2)


customers = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x1f"))


@given(customers, st.integers(0, 10**6), customers, st.integers(0, 10**6))
def test_chunk_keys_are_distinct_for_distinct_chunks(c1, i1, c2, i2):
    assert (chunk_key(c1, i1) == chunk_key(c2, i2)) == ((c1, i1) == (c2, i2))
    assert chunk_key(c1, i1).startswith(c1.encode() + b"\x1f")


def test_state_version_is_the_applied_count() -> None:
    model = load_model()
    state = None
    versions = []
    for i, kind in enumerate(["page_view", "product_view", "add_to_cart"]):
        event = Event(f"e{i}", "c", "clickstream", "t", kind, datetime(2026, 1, 1 + i, tzinfo=UTC))
        state = apply(state, event, model).state
        assert state is not None
        versions.append(state_version(encode_state(state)))
        assert state_version(encode_state_v1(state)) == versions[-1]
    assert versions == [1, 2, 3]
