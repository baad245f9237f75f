"""Erasure through the shell (dict tables, list sinks): a forget leaves nothing of the customer.

Requests go through the erasure router and the internal topic to the engine, as
in a worker; the tables' writes are kept, so a test can check the changelog's
last record per key as well as the local store.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processor.app.operations import Operations
from processor.app.partitioning import partition_for
from processor.app.pipeline import InputRecord
from processor.app.timers import TimerIndex
from processor.contracts.bundle import Tick, encode_tick
from processor.contracts.state import decode_state
from processor.settings import Settings
from tests.app.shell import DictTable, Shell, consumed, make_shell, outcomes
from tests.app.test_shell import record
from tests.schemas import validator

ERASED = validator("customer-erased.v1.json")
FORGET = validator("internal.forget.v1.json")
REQUESTS = "journey.erasure-requests"


def request(customer: str, request_id: str | None = "r1", *, offset: int = 0) -> InputRecord:
    doc: dict[str, Any] = {"customer_id": customer}
    if request_id is not None:
        doc["request_id"] = request_id
    return InputRecord(REQUESTS, 0, offset, customer.encode(), orjson.dumps(doc))


def live_keys_holding(table: DictTable, customer: str) -> list[bytes]:
    """Keys whose last changelog record is a value, where key or value names the customer."""
    last: dict[bytes, bytes | None] = {}
    for key, value, _ in table.writes:
        last[key] = value
    needle = customer.encode()
    return [k for k, v in last.items() if v is not None and (needle in k or needle in v)]


def holds_anywhere(shell: Shell, customer: str) -> list[str]:
    needle = customer.encode()
    found = []
    for name, table in (("state", shell.states), ("chunks", shell.chunks), ("order", shell.order)):
        found += [f"{name} store {k!r}" for k, v in table.data.items() if needle in k + v]
        found += [f"{name} changelog {k!r}" for k in live_keys_holding(table, customer)]
    return found


async def history(shell: Shell, customer: str, n: int, first_offset: int = 0) -> None:
    events = [record(customer, f"{customer}-{i}", offset=first_offset + i) for i in range(n)]
    events.append(record(customer, f"{customer}-cart", "checkout_started", offset=first_offset + n))
    await shell.feed(events)


async def test_forget_removes_state_chunks_timers_and_funnel_counts() -> None:
    timers = TimerIndex()
    shell = make_shell(timers=timers)
    await history(shell, "hot", 140)  # two sealed chunks, and two timers
    await history(shell, "bob", 3, first_offset=100)
    assert len(shell.chunks.data) >= 2 and timers.pending_total() == 4
    assert sum(shell.counts.totals().values()) == 2

    await shell.forget([request("hot")])

    assert holds_anywhere(shell, "hot") == []
    assert decode_state(shell.states.data[b"bob"]).customer_id == "bob"
    assert timers.pending_total() == 2
    assert sum(shell.counts.totals().values()) == 1
    partition = partition_for("hot", shell.partitions)
    assert {p for k, v, p in shell.states.writes + shell.chunks.writes if v is None} == {partition}
    [(confirmation, by_key)] = shell.erasures.records
    assert by_key is None and confirmation.key == b"hot"
    doc = orjson.loads(confirmation.value)
    ERASED.validate(doc)
    assert (doc["customer_id"], doc["request_id"]) == ("hot", "r1")
    assert dict(confirmation.headers)["ce_type"] == b"io.journey-processor.customer_erased.v1"
    # a due timer of the erased customer fires nothing; the other customer's does
    shell.triggers.records.clear()
    await shell._apply(encode_tick(Tick("tick:1", datetime.now(UTC))), partition)
    assert {r.key for r, _ in shell.triggers.records} == {b"bob"}


async def test_a_replayed_forget_confirms_with_the_same_id_and_bytes() -> None:
    shell = make_shell()
    await history(shell, "alice", 40)
    await shell.forget([request("alice", None, offset=7)])
    writes = len(shell.states.writes)
    await shell.forget([request("alice", None, offset=7)])  # the same record, read again

    first, again = (r for r, _ in shell.erasures.records)
    assert (first.key, first.value, first.headers) == (again.key, again.value, again.headers)
    assert orjson.loads(first.value)["request_id"] == f"{REQUESTS}/0/7"
    partition = partition_for("alice", shell.partitions)
    # the local store may be ahead of the changelog after a crash: the state key again
    assert shell.states.writes[writes:] == [(b"alice", None, partition)]
    assert holds_anywhere(shell, "alice") == []


async def test_events_after_forget_start_a_new_journey() -> None:
    shell = make_shell()
    await shell.feed([record("alice", "a1", "add_to_cart"), record("alice", "a2", offset=1)])
    await shell.forget([request("alice")])
    shell.changes.records.clear()
    # a re-sent old event id is not a duplicate any more: the dedupe window is gone too
    await shell.feed([record("alice", "a1", "page_view", offset=2)])

    [(change, _)] = shell.changes.records
    doc = orjson.loads(change.value)
    assert (doc["from_stage"], doc["to_stage"], doc["cycle"], doc["sequence"]) == (
        None,
        "need_recognition",
        1,
        1,
    )
    assert decode_state(shell.states.data[b"alice"]).applied_count == 1


async def test_held_events_of_the_customer_are_dropped_and_counted_erased() -> None:
    shell = make_shell(partitions=1)
    await shell.feed(
        [
            record("alice", "a1", offset=0),
            record("bob", "b1", offset=1),
            record("alice", "a2", "add_to_cart", offset=2),
        ],
        drain=False,  # the clock has not passed them: all three are held
    )
    assert shell.changes.records == [] and shell.order.data
    await shell.forget([request("alice")])
    assert holds_anywhere(shell, "alice") == []
    await shell.drain()

    assert [r.key for r, _ in shell.changes.records] == [b"bob"]
    assert outcomes(shell.metrics) == {
        ("journey.clickstream", "0", "erased"): 2,
        ("journey.clickstream", "0", "applied"): 1,
        (REQUESTS, "0", "applied"): 1,
    }


async def test_every_request_record_ends_in_one_counted_outcome() -> None:
    shell = make_shell()
    await history(shell, "alice", 3)
    bad = [
        InputRecord(REQUESTS, 1, 0, None, b"not json"),
        InputRecord(REQUESTS, 1, 1, b"x", b"[1]"),
        InputRecord(REQUESTS, 1, 2, b"x", b'{"request_id": "r"}'),
        InputRecord(REQUESTS, 1, 3, b"x", b'{"customer_id": ""}'),
        InputRecord(REQUESTS, 1, 4, b"x", b'{"customer_id": "a", "requested_at": "today"}'),
        InputRecord(REQUESTS, 1, 5, b"x", None),
    ]
    await shell.forget([*bad, request("alice"), request("nobody", offset=1)])

    reasons = [orjson.loads(r.value)["reason"] for r, _ in shell.dead_letters.records]
    assert reasons == [
        "not_json",
        "not_an_object",
        "missing_field",
        "invalid_field",
        "invalid_timestamp",
        "not_json",
    ]
    assert [orjson.loads(r.value)["customer_id"] for r, _ in shell.erasures.records] == [
        "alice",
        "nobody",
    ], "a customer with nothing stored is confirmed too"
    counted: dict[tuple[str, str], float] = defaultdict(float)
    for (topic, partition, _), n in outcomes(shell.metrics).items():
        counted[(topic, partition)] += n
    assert counted == consumed(shell.metrics)
    forgets = [r.value for r, _ in shell.bundles.records if b'"kind"' in r.value]
    assert len(forgets) == 2
    for value in forgets:
        FORGET.validate(orjson.loads(value))


class _ScanTable(DictTable):
    """A state table whose scan lets the engine erase a customer half-way through."""

    def __init__(self, during_scan: Any) -> None:
        super().__init__()
        self.during_scan = during_scan

    def items(self) -> list[tuple[bytes, bytes]]:  # type: ignore[override]
        found = super().items()
        self.during_scan()
        return found


async def test_a_recount_does_not_count_a_customer_erased_during_its_scan() -> None:
    shell = make_shell(partitions=1)
    await history(shell, "alice", 2)
    await history(shell, "bob", 2, first_offset=10)
    settings = Settings(partitions=1)
    assignment = [SimpleNamespace(topic=settings.events_topic, partition=0)]
    app = SimpleNamespace(consumer=SimpleNamespace(assignment=lambda: assignment))

    def erase_alice() -> None:
        state = decode_state(states.data.pop(b"alice"))
        operations.state_deleted(0, state)

    states = _ScanTable(erase_alice)
    states.data = dict(shell.states.data)
    operations = Operations(app, settings, shell.model, shell.metrics, states)  # type: ignore[arg-type]
    await operations.recount()

    assert sum(operations.counts.totals().values()) == 1
    assert operations.counts.by_partition[0]


async def test_the_state_stays_until_the_chunk_tombstones_are_delivered() -> None:
    """A crash between chunks and state must leave the state, which names the chunks."""
    shell = make_shell()
    await history(shell, "hot", 40)

    async def refused() -> bool:
        return False

    shell.applier.settle = refused
    with pytest.raises(RuntimeError, match="not tombstoned"):
        await shell.forget([request("hot")])
    assert b"hot" in shell.states.data and shell.erasures.records == []

    shell.applier.settle = None  # the worker restarted; the request is read again
    await shell.forget([request("hot")])
    assert holds_anywhere(shell, "hot") == []
    assert len(shell.erasures.records) == 1


async def test_no_confirmation_before_every_tombstone_is_delivered() -> None:
    shell = make_shell()
    await history(shell, "alice", 2)  # no sealed chunk: only the state goes

    async def refused() -> bool:
        return False

    shell.applier.settle = refused
    with pytest.raises(RuntimeError, match="not delivered"):
        await shell.forget([request("alice")])
    assert shell.erasures.records == []
    shell.applier.settle = None
    await shell.forget([request("alice")])  # read again after the restart
    [(confirmation, _)] = shell.erasures.records
    assert orjson.loads(confirmation.value)["customer_id"] == "alice"


EVENT_TYPES = ["page_view", "product_view", "add_to_cart", "checkout_started", "order_completed"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.sampled_from(["alice", "bob"]), st.sampled_from(EVENT_TYPES)),
        min_size=1,
        max_size=60,
    ),
    st.integers(min_value=0, max_value=60),
)
async def test_forgetting_a_customer_is_as_if_its_earlier_events_never_came(
    history: list[tuple[str, str]], cut: int
) -> None:
    """Forget alice anywhere in the stream: bob is untouched, alice restarts from what follows."""
    records = [
        record(c, f"{c}-{i}", t, offset=i, when=f"2026-01-01T10:{i:02d}:00Z")
        for i, (c, t) in enumerate(history)
    ]
    cut = min(cut, len(records))
    erased, never = make_shell(partitions=1), make_shell(partitions=1)
    await erased.feed(records[:cut], drain=False)  # some still held when the request comes
    await erased.forget([request("alice")])
    after_forget = len(erased.changes.records)
    await erased.feed(records[cut:])
    await never.feed([r for i, r in enumerate(records) if i >= cut or history[i][0] == "bob"])

    assert erased.states.data == never.states.data
    bob = [r.value for r, _ in erased.changes.records if r.key == b"bob"]
    assert bob == [r.value for r, _ in never.changes.records if r.key == b"bob"]
    alice = [r.value for r, _ in erased.changes.records[after_forget:] if r.key == b"alice"]
    assert alice == [r.value for r, _ in never.changes.records if r.key == b"alice"]
    counted: dict[tuple[str, str], float] = defaultdict(float)
    for (topic, partition, _), n in outcomes(erased.metrics).items():
        counted[(topic, partition)] += n
    assert counted == consumed(erased.metrics)
