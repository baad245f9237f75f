"""CustomerStore over dict tables: a forget tombstones the state and every chunk it had."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from processor.app import store as store_module
from processor.app.store import CustomerStore
from processor.contracts import state as state_codec
from processor.contracts.state import chunk_key, encode_chunk, encode_state
from processor.engine import ChunkSealed, CustomerState, Event, apply, load_model
from processor.engine.erasure import ForgetRequest, forget
from tests.app.shell import DictTable

MODEL = load_model()
T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def test_forget_leaves_no_key_of_the_customer_and_replays_cleanly() -> None:
    states, chunks = DictTable(), DictTable()
    deleted: list[tuple[int, str]] = []
    store = CustomerStore(
        states, chunks, on_state_deleted=lambda p, s: deleted.append((p, s.customer_id))
    )
    state: CustomerState | None = None
    for i in range(70):  # two sealed chunks
        event = Event(f"e{i}", "alice", "clickstream", "c", "page_view", T0 + timedelta(seconds=i))
        step = apply(state, event, MODEL)
        for output in step.outputs:
            if isinstance(output, ChunkSealed):
                await chunks.put(
                    chunk_key("alice", output.index), encode_chunk(output.event_ids), 3
                )
        state = step.state
    assert state is not None
    await store.put(3, None, state)
    await states.put(b"bob", b"{}", 1)

    request = ForgetRequest("alice", "r1")
    before = store.get("alice")
    first = forget(before, request)
    await store.delete(3, "alice", first, before)
    assert set(states.data) == {b"bob"} and chunks.data == {}
    tombstones = {key for key, value, _ in states.writes + chunks.writes if value is None}
    assert tombstones == {b"alice", chunk_key("alice", 0), chunk_key("alice", 1)}
    assert deleted == [(3, "alice")]
    assert "alice" not in state_codec._windows  # nor the encoder's copy of her window

    again = forget(store.get("alice"), request)  # a replayed request
    await store.delete(3, "alice", again, None)
    assert again.confirmation == first.confirmation and deleted == [(3, "alice")]


def test_an_erased_customer_leaves_the_funnel_and_the_timer_counts() -> None:
    from processor.app.funnel import StageCounts
    from processor.app.timers import TimerIndex

    event = Event("e1", "alice", "clickstream", "c", "page_view", T0)
    state = apply(None, event, MODEL).state
    assert state is not None
    counts, timers = StageCounts(), TimerIndex()
    counts.move(2, None, state)
    timers.on_state_written(2, None, state)
    counts.remove(2, state)
    timers.on_state_deleted(2, state)
    assert counts.totals() == {} and timers.pending_total() == 0


def _customer(customer_id: str, events: int) -> CustomerState:
    state: CustomerState | None = None
    for i in range(events):
        occurred = T0 + timedelta(seconds=i)
        event = Event(f"{customer_id}-{i}", customer_id, "clickstream", "c", "page_view", occurred)
        state = apply(state, event, MODEL).state
    assert state is not None
    return state


async def test_get_sees_every_change_of_the_table_under_the_remembered_state() -> None:
    """The store remembers decoded states, but the table's bytes always decide."""
    states = DictTable()
    store = CustomerStore(states, DictTable())
    older, newer = _customer("alice", 3), _customer("alice", 5)
    await store.put(0, None, older)
    assert store.get("alice") == older

    states.data[b"alice"] = encode_state(newer)  # a changelog recovery writes underneath
    assert store.get("alice") == newer
    states.data.pop(b"alice")  # so does a recovered tombstone
    assert store.get("alice") is None

    await store.put(0, None, newer)
    request = ForgetRequest("alice", "r1")
    await store.delete(0, "alice", forget(newer, request), newer)
    assert store.get("alice") is None and "alice" not in store.decoded


async def test_the_remembered_states_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "DECODED_SIZE", 4)
    states = DictTable()
    store = CustomerStore(states, DictTable())
    customers = [_customer(f"c{n}", 2) for n in range(10)]
    for state in customers:
        await store.put(0, None, state)
    assert len(store.decoded) <= 4
    assert [store.get(s.customer_id) for s in customers] == customers
