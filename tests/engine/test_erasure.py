"""The pure erasure decision: it names every chunk in the window, and its confirmation
depends on the request only (a replayed forget re-emits the same id)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from processor.engine import (
    DEDUPE_CHUNK,
    DEDUPE_KEEP_CHUNKS,
    CustomerState,
    Event,
    apply,
    load_model,
)
from processor.engine.erasure import ForgetRequest, forget

MODEL = load_model()
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def state_after(n: int) -> CustomerState | None:
    state: CustomerState | None = None
    for i in range(n):
        event = Event(f"e{i}", "alice", "clickstream", "c", "page_view", T0 + timedelta(seconds=i))
        state = apply(state, event, MODEL).state
    return state


@given(st.integers(min_value=1, max_value=DEDUPE_CHUNK * (DEDUPE_KEEP_CHUNKS + 3)))
def test_forget_names_every_sealed_chunk_in_the_window(n: int) -> None:
    state = state_after(n)
    decision = forget(state, ForgetRequest("alice", "r1"))
    sealed = n // DEDUPE_CHUNK
    assert decision.had_state
    assert decision.chunks == tuple(range(max(0, sealed - DEDUPE_KEEP_CHUNKS), sealed))


@given(st.integers(min_value=0, max_value=80), st.text(min_size=1, max_size=20))
def test_a_replayed_forget_confirms_with_the_same_id(n: int, request_id: str) -> None:
    request = ForgetRequest("alice", request_id, T0)
    first = forget(state_after(n) if n else None, request)
    again = forget(None, request)  # the state is gone once the first forget was applied
    assert first.confirmation == again.confirmation
    assert first.confirmation.id == again.confirmation.id
    assert again.chunks == () and not again.had_state


def test_different_requests_or_customers_have_different_ids() -> None:
    ids = {
        forget(None, ForgetRequest(c, r)).confirmation.id
        for c in ("alice", "bob")
        for r in ("r1", "r2")
    }
    assert len(ids) == 4
