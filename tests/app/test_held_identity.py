"""Anonymous ids through the shell: held events keep them, bundles carry them (v3)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from processor.app.ordering import _decode_held, _encode_held
from processor.app.pipeline import InputRecord
from processor.contracts.bundle import decode_envelope
from processor.engine import Event
from processor.engine.ordering import Held
from tests.app.shell import make_shell

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


# --------------------------------------------------------------------------- through the shell


def _record(customer: str, anonymous: str | None, event_id: str, offset: int) -> InputRecord:
    doc = {
        "event_id": event_id,
        "customer_id": customer,
        "type": "add_to_cart",
        "occurred_at": "2026-01-01T10:00:00Z",
    }
    if anonymous is not None:
        doc["anonymous_id"] = anonymous
    return InputRecord("journey.clickstream", 0, offset, None, orjson.dumps(doc))


async def test_an_anonymous_event_is_carried_through_the_shell_and_applied_under_its_id() -> None:
    """What works end to end today: decoded, bundled as v3, held, applied as any customer."""
    shell = make_shell()
    await shell.feed([_record("anon-1", "anon-1", "e1", 0), _record("bob", None, "e2", 1)])
    await shell.feed([_record("bob", None, "e3", 2)])
    for sent, _ in shell.bundles.records:  # only a bundle holding an anonymous id is v3
        doc = orjson.loads(sent.value)
        assert doc["v"] == (3 if any("anonymous_id" in e for e in doc["events"]) else 2)
    assert any(orjson.loads(r.value)["v"] == 3 for r, _ in shell.bundles.records)
    carried = [
        a.event
        for r, _ in shell.bundles.records
        for a in decode_envelope(r.value).arrivals
        if a.event.event_id == "e1"
    ]
    assert [e.anonymous_id for e in carried] == ["anon-1"]
    changed = sorted(orjson.loads(r.value)["customer_id"] for r, _ in shell.changes.records)
    assert changed == ["anon-1", "bob"]
    assert not shell.dead_letters.records


async def test_an_invalid_anonymous_id_is_dead_lettered() -> None:
    shell = make_shell()
    await shell.feed([_record("carol", "", "e1", 0)])
    [(letter, _)] = shell.dead_letters.records
    doc = orjson.loads(letter.value)
    assert doc["reason"] == "invalid_field"
    assert "anonymous_id" in doc["detail"]
