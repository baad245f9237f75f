"""The shell's rules, with dict tables and list sinks: limits, accounting, fail-stop edges."""

from __future__ import annotations

import hashlib
from collections import Counter

import orjson
import pytest

from processor.app.partitioning import partition_for
from processor.app.pipeline import InputRecord
from processor.contracts.bundle import decode_envelope
from processor.contracts.limits import Limits
from processor.contracts.state import decode_state
from tests.app.shell import consumed, make_shell, outcomes


def record(
    customer: str,
    event_id: str,
    event_type: str = "page_view",
    *,
    offset: int = 0,
    partition: int = 0,
    topic: str = "journey.clickstream",
    when: str = "2026-01-01T10:00:00Z",
    properties: dict[str, object] | None = None,
) -> InputRecord:
    doc = {
        "event_id": event_id,
        "customer_id": customer,
        "type": event_type,
        "occurred_at": when,
        "properties": properties or {},
    }
    return InputRecord(topic, partition, offset, customer.encode()[:64], orjson.dumps(doc))


async def test_a_record_over_the_size_limit_is_dead_lettered_by_digest() -> None:
    shell = make_shell()
    big = record("alice", "e1", properties={"blob": "x" * 70_000}, offset=41, partition=2)
    await shell.feed([big, record("bob", "e2", offset=42, partition=2)])

    [(letter, _)] = shell.dead_letters.records
    doc = orjson.loads(letter.value)
    assert doc["reason"] == "too_large"
    assert doc["payload"] is None and doc["payload_encoding"] == "omitted"
    assert doc["source"] == {"topic": "journey.clickstream", "partition": 2, "offset": 41}
    assert big.value is not None
    assert doc["original"]["sha256"] == hashlib.sha256(big.value).hexdigest()
    assert doc["original"]["length"] == len(big.value)
    assert letter.key is None and len(letter.value) < 1_000
    assert [orjson.loads(r.value)["customer_id"] for r, _ in shell.changes.records] == ["bob"]


@pytest.mark.parametrize("field", ["event_id", "customer_id", "type"])
async def test_ids_longer_than_the_limit_are_invalid_fields(field: str) -> None:
    shell = make_shell(limits=Limits(max_id_length=16))
    values = {"customer_id": "alice", "event_id": "e1", "type": "page_view"}
    values[field] = "ü" * 9  # 18 UTF-8 bytes
    bad = record(values["customer_id"], values["event_id"], values["type"])
    await shell.feed([bad])

    [(letter, _)] = shell.dead_letters.records
    doc = orjson.loads(letter.value)
    assert doc["reason"] == "invalid_field" and field in doc["detail"]
    assert bad.value is not None and doc["payload"] == bad.value.decode()
    assert shell.changes.records == []


async def test_bundles_are_split_by_bytes_and_keep_every_event_in_order() -> None:
    limits = Limits(max_event_bytes=3_000, max_message_bytes=10_000)
    shell = make_shell(partitions=1, limits=limits)
    records = [
        record(f"c{i}", f"e{i}", offset=i, properties={"pad": "p" * 2_000}) for i in range(30)
    ]
    await shell.feed(records)

    bundles = [r.value for r, _ in shell.bundles.records]
    assert len(bundles) > 1
    assert all(len(b) <= limits.max_message_bytes for b in bundles)
    arrivals = [a for b in bundles for a in decode_envelope(b).arrivals]
    assert [a.event.event_id for a in arrivals] == [f"e{i}" for i in range(30)]
    assert [(a.partition, a.offset) for a in arrivals] == [(0, i) for i in range(30)]
    assert [bool(decode_envelope(b).marks) for b in bundles] == [False] * (len(bundles) - 1) + [
        True
    ], "the batch's marks ride on its last bundle only"
    assert len(shell.changes.records) == 30


async def test_every_record_is_counted_once_against_its_input_partition() -> None:
    shell = make_shell()
    batch = [
        record("alice", "a1", offset=0, partition=0),
        record("alice", "a1", offset=1, partition=0),  # a re-sent id: duplicate
        record("alice", "a2", "no_such_type", offset=2, partition=0),  # ignored
        InputRecord("journey.research", 1, 0, None, b"not json"),  # dead-lettered
        record("bob", "b1", "review_read", offset=1, partition=1, topic="journey.research"),
    ]
    await shell.feed(batch)

    assert outcomes(shell.metrics) == {
        ("journey.clickstream", "0", "applied"): 1,
        ("journey.clickstream", "0", "duplicate"): 1,
        ("journey.clickstream", "0", "ignored"): 1,
        ("journey.research", "1", "dead_lettered"): 1,
        ("journey.research", "1", "applied"): 1,
    }
    assert consumed(shell.metrics) == {
        ("journey.clickstream", "0"): 3,
        ("journey.research", "1"): 2,
    }


async def test_unreadable_state_stops_the_engine_instead_of_dead_lettering() -> None:
    """A store failure is ours: raise (the agent then fail-stops), never a dead letter."""
    shell = make_shell()
    await shell.states.put(b"alice", b"\x00garbage", partition_for("alice", 4))
    with pytest.raises(Exception):  # noqa: B017 - any decoding error will do
        await shell.feed([record("alice", "a1")])
    assert shell.dead_letters.records == []
    assert shell.changes.records == []


async def test_a_replayed_event_writes_the_state_again() -> None:
    """The state may be in the local store but not the changelog: the replay re-sends it."""
    shell = make_shell()
    await shell.feed([record("alice", "a1", "add_to_cart")])
    writes = len(shell.states.writes)
    await shell.feed([record("alice", "a1", "add_to_cart")])

    assert len(shell.states.writes) == writes + 1
    key, value, _ = shell.states.writes[-1]
    assert key == b"alice" and value == shell.states.data[b"alice"]
    # and it re-emitted the same change, byte for byte
    first, again = (r.value for r, _ in shell.changes.records)
    assert first == again


async def test_sealed_dedupe_chunks_go_to_the_customers_partition() -> None:
    shell = make_shell()
    partition = partition_for("hot", 4)
    await shell.feed([record("hot", f"h{i}", offset=i) for i in range(40)])

    chunk_writes = [(k, p) for k, _, p in shell.chunks.writes]
    assert chunk_writes and {p for _, p in chunk_writes} == {partition}
    state = decode_state(shell.states.data[b"hot"])
    assert state.applied_count == 40
    assert Counter(o[2] for o in outcomes(shell.metrics)) == Counter({"applied": 1})
