"""The ordering shell with dict tables and a fake clock: what is stored, restored and sent."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import orjson

from processor.app.metrics import Metrics
from processor.app.ordering import (
    HEARTBEAT,
    QUIET_AFTER,
    PartitionOrder,
    Pending,
    RouterClock,
    clock_key,
    held_key,
    order_version,
)
from processor.engine import Event
from processor.engine.ordering import Arrival, InputPartition, Mark, OrderingConfig

T0 = datetime(2026, 3, 1, tzinfo=UTC)
WALL = datetime(2026, 6, 1, tzinfo=UTC)
CONFIG = OrderingConfig(timedelta(seconds=2), 1000, timedelta(seconds=300))
CLICKS: InputPartition = ("journey.clickstream", 0)
SUPPORT: InputPartition = ("journey.support", 0)


class DictTable:
    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.writes: list[bytes] = []

    def get(self, key: bytes, /) -> bytes | None:
        return self.data.get(key)

    def items(self) -> Iterable[tuple[bytes, bytes]]:
        return list(self.data.items())

    async def put(self, key: bytes, value: bytes, partition: int) -> None:
        self.data[key] = value
        self.writes.append(key)

    async def delete(self, key: bytes, partition: int) -> None:
        self.data.pop(key, None)
        self.writes.append(b"-" + key)


def ev(n: int, minutes: float, topic: str = "journey.clickstream") -> Event:
    source = "support" if "support" in topic else "clickstream"
    type_ = "ticket_opened" if source == "support" else "page_view"
    return Event(f"e{n}", f"c{n % 3}", source, topic, type_, T0 + timedelta(minutes=minutes))  # type: ignore[arg-type]


def order(table: DictTable) -> PartitionOrder:
    return PartitionOrder(
        table, CONFIG, lambda: frozenset({CLICKS, SUPPORT}), Metrics(), wall=lambda: WALL
    )


def test_held_events_are_stored_once_per_bundle_and_deleted_at_the_checkpoint_after() -> None:
    table = DictTable()
    shell = order(table)
    arrivals = [Arrival(ev(n, n), 0, n) for n in range(5)]
    released = asyncio.run(shell.accept(2, 40, arrivals, {CLICKS: Mark(T0 + timedelta(hours=1))}))
    assert released == (), "support has not reported yet"
    assert table.writes == [held_key(2, 40), clock_key(2)]
    released = asyncio.run(shell.accept(2, 41, [], {SUPPORT: Mark(T0 + timedelta(minutes=2))}))
    assert [r.event.event_id for r in released] == ["e0", "e1"]
    assert held_key(2, 40) in table.data, "three of its events are still held"
    released = asyncio.run(shell.accept(2, 42, [], {SUPPORT: Mark(T0 + timedelta(hours=1))}))
    assert [r.event.event_id for r in released] == ["e2", "e3", "e4"]
    assert held_key(2, 40) in table.data, "released, but not known to be applied yet"
    asyncio.run(shell.checkpoint(2))  # the engine applied them, the broker confirmed
    assert held_key(2, 40) not in table.data
    assert order_version(table.data[clock_key(2)]) == 4


def test_a_bundle_whose_own_marks_release_some_of_its_events_keeps_the_rest_stored() -> None:
    """Found by the chaos suite (seed 3): the events a bundle's own marks released at once
    counted down its stored record, which was then deleted while one event was still held;
    after the next rebalance that event was gone (its bundle's offset was committed)."""
    table = DictTable()
    first = order(table)
    asyncio.run(first.accept(2, 40, [], {SUPPORT: Mark(T0 + timedelta(minutes=3))}))
    arrivals = [Arrival(ev(n, n), 0, n) for n in range(5)]  # e0..e4 at minutes 0..4
    released = asyncio.run(first.accept(2, 41, arrivals, {CLICKS: Mark(T0 + timedelta(hours=1))}))
    assert [r.event.event_id for r in released] == ["e0", "e1", "e2"]
    assert held_key(2, 41) in table.data, "e3 and e4 are still held: their record stays"
    asyncio.run(first.checkpoint(2))  # e0-e2 applied and delivered
    assert held_key(2, 41) in table.data, "e3 and e4 are still held: their record stays"

    restarted = order(table)  # a restart, or the next owner after a rebalance
    later = asyncio.run(restarted.accept(2, 42, [], {SUPPORT: Mark(T0 + timedelta(hours=1))}))
    assert [r.event.event_id for r in later] == ["e3", "e4"]
    asyncio.run(restarted.checkpoint(2))
    assert held_key(2, 41) not in table.data


def test_a_redelivered_bundle_releasing_what_it_held_deletes_its_record() -> None:
    table = DictTable()
    first = order(table)
    arrivals = [Arrival(ev(n, n), 0, n) for n in range(3)]
    asyncio.run(first.accept(2, 40, arrivals, {CLICKS: Mark(T0 + timedelta(hours=1))}))
    assert held_key(2, 40) in table.data
    again = order(table)  # restarted before the bundle's offset was committed
    released = asyncio.run(
        again.accept(
            2,
            40,
            arrivals,
            {CLICKS: Mark(T0 + timedelta(hours=1)), SUPPORT: Mark(T0 + timedelta(hours=1))},
        )
    )
    assert [r.event.event_id for r in released] == ["e0", "e1", "e2"]


def test_a_bundle_partly_released_at_once_keeps_the_rest_stored() -> None:
    """Seed 2 (run h): a hot customer's bundle whose earlier events the same message's marks
    released at once had its held record deleted while 11 events were still held; a
    rebalance later restored the partition without them, and they were never applied."""
    table = DictTable()
    shell = order(table)
    asyncio.run(shell.accept(2, 40, [], {SUPPORT: Mark(T0 + timedelta(minutes=4))}))
    arrivals = [Arrival(ev(n, n), 0, n) for n in range(5)]
    marks = {CLICKS: Mark(T0 + timedelta(hours=1))}
    released = asyncio.run(shell.accept(2, 41, arrivals, marks))
    assert [r.event.event_id for r in released] == ["e0", "e1", "e2", "e3"]
    assert held_key(2, 41) in table.data, "one of its events is still held"
    asyncio.run(shell.checkpoint(2))
    restarted = order(table)
    released = asyncio.run(restarted.accept(2, 42, [], {SUPPORT: Mark(T0 + timedelta(hours=1))}))
    assert [r.event.event_id for r in released] == ["e4"]
    asyncio.run(restarted.checkpoint(2))
    assert held_key(2, 41) not in table.data


def test_a_redelivered_bundle_released_in_part_keeps_the_rest_stored() -> None:
    """The same message again (a replay), now that the clock releases part of what it held."""
    table = DictTable()
    shell = order(table)
    arrivals = [Arrival(ev(n, n), 0, n) for n in range(5)]
    asyncio.run(shell.accept(2, 40, arrivals, {CLICKS: Mark(T0 + timedelta(hours=1))}))
    assert held_key(2, 40) in table.data
    support = {SUPPORT: Mark(T0 + timedelta(minutes=4))}
    released = asyncio.run(shell.accept(2, 40, arrivals, support))
    assert [r.event.event_id for r in released] == ["e0", "e1", "e2", "e3"]
    assert held_key(2, 40) in table.data, "one of its events is still held"
    asyncio.run(shell.checkpoint(2))  # its record is rewritten with what it still holds
    assert len(orjson.loads(table.data[held_key(2, 40)])) == 1
    restarted = order(table)
    released = asyncio.run(restarted.accept(2, 43, [], {SUPPORT: Mark(T0 + timedelta(hours=1))}))
    assert [r.event.event_id for r in released] == ["e4"]
    asyncio.run(restarted.checkpoint(2))
    assert held_key(2, 40) not in table.data


def test_a_restarted_shell_restores_what_is_held_and_nothing_already_applied() -> None:
    table = DictTable()
    first = order(table)
    arrivals = [Arrival(ev(n, n), 0, n) for n in range(5)]
    asyncio.run(first.accept(1, 7, arrivals, {CLICKS: Mark(T0 + timedelta(hours=1))}))
    asyncio.run(first.accept(1, 8, [], {SUPPORT: Mark(T0 + timedelta(minutes=2, seconds=30))}))
    asyncio.run(first.checkpoint(1))  # e0-e2 applied and delivered
    # SIGKILL; a new process (or the partition's new owner) recovers the table.
    second = order(table)
    assert [h.event.event_id for h in second.state(1).held] == ["e3", "e4"]
    # The bundle is replayed (its offset was not committed): nothing is held twice.
    again = asyncio.run(second.accept(1, 7, arrivals, {}))
    assert [r.why for r in again] == ["late", "late", "late"], "e0-e2 were applied already"
    assert len(second.state(1).held) == 2
    released = asyncio.run(second.accept(1, 9, [], {SUPPORT: Mark(T0 + timedelta(hours=1))}))
    assert [r.event.event_id for r in released] == ["e3", "e4"]
    asyncio.run(second.checkpoint(1))
    assert not [k for k in table.data if k.startswith(b"held:")]


def test_a_crash_before_the_checkpoint_holds_the_released_events_again() -> None:
    """Released events stay in the table until a checkpoint knows them applied and delivered:
    a crash between their release and the delivery of their state loses none of them (the
    engine recognises the ones it did apply as duplicates)."""
    table = DictTable()
    first = order(table)
    arrivals = [Arrival(ev(n, n), 0, n) for n in range(5)]
    asyncio.run(first.accept(1, 7, arrivals, {CLICKS: Mark(T0 + timedelta(hours=1))}))
    released = asyncio.run(
        first.accept(1, 8, [], {SUPPORT: Mark(T0 + timedelta(minutes=2, seconds=30))})
    )
    assert [r.event.event_id for r in released] == ["e0", "e1", "e2"]
    # SIGKILL before the engine's writes for e0-e2 were confirmed.
    second = order(table)
    assert [h.event.event_id for h in second.state(1).held] == ["e0", "e1", "e2", "e3", "e4"]


def test_late_events_come_out_flagged() -> None:
    from processor.contracts.bundle import decode_envelope, encode_ordered_bundle

    table = DictTable()
    shell = order(table)
    marks = {CLICKS: Mark(T0 + timedelta(hours=1)), SUPPORT: Mark(T0 + timedelta(hours=1))}
    asyncio.run(shell.accept(0, 1, [], marks))
    envelope = decode_envelope(encode_ordered_bundle([Arrival(ev(1, 5), 0, 3)], {}))
    released = asyncio.run(shell.release(envelope, 0, 2))
    assert [(e.event_id, e.late, at) for e, at in released] == [("e1", True, (0, 3))]


class Ticking:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_router_claims_a_batch_only_after_sending_and_idles_when_caught_up_and_quiet() -> None:
    mono = Ticking()
    clock = RouterClock(CONFIG, idle_timeout=1.0, wall=lambda: WALL, monotonic=mono)
    clock.reassigned({CLICKS})
    pending = Pending()
    arrival = clock.arrival(ev(1, 10), 0, 41, pending)
    assert not arrival.skewed
    assert clock.marks() == {CLICKS: Mark(None)}, "not claimed before the bundles are sent"
    assert clock.marks(pending)[CLICKS] == Mark(T0 + timedelta(minutes=10) - CONFIG.lateness)
    clock.commit(pending)
    clock.update_idle({CLICKS: (42, None)})
    assert not clock.idle[CLICKS], "caught up, but not quiet yet"
    mono.now += 1.5
    clock.update_idle({CLICKS: (43, None)})
    assert not clock.idle[CLICKS], "quiet, but one more record is waiting"
    clock.update_idle({CLICKS: (42, None)})
    assert clock.idle[CLICKS]
    assert clock.marks()[CLICKS] == Mark(WALL - CONFIG.lateness, True)


def test_a_skewed_event_moves_no_watermark() -> None:
    clock = RouterClock(CONFIG, idle_timeout=1.0, wall=lambda: WALL)
    clock.reassigned({CLICKS})
    pending = Pending()
    far = Event(
        "x",
        "c",
        "clickstream",
        "journey.clickstream",
        "page_view",
        datetime(9998, 1, 1, tzinfo=UTC),
    )
    assert clock.arrival(far, 0, 0, pending).skewed
    clock.commit(pending)
    assert clock.marks() == {CLICKS: Mark(None)}


def test_watermark_bundles_slow_down_on_a_quiet_system() -> None:
    mono = Ticking()
    walls = [WALL]
    clock = RouterClock(CONFIG, idle_timeout=1.0, wall=lambda: walls[0], monotonic=mono)
    clock.reassigned({CLICKS})
    mono.now += 2
    clock.update_idle({CLICKS: (0, None)})
    assert clock.due() is not None, "became idle: sent at once"
    walls[0] += timedelta(seconds=1)
    assert clock.due() is not None, "idle marks follow the wall clock while recently active"
    mono.now += QUIET_AFTER
    walls[0] += timedelta(seconds=1)
    assert clock.due() is not None, "the first heartbeat"
    walls[0] += timedelta(seconds=1)
    assert clock.due() is None, "quiet: only every HEARTBEAT"
    mono.now += HEARTBEAT
    assert clock.due() is not None
