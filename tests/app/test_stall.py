"""The stall check: records waiting and a commit that does not move stop the worker."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition

from processor.app.failstop import FailStop
from processor.app.metrics import Metrics
from processor.app.operations import Operations, _await_chain
from processor.engine import load_model
from processor.settings import Settings


class Consumer:
    def __init__(self, tps: list[TopicPartition]) -> None:
        self.tps = tps
        self._committed_offset: dict[TopicPartition, int] = {}
        self.ends: dict[TopicPartition, int] = {}

    def assignment(self) -> set[TopicPartition]:
        return set(self.tps)

    def highwater(self, tp: TopicPartition) -> int:
        return self.ends[tp]


class Recovery:
    """Faust's table recovery as the checks read it: offsets restored and highwaters."""

    def __init__(self) -> None:
        self.in_recovery = False
        self.active_offsets: dict[TopicPartition, int] = {}
        self.active_highwaters: dict[TopicPartition, int] = {}

    def active_remaining(self) -> dict[TopicPartition, int]:
        return {
            tp: end - self.active_offsets.get(tp, 0) for tp, end in self.active_highwaters.items()
        }

    def active_remaining_total(self) -> int:
        return sum(self.active_remaining().values())


def operations(consumer: Consumer) -> tuple[Operations, FailStop]:
    recovery = Recovery()
    app: Any = SimpleNamespace(
        consumer=consumer, rebalancing=False, tables=SimpleNamespace(recovery=recovery)
    )
    failstop = FailStop(exit=lambda code: None, exit_after=3600)
    ops = Operations(
        app, Settings(stall_timeout=60), load_model(), Metrics(), {}, failstop=failstop
    )
    ops.rebalance_completed = True
    return ops, failstop


def test_a_partition_whose_commit_stands_still_with_records_waiting_stops_the_worker() -> None:
    tp = TopicPartition("journey.clickstream", 3)
    consumer = Consumer([tp])
    ops, failstop = operations(consumer)
    consumer.ends[tp], consumer._committed_offset[tp] = 100, 40
    ops.check_progress(0.0)
    ops.check_progress(59.0)
    assert failstop.reason is None
    ops.check_progress(61.0)
    assert failstop.reason is not None and "journey.clickstream[3]" in failstop.reason
    assert "60 records waiting" in failstop.reason


def test_moving_commits_or_nothing_waiting_is_not_a_stall() -> None:
    moving, idle = TopicPartition("journey.research", 0), TopicPartition("journey.support", 1)
    consumer = Consumer([moving, idle])
    ops, failstop = operations(consumer)
    consumer.ends = {moving: 10_000, idle: 7}
    consumer._committed_offset = {moving: 0, idle: 7}
    for second in range(0, 600, 5):
        consumer._committed_offset[moving] = second  # slow, but moving
        ops.check_progress(float(second))
    assert failstop.reason is None


def test_no_stall_is_judged_while_not_ready() -> None:
    tp = TopicPartition("journey.clickstream", 0)
    consumer = Consumer([tp])
    ops, failstop = operations(consumer)
    consumer.ends[tp], consumer._committed_offset[tp] = 100, 0
    ops.check_progress(0.0)
    ops.rebalance_completed = False  # a rebalance: progress stops on purpose
    for second in range(5, 125, 5):
        ops.check_progress(float(second))
    ops.rebalance_completed = True
    for second in range(125, 185, 5):  # judged again from the end of the rebalance
        ops.check_progress(float(second))
    assert failstop.reason is None
    ops.check_progress(190.0)
    assert failstop.reason is not None and "for 65s" in failstop.reason


def test_a_pause_longer_than_the_timeout_is_not_a_stall() -> None:
    """A process that was stopped (SIGSTOP, a suspended VM) measured nothing meanwhile."""
    tp = TopicPartition("journey.clickstream", 0)
    consumer = Consumer([tp])
    ops, failstop = operations(consumer)
    consumer.ends[tp], consumer._committed_offset[tp] = 100, 0
    ops.check_progress(0.0)
    ops.check_progress(90.0)  # woke after 90 s: the clock starts again
    assert failstop.reason is None
    for second in range(95, 160, 5):
        ops.check_progress(float(second))
    assert failstop.reason is None
    ops.check_progress(160.0)
    assert failstop.reason is not None and "for 65s" in failstop.reason


def recovering(ops: Operations, tps: dict[TopicPartition, int]) -> Recovery:
    """Put the worker in table recovery of these changelog partitions, each up to its end."""
    recovery: Recovery = ops.recovery
    recovery.in_recovery = True
    recovery.active_highwaters = dict(tps)
    recovery.active_offsets = {tp: -1 for tp in tps}
    ops.app.rebalancing = True
    return recovery


def test_a_table_recovery_that_reads_nothing_stops_the_worker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The chaos run's hang: a changelog partition to read from offset 0, and no record comes."""
    stuck = TopicPartition("journey-processor-customer-state-changelog", 6)
    ops, failstop = operations(Consumer([]))
    recovering(ops, {stuck: 10})
    for second in range(0, 60, 5):
        ops.check_progress(float(second))
    assert failstop.reason is None
    ops.check_progress(65.0)
    assert failstop.reason is not None
    assert "customer-state-changelog[6]" in failstop.reason
    assert "11 records left" in failstop.reason and "JOURNEY_STALL_TIMEOUT" in failstop.reason
    assert ops.readiness() == (False, f"stopped after a failure: {failstop.reason}")
    # The post-mortem line: what could be read (this fake consumer has no client inside).
    described = [r.message for r in caplog.records if "recovery stalled:" in r.message]
    assert described == [
        "recovery stalled: journey-processor-customer-state-changelog[6] "
        "restored_offset=-1 needed_offset=10 assigned=False"
    ]


def test_a_slow_recovery_that_reads_something_is_not_stopped() -> None:
    """Any record restored resets the partition's clock: a 1M-customer recovery takes minutes."""
    slow, done = (TopicPartition("journey-processor-customer-state-changelog", p) for p in (0, 1))
    ops, failstop = operations(Consumer([]))
    recovery = recovering(ops, {slow: 10_000, done: 50})
    recovery.active_offsets[done] = 50  # this one is restored already: nothing left to read
    for second in range(0, 600, 5):
        recovery.active_offsets[slow] = second * 10
        ops.check_progress(float(second))
    assert failstop.reason is None


def test_recovery_progress_is_judged_again_after_each_recovery() -> None:
    """A partition stuck in one recovery and moved away is not held against the next one."""
    tp = TopicPartition("journey-processor-event-order-changelog", 2)
    ops, failstop = operations(Consumer([]))
    recovery = recovering(ops, {tp: 24})
    for second in range(0, 50, 5):
        ops.check_progress(float(second))
    recovery.in_recovery = False  # this recovery ended (the partition moved on)
    ops.check_progress(50.0)
    recovering(ops, {tp: 24})  # the next rebalance gives it back, to be read again
    for second in range(55, 110, 5):
        ops.check_progress(float(second))
    assert failstop.reason is None
    ops.check_progress(120.0)
    assert failstop.reason is not None and "for 65s" in failstop.reason


async def test_a_stall_names_where_our_waiting_task_waits() -> None:
    """The await chain, not only the task's outermost coroutine: a stall's log says where."""
    gate = asyncio.Event()

    async def inner() -> None:
        await gate.wait()

    async def outer() -> None:
        await inner()

    task = asyncio.create_task(outer())
    await asyncio.sleep(0)
    chain = _await_chain(task.get_coro())
    assert [c.split(" ")[0] for c in chain[:3]] == ["outer", "inner", "wait"]
    gate.set()
    await task
