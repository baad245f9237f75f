"""What the processor writes as an erasure confirmation validates, and is the same on replay."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from processor.contracts.bundle import ForgetMessage, decode_envelope, encode_forget
from processor.contracts.erasure import (
    CUSTOMER_ERASED_TYPE,
    decode_erasure_request,
    encode_customer_erased,
    encode_erasure_request,
)
from processor.contracts.inputs import Rejection
from processor.contracts.limits import Limits
from processor.engine.erasure import ForgetRequest, forget
from tests.schemas import ALL, validator

ERASED = validator("customer-erased.v1.json")


def test_the_confirmation_validates_and_carries_cloudevents_headers() -> None:
    request = ForgetRequest("alice", "r-1", datetime(2026, 3, 1, 9, tzinfo=UTC))
    record = encode_customer_erased(forget(None, request).confirmation, "/journey-processor/t")
    doc = orjson.loads(record.value)
    ERASED.validate(doc)
    headers = dict(record.headers)
    assert headers["ce_type"] == CUSTOMER_ERASED_TYPE.encode()
    assert headers["ce_id"] == doc["id"].encode()
    assert headers["ce_time"] == b"2026-03-01T09:00:00Z"
    assert record.key == b"alice"


def test_a_replayed_request_gives_identical_bytes() -> None:
    request = ForgetRequest("alice", "r-1")
    first = encode_customer_erased(forget(None, request).confirmation, "/s")
    again = encode_customer_erased(forget(None, request).confirmation, "/s")
    assert first == again
    ERASED.validate(orjson.loads(first.value))


# --------------------------------------------------------------------------- requests in

REQUEST = validator("erasure-request.v1.json")
FORGET = validator("internal.forget.v1.json")
FORGET_V3 = validator("internal.forget.v3.json")
LIMITS = Limits()


def test_every_request_example_decodes_and_round_trips() -> None:
    for example in ALL["erasure-request.v1.json"]["examples"]:
        decoded = decode_erasure_request(orjson.dumps(example), None, "t/0/5", LIMITS)
        assert isinstance(decoded, ForgetRequest), decoded
        assert decoded.customer_id == example["customer_id"]
        assert decoded.request_id == example.get("request_id", "t/0/5")
        written = encode_erasure_request(decoded)
        REQUEST.validate(orjson.loads(written))
        assert decode_erasure_request(written, None, "other", LIMITS) == decoded


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ({}, "missing_field"),
        ({"customer_id": ""}, "invalid_field"),
        ({"customer_id": 7}, "invalid_field"),
        ({"customer_id": "a", "request_id": ""}, "invalid_field"),
        ({"customer_id": "a", "request_id": ["r"]}, "invalid_field"),
        ({"customer_id": "a", "requested_at": "2026-03-01T09:00:00"}, "invalid_timestamp"),
        ({"customer_id": "a", "requested_at": 5}, "invalid_timestamp"),
        ([{"customer_id": "a"}], "not_an_object"),
    ],
)
def test_the_schema_and_the_decoder_reject_the_same_requests(document: Any, reason: str) -> None:
    assert not REQUEST.is_valid(document)
    decoded = decode_erasure_request(orjson.dumps(document), None, "t/0/0", LIMITS)
    assert isinstance(decoded, Rejection) and decoded.reason == reason


def test_requests_over_the_limits_are_refused() -> None:
    long_id = orjson.dumps({"customer_id": "x" * 300})
    assert decode_erasure_request(long_id, None, "p", LIMITS) == Rejection(
        "invalid_field", "customer_id is 300 bytes long; at most 256 (JOURNEY_MAX_ID_LENGTH)"
    )
    big = orjson.dumps({"customer_id": "a", "pad": "x" * 70_000})
    rejected = decode_erasure_request(big, None, "p", LIMITS)
    assert isinstance(rejected, Rejection) and rejected.reason == "too_large"
    not_utf8 = decode_erasure_request(b'{"customer_id": "\xff"}', None, "p", LIMITS)
    assert isinstance(not_utf8, Rejection) and not_utf8.reason == "not_utf8"


# --------------------------------------------------------------------------- the internal hop


@pytest.mark.parametrize(
    "requested_at",
    [None, datetime(2026, 3, 1, 9, tzinfo=UTC), datetime(2026, 3, 1, 9, 0, 0, 250000, tzinfo=UTC)],
)
def test_forget_messages_validate_and_round_trip(requested_at: datetime | None) -> None:
    message = ForgetMessage(
        ForgetRequest("alice", "r-1", requested_at), ("journey.erasure-requests", 2, 17)
    )
    raw = encode_forget(message)
    FORGET.validate(orjson.loads(raw))
    envelope = decode_envelope(raw)
    assert envelope.forget == message and envelope.arrivals == [] and envelope.tick is None
    confirmation = forget(None, envelope.forget.request).confirmation
    assert confirmation == forget(None, message.request).confirmation


def test_unlink_messages_validate_as_v3_and_round_trip() -> None:
    request = ForgetRequest("anon-1", "r-2", datetime(2026, 3, 1, 9, tzinfo=UTC))
    message = ForgetMessage(request, ("journey.erasure-requests", 0, 5), unlink_from="alice")
    raw = encode_forget(message)
    doc = orjson.loads(raw)
    FORGET_V3.validate(doc)
    assert doc["v"] == 3 and not FORGET.is_valid(doc)
    assert decode_envelope(raw).forget == message
    for example in ALL["internal.forget.v3.json"]["examples"]:
        decoded = decode_envelope(orjson.dumps(example)).forget
        assert decoded is not None and decoded.unlink_from == example["unlink_from"]
    without = {k: v for k, v in doc.items() if k != "unlink_from"}
    assert not FORGET_V3.is_valid(without)
    with pytest.raises(ValueError, match="without unlink_from"):
        decode_envelope(orjson.dumps(without))
    with pytest.raises(ValueError, match="not both"):
        encode_forget(ForgetMessage(request, message.source, "alice", "alice"))


def test_forget_examples_decode_and_old_bundles_still_do() -> None:
    for example in ALL["internal.forget.v1.json"]["examples"]:
        assert decode_envelope(orjson.dumps(example)).forget is not None
    for name in ("internal.event-bundle.v1.json", "internal.event-bundle.v2.json"):
        for example in ALL[name]["examples"]:
            assert decode_envelope(orjson.dumps(example)).forget is None


def test_an_unknown_control_message_is_refused() -> None:
    example = dict(ALL["internal.forget.v1.json"]["examples"][0])
    for changed in ({"v": 2}, {"v": 3}, {"v": 4}, {"kind": "unmerge"}):
        assert not FORGET.is_valid(example | changed)
        with pytest.raises(ValueError, match="control message"):
            decode_envelope(orjson.dumps(example | changed))
