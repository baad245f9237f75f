"""What the processor writes as an erasure confirmation validates, and is the same on replay."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from processor.contracts.erasure import CUSTOMER_ERASED_TYPE, encode_customer_erased
from processor.engine.erasure import ForgetRequest, forget
from tests.schemas import validator

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
