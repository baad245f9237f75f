"""Events held for event-time ordering keep their anonymous id in the event-order records."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from processor.app.ordering import _decode_held, _encode_held
from processor.engine import Event
from processor.engine.ordering import Held

T0 = datetime(2026, 3, 1, 9, tzinfo=UTC)


def held(anonymous_id: str | None) -> Held:
    event = Event(
        "e1", "anon-1", "clickstream", "journey.clickstream", "page_view", T0, {"u": "/"},
        anonymous_id=anonymous_id,
    )  # fmt: skip
    return Held((T0, "journey.clickstream", 2, 17), event, T0, 5)


@pytest.mark.parametrize("anonymous_id", [None, "anon-1"])
def test_held_events_round_trip_with_or_without_an_anonymous_id(anonymous_id: str | None) -> None:
    record = _encode_held([held(anonymous_id), held(None)])
    assert _decode_held(record, 5) == [held(anonymous_id), held(None)]


def test_a_held_event_without_an_anonymous_id_is_stored_as_before() -> None:
    row = orjson.loads(_encode_held([held(None)]))[0]
    assert len(row) == 10  # the previous release reads exactly ten fields
    assert len(orjson.loads(_encode_held([held("anon-1")]))[0]) == 11
