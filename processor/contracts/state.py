"""The table formats: customer state and sealed dedupe chunks, as stored in the changelogs.

The changelog outlives any one release, so the format carries a version (``v``)
and stays compact: it is written once per customer per bundle.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from processor.engine import CustomerState, StageChange, SupportContact, TriggerRef
from processor.engine.core import MergedStageChange
from processor.engine.triggers import Fired, Timer, TriggerFired, TriggerState

STATE_VERSION = 1


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _change_row(change: StageChange) -> list[Any]:
    t = change.trigger
    return [
        change.cycle,
        change.sequence,
        change.from_stage,
        change.to_stage,
        change.changed_at,
        change.previous_stage_entered_at,
        t.event_id,
        t.topic,
        t.type,
        change.model_name,
        change.model_version,
        change.caused_by,
        *(
            [change.late, change.merged_from]
            if isinstance(change, MergedStageChange)
            else [True]
            if change.late
            else []
        ),
    ]


def _change_from_row(customer_id: str, row: list[Any]) -> StageChange:
    (
        cycle,
        sequence,
        from_stage,
        to_stage,
        changed_at,
        prev,
        event_id,
        topic,
        etype,
        mn,
        mv,
        by,
        *rest,
    ) = row
    late = bool(rest and rest[0])
    if len(rest) == 2:
        return MergedStageChange(
            customer_id=customer_id,
            cycle=cycle,
            sequence=sequence,
            from_stage=from_stage,
            to_stage=to_stage,
            changed_at=datetime.fromisoformat(changed_at),
            previous_stage_entered_at=_time(prev),
            trigger=TriggerRef(event_id, topic, etype),
            model_name=mn,
            model_version=mv,
            caused_by=by,
            late=late,
            merged_from=rest[1],
        )
    return StageChange(
        customer_id=customer_id,
        cycle=cycle,
        sequence=sequence,
        from_stage=from_stage,
        to_stage=to_stage,
        changed_at=datetime.fromisoformat(changed_at),
        previous_stage_entered_at=_time(prev),
        trigger=TriggerRef(event_id, topic, etype),
        model_name=mn,
        model_version=mv,
        caused_by=by,
        late=late,
    )


def _triggers_doc(state: TriggerState) -> dict[str, Any] | None:
    if not (state.timers or state.fired or state.recent):
        return None
    return {
        "timers": [[t.rule, t.deadline, t.anchor] for t in state.timers],
        "fired": [[f.rule, f.cycle, f.count, f.last_at] for f in state.fired],
        "recent": [
            [
                t.trigger,
                t.cycle,
                t.occurrence,
                t.stage,
                t.fired_at,
                t.reason,
                list(t.evidence),
                t.model_name,
                t.model_version,
                t.caused_by,
            ]
            for t in state.recent
        ],
    }


def _triggers_from(customer_id: str, doc: dict[str, Any] | None) -> TriggerState:
    if not doc:
        return TriggerState()
    return TriggerState(
        timers=tuple(
            Timer(rule, datetime.fromisoformat(deadline), anchor)
            for rule, deadline, anchor in doc["timers"]
        ),
        fired=tuple(
            Fired(rule, cycle, count, datetime.fromisoformat(last_at))
            for rule, cycle, count, last_at in doc["fired"]
        ),
        recent=tuple(
            TriggerFired(
                trigger=name,
                customer_id=customer_id,
                cycle=cycle,
                occurrence=occurrence,
                stage=stage,
                fired_at=datetime.fromisoformat(fired_at),
                reason=reason,
                evidence=tuple(evidence),
                model_name=mn,
                model_version=mv,
                caused_by=by,
            )
            for name, cycle, occurrence, stage, fired_at, reason, evidence, mn, mv, by in doc[
                "recent"
            ]
        ),
    )


def encode_state(state: CustomerState) -> bytes:
    support = state.last_support
    return orjson.dumps(
        {
            "v": STATE_VERSION,
            "customer_id": state.customer_id,
            "cycle": state.cycle,
            "stage": state.stage,
            "stage_entered_at": state.stage_entered_at,
            "sequence": state.sequence,
            "purchase_at": state.purchase_at,
            "last_event_at": state.last_event_at,
            "applied_count": state.applied_count,
            "recent_event_ids": state.recent_event_ids,
            "recent_changes": [_change_row(c) for c in state.recent_changes],
            "last_support": None
            if support is None
            else [
                support.event_id,
                support.topic,
                support.type,
                support.occurred_at,
                support.after_purchase,
                support.source,
                dict(support.properties),
            ],
            "triggers": _triggers_doc(state.triggers),
        }
    )


def decode_state(raw: bytes) -> CustomerState:
    doc = orjson.loads(raw)
    if doc.get("v") != STATE_VERSION:
        raise ValueError(f"unknown customer state version {doc.get('v')!r}")
    customer_id = doc["customer_id"]
    support = doc["last_support"]
    return CustomerState(
        customer_id=customer_id,
        cycle=doc["cycle"],
        stage=doc["stage"],
        stage_entered_at=datetime.fromisoformat(doc["stage_entered_at"]),
        sequence=doc["sequence"],
        purchase_at=_time(doc["purchase_at"]),
        last_event_at=datetime.fromisoformat(doc["last_event_at"]),
        applied_count=doc["applied_count"],
        recent_event_ids=tuple(doc["recent_event_ids"]),
        recent_changes=tuple(_change_from_row(customer_id, r) for r in doc["recent_changes"]),
        last_support=None
        if support is None
        else SupportContact(
            support[0],
            support[1],
            support[2],
            datetime.fromisoformat(support[3]),
            support[4],
            *support[5:7],
        ),
        triggers=_triggers_from(customer_id, doc.get("triggers")),
    )


def state_version(raw: bytes) -> int:
    """Events applied so far: every write of a customer's state has a higher count."""
    count: int = orjson.loads(raw)["applied_count"]
    return count


def encode_chunk(event_ids: tuple[str, ...]) -> bytes:
    return orjson.dumps(event_ids)


def decode_chunk(raw: bytes) -> frozenset[str]:
    return frozenset(orjson.loads(raw))


def chunk_key(customer_id: str, index: int) -> bytes:
    """Table key of a sealed dedupe chunk; ``\\x1f`` cannot be confused with a customer id end."""
    return f"{customer_id}\x1f{index}".encode()
