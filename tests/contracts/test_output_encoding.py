"""The fast output encoders write exactly what the straightforward ones wrote.

Stage changes and triggers are versioned contracts and their ids are content
UUIDv5s that consumers dedupe on: not one byte may move. The reference below is
the encoding as it was before it was made cheaper (isoformat texts, the stdlib's
``uuid5``, headers built field by field); every record must match it in value,
key and headers, in order.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from hypothesis import given
from hypothesis import strategies as st

from processor.contracts.outputs import (
    MERGED_FROM_HEADER,
    STAGE_CHANGED_TYPE,
    TRIGGER_TYPE,
    encode_stage_change,
    encode_trigger,
    rfc3339,
)
from processor.engine import EventRef, StageChange
from processor.engine.triggers import TriggerFired
from processor.engine.vocabulary import STAGE_CHANGE_NAMESPACE, MergedStageChange
from tests.engine.test_triggers import expected_id  # trigger.v2's id, spelled out

# --- the reference: the encoding before it was made cheaper ---------------------------


def old_rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def old_stage_change_id(change: StageChange) -> str:
    previous = change.previous_stage_entered_at
    content = (
        change.customer_id,
        change.cycle,
        change.sequence,
        change.from_stage,
        change.to_stage,
        change.changed_at.astimezone(UTC).isoformat(),
        None if previous is None else previous.astimezone(UTC).isoformat(),
        change.evidence.event_id,
        change.evidence.topic,
        change.evidence.type,
        change.model_name,
        change.model_version,
        change.late,
    )
    return str(uuid.uuid5(STAGE_CHANGE_NAMESPACE, repr(content)))


def old_headers(event_id: str, source: str, ce_type: str, time: str, subject: str) -> Any:
    return [
        ("ce_specversion", b"1.0"),
        ("ce_id", event_id.encode()),
        ("ce_source", source.encode()),
        ("ce_type", ce_type.encode()),
        ("ce_time", time.encode()),
        ("ce_subject", subject.encode()),
        ("content-type", b"application/json"),
    ]


def old_encode_stage_change(change: StageChange, source: str) -> tuple[bytes, bytes, Any]:
    previous = change.previous_stage_entered_at
    document = {
        "id": old_stage_change_id(change),
        "customer_id": change.customer_id,
        "cycle": change.cycle,
        "sequence": change.sequence,
        "from_stage": change.from_stage,
        "to_stage": change.to_stage,
        "changed_at": old_rfc3339(change.changed_at),
        "previous_stage_entered_at": None if previous is None else old_rfc3339(previous),
        "trigger": {
            "event_id": change.evidence.event_id,
            "topic": change.evidence.topic,
            "type": change.evidence.type,
        },
        "model": {"name": change.model_name, "version": change.model_version},
        "late": change.late,
    }
    headers = old_headers(
        document["id"], source, STAGE_CHANGED_TYPE, document["changed_at"], change.customer_id
    )
    if isinstance(change, MergedStageChange):
        headers.append((MERGED_FROM_HEADER, change.merged_from.encode()))
    return change.customer_id.encode(), orjson.dumps(document), headers


def old_encode_trigger(trigger: TriggerFired, source: str) -> tuple[bytes, bytes, Any]:
    document = {
        "id": expected_id(trigger),
        "trigger": trigger.rule,
        "customer_id": trigger.customer_id,
        "cycle": trigger.cycle,
        "occurrence": trigger.occurrence,
        "stage": trigger.stage,
        "fired_at": old_rfc3339(trigger.fired_at),
        "reason": trigger.reason,
        "evidence": list(trigger.evidence),
        "model": {"name": trigger.model_name, "version": trigger.model_version},
    }
    headers = old_headers(
        document["id"], source, TRIGGER_TYPE, document["fired_at"], trigger.customer_id
    )
    return trigger.customer_id.encode(), orjson.dumps(document), headers


# --- strategies -------------------------------------------------------------------------

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12) | st.sampled_from(
    ["", "'", '"', "\\", "it's", '"q"', "\x00\n\t", "ü-3", "\u2028"]
)
"""Anything a string field may hold, and the characters ``repr`` treats specially."""

ZONES = st.sampled_from(
    [
        UTC,
        timezone(timedelta(hours=5, minutes=30)),
        timezone(-timedelta(hours=8)),
        timezone(timedelta(0)),  # UTC by another object
        ZoneInfo("Europe/Berlin"),
    ]
)

MOMENTS = st.datetimes(
    min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31), timezones=ZONES
) | st.datetimes(  # with and without microseconds, whatever the strategy shrinks to
    min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
).map(lambda moment: moment.replace(microsecond=0))


@st.composite
def stage_changes(draw: st.DrawFn) -> StageChange:
    fields: dict[str, Any] = {
        "customer_id": draw(TEXT),
        "cycle": draw(st.integers(1, 10**6)),
        "sequence": draw(st.integers(1, 10**9)),
        "from_stage": draw(st.none() | TEXT),
        "to_stage": draw(TEXT),
        "changed_at": draw(MOMENTS),
        "previous_stage_entered_at": draw(st.none() | MOMENTS),
        "evidence": EventRef(draw(TEXT), draw(TEXT), draw(TEXT)),
        "model_name": draw(TEXT),
        "model_version": draw(TEXT),
        "caused_by": draw(TEXT),
        "late": draw(st.booleans()),
    }
    if draw(st.booleans()):
        return MergedStageChange(**fields, merged_from=draw(TEXT))
    return StageChange(**fields)


@st.composite
def triggers(draw: st.DrawFn) -> TriggerFired:
    return TriggerFired(
        rule=draw(TEXT),
        customer_id=draw(TEXT),
        cycle=draw(st.integers(1, 10**6)),
        occurrence=draw(st.integers(1, 10**6)),
        stage=draw(TEXT),
        fired_at=draw(MOMENTS),
        reason=draw(TEXT),
        evidence=tuple(draw(st.lists(TEXT, max_size=4))),
        model_name=draw(TEXT),
        model_version=draw(TEXT),
        caused_by=draw(TEXT),
    )


SOURCES = TEXT.filter(bool)


# --- the properties ---------------------------------------------------------------------


@given(moment=MOMENTS | st.datetimes(timezones=st.just(UTC)))
def test_rfc3339_is_the_isoformat_text(moment: datetime) -> None:
    assert rfc3339(moment) == old_rfc3339(moment)


@given(change=stage_changes(), source=SOURCES)
def test_a_stage_change_encodes_byte_for_byte_as_before(change: StageChange, source: str) -> None:
    record = encode_stage_change(change, source)
    assert (record.key, record.value, record.headers) == old_encode_stage_change(change, source)
    assert change.id == old_stage_change_id(change)


@given(trigger=triggers(), source=SOURCES)
def test_a_trigger_encodes_byte_for_byte_as_before(trigger: TriggerFired, source: str) -> None:
    record = encode_trigger(trigger, source)
    assert (record.key, record.value, record.headers) == old_encode_trigger(trigger, source)
    assert trigger.id == expected_id(trigger)
