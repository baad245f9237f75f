"""The stall check: records waiting and a commit that does not move stop the worker."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

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


def operations(consumer: Consumer) -> tuple[Operations, FailStop]:
    recovery = SimpleNamespace(in_recovery=False, active_remaining_total=lambda: 0)
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
    ops.check_progress(120.0)
    ops.rebalance_completed = True
    ops.check_progress(150.0)
    assert failstop.reason is None


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
