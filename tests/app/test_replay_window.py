"""A replay from an old committed offset must not apply a hot customer's events again.

The engine recognises an event only while it is among its customer's last 1,024
applied ids. The chaos suite (seed 2) saw a worker replay about 25 s of a hot
customer's partition after a pause, from a committed offset far behind what had
been applied: 15 events older than the window were applied again (1,215 applied
for 1,200 events, one cycle too many). Here the same with dict tables: one
customer's 1,200 events go through the router and the engine, then a fresh
engine on the same (delivered) tables replays every bundle from offset 0, as a
worker does when nothing of the partition was committed. The replay markers of
``processor/app/ordering.py`` make that replay apply nothing again; without
them (a bound no partition reaches) it over-applies.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from processor.app.metrics import Metrics
from processor.app.ordering import REPLAY_BOUND, PartitionOrder, clock_key
from processor.app.pipeline import Applier, InputRecord
from processor.app.timers import TimerIndex
from processor.contracts.bundle import encode_ordered_bundle
from processor.contracts.state import decode_state
from processor.engine import DEDUPE_CHUNK, DEDUPE_KEEP_CHUNKS, CustomerState
from processor.engine.ordering import Mark, OrderingConfig
from tests.app.shell import DictTable, Shell, Sink, make_shell

EVENTS = 1200
BATCH = 40
TYPES = ("product_view", "add_to_cart", "checkout_started", "order_completed", "page_view")
T0 = datetime(2026, 3, 17, 9, 0, tzinfo=UTC)

Logged = tuple[int, bytes, float]
"""A message of the internal partition: offset, value, create time."""


def hot_records() -> list[list[InputRecord]]:
    """One customer's events in router batches, each a minute after the one before."""
    batches = []
    for start in range(0, EVENTS, BATCH):
        batch = []
        for n in range(start, start + BATCH):
            doc = {
                "event_id": f"e{n}",
                "customer_id": "hot",
                "type": TYPES[n % len(TYPES)],
                "occurred_at": (T0 + timedelta(minutes=n)).isoformat(),
                "properties": {},
            }
            batch.append(InputRecord("journey.clickstream", 0, n, b"hot", orjson.dumps(doc)))
        batches.append(batch)
    return batches


def engine_on(shell: Shell, order: PartitionOrder) -> tuple[Applier, Sink]:
    """A fresh engine (a restarted or new owner) on the shell's tables, as recovered."""
    changes = Sink()
    engine = Applier(
        model=shell.model,
        states=shell.states,
        chunks=shell.chunks,
        send_change=changes,
        send_trigger=Sink(),
        send_dead_letter=Sink(),
        ce_source="/journey-processor/test",
        metrics=Metrics(),
        timers=TimerIndex(),
        ordering=order,
    )
    return engine, changes


def ordering(shell: Shell, bound: int) -> PartitionOrder:
    config = OrderingConfig(timedelta(seconds=2), 20_000, timedelta(seconds=300))
    clock = shell.router.clock
    return PartitionOrder(
        shell.order, config, lambda: frozenset(clock.seen), Metrics(), replay_bound=bound
    )


async def apply(engine: Applier, message: Logged) -> None:
    offset, value, created = message
    await engine.apply_bundle(value, InputRecord("events", 0, offset, None, None, created))


async def first_pass(bound: int) -> tuple[Shell, list[Logged]]:
    """Route and apply every batch, then mark the input idle; every message logged."""
    shell = make_shell(partitions=1)
    engine, _ = engine_on(shell, ordering(shell, bound))
    log: list[Logged] = []
    for batch in hot_records():
        start = len(shell.bundles.records)
        await shell.router.route(batch)
        for record, _ in shell.bundles.records[start:]:
            log.append((len(log), record.value, time.time()))
            await apply(engine, log[-1])
    log.append((len(log), idle_marks(shell), time.time()))  # the input is caught up
    await apply(engine, log[-1])
    return shell, log


def idle_marks(shell: Shell) -> bytes:
    """A watermark bundle saying every input partition is caught up: releases everything."""
    marks = {tp: Mark(datetime.now(UTC), True) for tp in shell.router.clock.seen}
    return encode_ordered_bundle([], marks)


def hot(shell: Shell) -> CustomerState:
    raw = shell.states.get(b"hot")
    assert raw is not None
    return decode_state(raw)


def test_the_window_is_smaller_than_the_hot_customers_history() -> None:
    assert DEDUPE_CHUNK * DEDUPE_KEEP_CHUNKS < EVENTS  # else nothing here could fail
    assert REPLAY_BOUND < DEDUPE_CHUNK * DEDUPE_KEEP_CHUNKS


async def test_a_replay_from_offset_zero_applies_nothing_again() -> None:
    shell, log = await first_pass(REPLAY_BOUND)
    before = hot(shell)
    assert before.applied_count == EVENTS
    marker = orjson.loads(shell.order.data[clock_key(0)])["through"]
    assert marker[0] >= len(log) - 1 - EVENTS // BATCH  # written as the bound was reached

    order = ordering(shell, REPLAY_BOUND)
    engine, changes = engine_on(shell, order)
    for message in log:  # nothing was committed: the new owner starts at offset 0
        await apply(engine, message)

    after = hot(shell)
    assert (after.applied_count, after.sequence, after.cycle) == (
        before.applied_count,
        before.sequence,
        before.cycle,
    )
    sequences = [orjson.loads(r.value)["sequence"] for r, _ in changes.records]
    assert all(s <= before.sequence for s in sequences)  # re-emissions only, nothing new
    skipped = order.metrics.replay_skipped._value.get()
    assert EVENTS - REPLAY_BOUND - BATCH <= skipped < EVENTS  # the rest was recognised


async def test_without_markers_the_same_replay_applies_old_events_again() -> None:
    """The failure the markers prevent: a bound no partition reaches writes none."""
    shell, log = await first_pass(10**9)
    assert hot(shell).applied_count == EVENTS
    engine, _ = engine_on(shell, ordering(shell, 10**9))
    for message in log:
        await apply(engine, message)
    assert hot(shell).applied_count > EVENTS


async def test_a_recreated_topic_is_not_skipped_under_an_old_marker() -> None:
    """Same offsets, created after the marker was written: new messages, applied."""
    shell, _ = await first_pass(REPLAY_BOUND)
    engine, _ = engine_on(shell, ordering(shell, REPLAY_BOUND))
    later = time.time() + 60
    doc = {
        "event_id": "new-1",
        "customer_id": "hot",
        "type": "page_view",
        "occurred_at": (T0 + timedelta(days=30)).isoformat(),
        "properties": {},
    }
    start = len(shell.bundles.records)
    await shell.router.route([InputRecord("journey.clickstream", 0, 0, b"hot", orjson.dumps(doc))])
    (record, _), *_ = shell.bundles.records[start:]
    await apply(engine, (0, record.value, later))
    await apply(engine, (1, idle_marks(shell), later))
    assert hot(shell).applied_count == EVENTS + 1


async def test_a_failed_delivery_writes_no_marker() -> None:
    shell = make_shell(partitions=1)
    config = OrderingConfig(timedelta(seconds=2), 20_000, timedelta(seconds=300))
    inputs = frozenset({("journey.clickstream", 0)})

    async def failed() -> bool:
        return False

    table = DictTable()
    order = PartitionOrder(table, config, lambda: inputs, Metrics(), settle=failed, replay_bound=1)
    engine, _ = engine_on(shell, order)
    with pytest.raises(RuntimeError, match="replay marker"):
        offset = 0
        for batch in hot_records():
            start = len(shell.bundles.records)
            await shell.router.route(batch)
            for record, _ in shell.bundles.records[start:]:
                await apply(engine, (offset, record.value, time.time()))
                offset += 1
    assert offset > 0  # it failed on a later message, the first one that needed a marker
    assert all(b"through" not in value for _, value in table.items())


async def test_markers_hold_across_owners_whose_commits_never_land() -> None:
    """Chaos seed 3: the partition changed hands every few seconds and its commits never
    landed, so each owner read it again from an old offset; a replay from there then applied
    a hot customer's 1,200 events again (2,400). Here a new owner every 5 new messages, each
    starting where nothing was committed (offset 0), and a last replay from offset 0."""
    shell = make_shell(partitions=1)
    log: list[Logged] = []
    for n, batch in enumerate(hot_records()):
        if n % 5 == 0:  # a rebalance: the new owner starts at the committed offset, 0
            engine, _ = engine_on(shell, ordering(shell, REPLAY_BOUND))
            for message in log:
                await apply(engine, message)
        start = len(shell.bundles.records)
        await shell.router.route(batch)
        for record, _ in shell.bundles.records[start:]:
            log.append((len(log), record.value, time.time()))
            await apply(engine, log[-1])
        assert hot(shell).applied_count <= (n + 1) * BATCH  # never more than it was sent
    log.append((len(log), idle_marks(shell), time.time()))
    await apply(engine, log[-1])
    assert hot(shell).applied_count == EVENTS

    engine, _ = engine_on(shell, ordering(shell, REPLAY_BOUND))
    for message in log:
        await apply(engine, message)
    assert hot(shell).applied_count == EVENTS


async def test_a_marker_names_only_messages_processed_in_a_row() -> None:
    """A message buffered before a seek back can be processed before the ones below it:
    a marker written then must not vouch for those (a replay would skip them unapplied)."""
    shell = make_shell(partitions=1)
    order = ordering(shell, REPLAY_BOUND)
    order.processed(0, 50)  # out of order: 10..49 not processed yet
    order.processed(0, 51)
    assert order.run[0] == (50, 51)
    order.processed(0, 10)  # the seek back
    assert order.run[0] == (10, 10)
    order.processed(0, 11)
    order.processed(0, 11)  # again: nothing changes
    assert order.run[0] == (10, 11)


SILENT = ("journey.support", 0)
"""An input partition that has not reported yet: the hot customer's events stay held."""


async def test_a_crash_between_a_release_and_its_state_writes_loses_no_event() -> None:
    """Found by a code read (issue 8): the records of held events were deleted, and the clock
    moved past them, before the engine applied what they released. Those writes go to the
    event-order changelog, the engine's to others: a crash that delivered the first and not
    the second lost the events. Here the event-order writes are all delivered, the state and
    chunk writes of the releasing message are lost, and the message is read again (its offset
    was not committed)."""
    shell = make_shell(partitions=1)
    config = OrderingConfig(timedelta(seconds=2), 20_000, timedelta(seconds=300))
    clock = shell.router.clock

    def order() -> PartitionOrder:
        inputs = lambda: frozenset({*clock.seen, SILENT})  # noqa: E731
        return PartitionOrder(shell.order, config, inputs, Metrics())

    engine, _ = engine_on(shell, order())
    offset = 0
    for batch in hot_records()[:5]:
        start = len(shell.bundles.records)
        await shell.router.route(batch)
        for record, _ in shell.bundles.records[start:]:
            await apply(engine, (offset, record.value, time.time()))
            offset += 1
    assert shell.states.get(b"hot") is None, "all 200 events are held"
    marks = {tp: Mark(datetime.now(UTC), True) for tp in {*clock.seen, SILENT}}
    release_all: Logged = (offset, encode_ordered_bundle([], marks), time.time())
    states, chunks = dict(shell.states.data), dict(shell.chunks.data)
    await apply(engine, release_all)
    assert hot(shell).applied_count == 5 * BATCH

    # SIGKILL: what the event-order table wrote was delivered, the engine's writes were not.
    shell.states.data = states
    shell.chunks.data = chunks
    engine, _ = engine_on(shell, order())
    await apply(engine, release_all)
    assert hot(shell).applied_count == 5 * BATCH


async def test_a_marker_reaches_down_to_the_commit_its_session_started_from() -> None:
    """Seed 2 (an experiment): each session started at the committed offset, so each marker's
    range began there and did not join the one before; then the commit was gone (the embedded
    broker's groups can lose it) and a replay from offset 0 applied the records under every
    range again. Everything below a commit was processed: the range reaches down to 0."""
    shell = make_shell(partitions=1)
    log: list[Logged] = []
    commit: list[int | None] = [None]

    def new_owner() -> PartitionOrder:
        config = OrderingConfig(timedelta(seconds=2), 20_000, timedelta(seconds=300))
        clock = shell.router.clock
        return PartitionOrder(
            shell.order, config, lambda: frozenset(clock.seen), Metrics(),
            committed=lambda partition: commit[0],
        )  # fmt: skip

    for n, batch in enumerate(hot_records()):
        if n % 7 == 0:  # a rebalance: the owner before committed everything it processed
            commit[0] = len(log) or None
            engine, _ = engine_on(shell, new_owner())
        start = len(shell.bundles.records)
        await shell.router.route(batch)
        for record, _ in shell.bundles.records[start:]:
            log.append((len(log), record.value, time.time()))
            await apply(engine, log[-1])
    log.append((len(log), idle_marks(shell), time.time()))
    await apply(engine, log[-1])
    assert hot(shell).applied_count == EVENTS

    commit[0] = None  # the commit is lost: the next owner reads the partition from 0
    engine, _ = engine_on(shell, new_owner())
    for message in log:
        await apply(engine, message)
    assert hot(shell).applied_count == EVENTS


async def test_a_later_marker_not_reaching_zero_keeps_what_the_earlier_one_vouched_for() -> None:
    """Chaos seed 2 (long run): owners whose sessions started where no commit was known each
    marked only their own range, and a marker from 0 was replaced by one from offset 553;
    then the commit was gone again and a replay from offset 0 applied the hot customer's
    first 1,615 events a second time. Here owner A marks from 0, owner C applies two batches
    and is killed before its next marker, owner B starts after C with no commit known, and a
    last owner replays everything from offset 0."""
    shell = make_shell(partitions=1)
    log: list[Logged] = []
    batches = hot_records()

    async def run(engine: Applier, these: list[list[InputRecord]]) -> None:
        for batch in these:
            start = len(shell.bundles.records)
            await shell.router.route(batch)
            for record, _ in shell.bundles.records[start:]:
                log.append((len(log), record.value, time.time()))
                await apply(engine, log[-1])

    a, _ = engine_on(shell, ordering(shell, REPLAY_BOUND))
    await run(a, batches[:15])
    reach = orjson.loads(shell.order.data[clock_key(0)])["through"]
    assert reach[2] == 0  # A's marker vouches from offset 0
    c, _ = engine_on(shell, ordering(shell, 10**9))  # writes no marker before it dies
    await run(c, batches[15:17])
    b, _ = engine_on(shell, ordering(shell, REPLAY_BOUND))
    await run(b, batches[17:])
    log.append((len(log), idle_marks(shell), time.time()))
    await apply(b, log[-1])
    assert hot(shell).applied_count == EVENTS
    clock = orjson.loads(shell.order.data[clock_key(0)])
    assert clock["through"][2] > 0, "B's marker starts where B did"
    assert clock["floor"][0] >= reach[0], "what A vouched for is kept beside it"

    last, _ = engine_on(shell, ordering(shell, REPLAY_BOUND))
    for message in log:  # the commit is lost: the last owner reads the partition from 0
        await apply(last, message)
    assert hot(shell).applied_count == EVENTS
