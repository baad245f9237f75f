"""The table formats: customer state and sealed dedupe chunks, as stored in the changelogs.

The changelog outlives any one release, so every format carries a version and
decoding accepts every version ever written: an upgraded worker recovers the
changelog its predecessor wrote. Two versions of the customer state exist:

* **v1**: a JSON object with ``"v": 1`` (so its first byte is ``{``). Still
  written for the rare state v2 cannot hold exactly (a timestamp that is not UTC).
* **v2** (:func:`encode_state`): the byte ``0x02``, the applied-event count as
  8 bytes big-endian (so :func:`state_version` reads it without decoding), then
  msgpack ``[atoms, body]``. ``atoms`` holds every string and timestamp of the
  state once (event ids recur in the dedupe window, the stage changes, the
  timers and the triggers); ``body`` is positional arrays that refer to atoms by
  index. A string that is a canonical UUID (lowercase, hyphenated: the usual
  event id) is stored as its 16 bytes, and a timestamp as msgpack's timestamp
  extension. Nothing is hashed or dropped: decoding gives back the same
  values, to the microsecond, so dedupe stays exact. On the benchmark
  population this is about a third of v1's size.

Sealed dedupe chunks: v1 a JSON array of ids; v2 the byte ``0x02`` and msgpack
of the ids with canonical UUIDs as 16 bytes.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
import orjson

from processor.engine import CustomerState, EventRef, StageChange, SupportContact
from processor.engine.triggers import Fired, Timer, TriggerFired, TriggerState
from processor.engine.vocabulary import MergedStageChange

STATE_VERSION = 2
"""The version :func:`encode_state` writes; :func:`decode_state` reads 1 and 2."""

V1_STATE_VERSION = 1


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _change_row(change: StageChange) -> list[Any]:
    t = change.evidence
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
    fields: dict[str, Any] = {
        "customer_id": customer_id,
        "cycle": cycle,
        "sequence": sequence,
        "from_stage": from_stage,
        "to_stage": to_stage,
        "changed_at": datetime.fromisoformat(changed_at),
        "previous_stage_entered_at": _time(prev),
        "evidence": EventRef(event_id, topic, etype),
        "model_name": mn,
        "model_version": mv,
        "caused_by": by,
        "late": bool(rest and rest[0]),
    }
    if len(rest) == 2:  # an identity merge's change: its anonymous id
        return MergedStageChange(**fields, merged_from=rest[1])
    return StageChange(**fields)


def _triggers_doc(state: TriggerState) -> dict[str, Any] | None:
    if not (state.timers or state.fired or state.recent):
        return None
    return {
        "timers": [[t.rule, t.deadline, t.anchor] for t in state.timers],
        "fired": [[f.rule, f.cycle, f.count, f.last_at] for f in state.fired],
        "recent": [
            [
                t.rule,
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
                rule=name,
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


def encode_state_v1(state: CustomerState) -> bytes:
    """The v1 format (JSON), as releases before v2 wrote it."""
    support = state.last_support
    return orjson.dumps(
        {
            "v": V1_STATE_VERSION,
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


def _decode_v1(raw: bytes) -> CustomerState:
    doc = orjson.loads(raw)
    if not isinstance(doc, dict) or doc.get("v") != V1_STATE_VERSION:
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


# --------------------------------------------------------------------------- v2

_V2 = b"\x02"
_COUNT = struct.Struct(">Q")
_HEADER = len(_V2) + _COUNT.size
_msgpack = msgspec.msgpack.Encoder()
_unpack = msgspec.msgpack.Decoder()


class _NotExact(Exception):
    """The state holds a value v2 would not give back exactly: write v1 instead."""


_MEMO_SIZE = 65_536
"""Entries of each memo below before it is cleared."""
_stored_memo: dict[str, bytes | str] = {}
"""A string as an atom stores it (see :func:`_atom`), for the strings that recur in every
write: stages, topics, rules, customer ids. Dedupe-window ids go through :data:`_windows`."""
_text_memo: dict[bytes, str] = {}


def _stored(text: str) -> bytes | str:
    """The atom of a string, through :data:`_stored_memo`."""
    found = _stored_memo.get(text)
    if found is not None:
        return found
    if len(_stored_memo) >= _MEMO_SIZE:
        _stored_memo.clear()
    stored = _stored_memo[text] = _atom(text)
    return stored


def _atom(text: str) -> bytes | str:
    """The atom of a string: the 16 bytes of a canonical UUID (lowercase, hyphenated), else it."""
    packed = _pack_uuid(text)
    return text if packed is None else packed


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
"""Lowercase and hyphenated: the one form whose text comes back from its 16 bytes."""


def _pack_uuid(text: str) -> bytes | None:
    """The 16 bytes of a canonical UUID, else None.

    One regular expression, then ``bytes.fromhex``: 0.46 us an id, where checking
    the hyphens, then the digits through ``bytes.fromhex`` and back took 1.2 us.
    """
    if _CANONICAL_UUID.fullmatch(text) is None:
        return None
    return bytes.fromhex(text.replace("-", ""))


def _uuid_text(raw: bytes) -> str:
    try:
        return _text_memo[raw]
    except KeyError:
        pass
    if len(_text_memo) >= _MEMO_SIZE:
        _text_memo.clear()
    h = raw.hex()
    text = _text_memo[raw] = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    return text


_WINDOWS_SIZE = 8_192
"""Customers :data:`_windows` holds before it is cleared, as many as the store keeps decoded
states: about 7 MB of atoms at the benchmark's mean window (12 ids), 16 MB were all full."""
_windows: dict[str, tuple[tuple[str, ...], tuple[bytes | str, ...]]] = {}
"""customer id -> the dedupe-window ids last converted for it, and their atoms."""


def _window_atoms(customer_id: str, ids: tuple[str, ...]) -> list[bytes | str]:
    """The atoms of a customer's dedupe-window ids, in order, in a new list.

    Between two writes of a customer its window only grows at the end (until a
    chunk seals, the window plus one id, and a new window starts), so the atoms
    last converted for the customer are kept and only the new ids are converted.
    Looking the whole window up in :data:`_stored_memo` on every write was about
    half of :func:`encode_state` on the benchmark population (the memo held fewer
    ids than the windows in flight, so it was often cleared before an id came
    round again): 24 -> 16 us a state with this and the faster :func:`_pack_uuid`.
    """
    known = _windows.get(customer_id)
    if known is not None and ids[: len(known[0])] == known[0]:  # identity before equality
        atoms = [*known[1], *map(_atom, ids[len(known[0]) :])]
    else:
        atoms = list(map(_atom, ids))
    if len(_windows) >= _WINDOWS_SIZE:
        _windows.clear()
    _windows[customer_id] = (ids, tuple(atoms))
    return atoms


def forget_window(customer_id: str) -> None:
    """Drop what :func:`_window_atoms` keeps of a customer (its state was deleted: erasure)."""
    _windows.pop(customer_id, None)


class _Atoms:
    """Each distinct string and timestamp of one state, numbered in order of first use.

    Strings and timestamps share one index (a string never equals a datetime, so no
    wrapping tuple is needed). That, slots and the memo looked up inline spare about
    0.7 us a state (16.5 -> 15.8 on the benchmark population).
    """

    __slots__ = ("index", "stored")

    def __init__(self) -> None:
        self.stored: list[Any] = []
        self.index: dict[Any, int] = {}

    def text(self, value: str) -> int:
        found = self.index.get(value)
        if found is None:
            found = self.index[value] = len(self.stored)
            stored = _stored_memo.get(value)  # most often there: spare the call
            self.stored.append(_stored(value) if stored is None else stored)
        return found

    def distinct_first(self, customer_id: str, values: tuple[str, ...]) -> bool:
        """Number distinct ``values`` 0..n-1 on an empty table, at C speed; False if not distinct.

        The dedupe window (up to 31 event ids, all distinct) comes first in every
        state: numbering it one ``text`` call at a time was most of the encoder's
        time. Same atoms, same order, so the same bytes.
        """
        if self.stored:
            return False
        index = dict(zip(values, range(len(values)), strict=True))
        if len(index) != len(values):
            return False
        self.index = index
        self.stored = _window_atoms(customer_id, values)
        return True

    def time(self, value: datetime) -> int:
        if value.tzinfo is not UTC:
            raise _NotExact  # msgpack's timestamp is UTC: another offset would come back as UTC
        found = self.index.get(value)
        if found is None:
            found = self.index[value] = len(self.stored)
            self.stored.append(value)
        return found

    def maybe_time(self, value: datetime | None) -> int | None:
        return None if value is None else self.time(value)

    def maybe_text(self, value: str | None) -> int | None:
        return None if value is None else self.text(value)


def encode_state(state: CustomerState) -> bytes:
    """The current format (v2); v1 for a state v2 cannot hold exactly."""
    try:
        body = _body(state)
    except _NotExact:
        return encode_state_v1(state)
    atoms, rest = body
    return _V2 + _COUNT.pack(state.applied_count) + _msgpack.encode([atoms, rest])


def _body(state: CustomerState) -> tuple[list[Any], list[Any]]:
    a = _Atoms()
    t, tt, mt = a.text, a.time, a.maybe_time
    recent: int | list[int]
    if a.distinct_first(state.customer_id, state.recent_event_ids):
        recent = len(state.recent_event_ids)
    else:
        ids = [t(i) for i in state.recent_event_ids]
        recent = len(ids) if ids == list(range(len(ids))) else ids
    changes = [
        [
            c.cycle,
            c.sequence,
            a.maybe_text(c.from_stage),
            t(c.to_stage),
            tt(c.changed_at),
            mt(c.previous_stage_entered_at),
            t(c.evidence.event_id),
            t(c.evidence.topic),
            t(c.evidence.type),
            t(c.model_name),
            t(c.model_version),
            t(c.caused_by),
            c.late,
            *([t(c.merged_from)] if isinstance(c, MergedStageChange) else []),
        ]
        for c in state.recent_changes
    ]
    s = state.last_support
    support = (
        None
        if s is None
        else [
            t(s.event_id),
            t(s.topic),
            t(s.type),
            tt(s.occurred_at),
            t(s.after_purchase),
            t(s.source),
            dict(s.properties) if s.properties else None,
        ]
    )
    trig = state.triggers
    timers = [[t(x.rule), tt(x.deadline), t(x.anchor)] for x in trig.timers]
    fired = [[t(f.rule), f.cycle, f.count, tt(f.last_at)] for f in trig.fired]
    fired_recent = [
        [
            t(r.rule),
            r.cycle,
            r.occurrence,
            t(r.stage),
            tt(r.fired_at),
            t(r.reason),
            [t(e) for e in r.evidence],
            t(r.model_name),
            t(r.model_version),
            t(r.caused_by),
        ]
        for r in trig.recent
    ]
    rest = [
        t(state.customer_id),
        state.cycle,
        t(state.stage),
        tt(state.stage_entered_at),
        state.sequence,
        mt(state.purchase_at),
        tt(state.last_event_at),
        recent,
        changes,
        support,
        timers,
        fired,
        fired_recent,
    ]
    return a.stored, rest


def decode_state(raw: bytes) -> CustomerState:
    """A customer state of any version written so far (v1 JSON or v2 msgpack)."""
    head = raw[:1]
    if head == _V2:
        try:
            return _decode_v2(raw)
        except (msgspec.DecodeError, IndexError, TypeError, ValueError, struct.error) as exc:
            raise ValueError(f"not a v2 customer state: {exc!r}") from exc
    if head == b"{":
        return _decode_v1(raw)
    raise ValueError(f"unknown customer state version (first byte {head!r})")


def _decode_v2(raw: bytes) -> CustomerState:
    (count,) = _COUNT.unpack_from(raw, 1)
    stored, rest = _unpack.decode(raw[_HEADER:])
    atoms: list[Any] = [_uuid_text(v) if type(v) is bytes else v for v in stored]
    get: Callable[[int], Any] = atoms.__getitem__

    def maybe(i: int | None) -> Any:
        return None if i is None else atoms[i]

    (
        customer,
        cycle,
        stage,
        entered,
        sequence,
        purchase,
        last_event,
        recent,
        changes,
        support,
        timers,
        fired,
        fired_recent,
    ) = rest
    customer_id: str = atoms[customer]
    recent_ids = tuple(atoms[:recent]) if type(recent) is int else tuple(map(get, recent))
    return CustomerState(
        customer_id=customer_id,
        cycle=cycle,
        stage=atoms[stage],
        stage_entered_at=atoms[entered],
        sequence=sequence,
        purchase_at=maybe(purchase),
        last_event_at=atoms[last_event],
        applied_count=count,
        recent_event_ids=recent_ids,
        recent_changes=tuple(_v2_change(customer_id, c, atoms, maybe) for c in changes),
        last_support=None
        if support is None
        else SupportContact(
            atoms[support[0]],
            atoms[support[1]],
            atoms[support[2]],
            atoms[support[3]],
            atoms[support[4]],
            atoms[support[5]],
            support[6] if support[6] is not None else {},
        ),
        triggers=TriggerState()
        if not (timers or fired or fired_recent)
        else TriggerState(
            timers=tuple(Timer(atoms[r], atoms[d], atoms[x]) for r, d, x in timers),
            fired=tuple(Fired(atoms[r], c, n, atoms[at]) for r, c, n, at in fired),
            recent=tuple(
                TriggerFired(
                    rule=atoms[f[0]],
                    customer_id=customer_id,
                    cycle=f[1],
                    occurrence=f[2],
                    stage=atoms[f[3]],
                    fired_at=atoms[f[4]],
                    reason=atoms[f[5]],
                    evidence=tuple(map(get, f[6])),
                    model_name=atoms[f[7]],
                    model_version=atoms[f[8]],
                    caused_by=atoms[f[9]],
                )
                for f in fired_recent
            ),
        ),
    )


def _v2_change(
    customer_id: str, c: list[Any], atoms: list[Any], maybe: Callable[[int | None], Any]
) -> StageChange:
    """A v2 change row; a 14th element is the anonymous id of an identity merge."""
    fields: dict[str, Any] = {
        "customer_id": customer_id,
        "cycle": c[0],
        "sequence": c[1],
        "from_stage": maybe(c[2]),
        "to_stage": atoms[c[3]],
        "changed_at": atoms[c[4]],
        "previous_stage_entered_at": maybe(c[5]),
        "evidence": EventRef(atoms[c[6]], atoms[c[7]], atoms[c[8]]),
        "model_name": atoms[c[9]],
        "model_version": atoms[c[10]],
        "caused_by": atoms[c[11]],
        "late": c[12],
    }
    if len(c) > 13:
        return MergedStageChange(**fields, merged_from=atoms[c[13]])
    return StageChange(**fields)


def state_version(raw: bytes) -> int:
    """Events applied so far: every write of a customer's state has a higher count."""
    if raw[:1] == _V2:
        count: int = _COUNT.unpack_from(raw, 1)[0]
        return count
    v1: int = orjson.loads(raw)["applied_count"]
    return v1


# --------------------------------------------------------------------------- chunks


def encode_chunk(event_ids: tuple[str, ...], customer_id: str | None = None) -> bytes:
    """v2: canonical UUIDs as their 16 bytes, any other id as its text.

    A sealed chunk is the customer's last window and one id more: given the
    customer, only that id is converted (see :func:`_window_atoms`).
    """
    if customer_id is None:
        return _V2 + _msgpack.encode(list(map(_atom, event_ids)))
    return _V2 + _msgpack.encode(_window_atoms(customer_id, event_ids))


def encode_chunk_v1(event_ids: tuple[str, ...]) -> bytes:
    return orjson.dumps(event_ids)


def decode_chunk(raw: bytes) -> frozenset[str]:
    """A sealed chunk of either version."""
    if raw[:1] == _V2:
        ids = _unpack.decode(raw[1:])
        return frozenset(_uuid_text(i) if type(i) is bytes else i for i in ids)
    return frozenset(orjson.loads(raw))


def chunk_key(customer_id: str, index: int) -> bytes:
    """Table key of a sealed dedupe chunk; ``\\x1f`` cannot be confused with a customer id end."""
    return f"{customer_id}\x1f{index}".encode()
