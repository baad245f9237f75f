"""The intake's commit rules: what was routed is committed once its sends are confirmed, and
nothing is committed past a failure or after a partition was taken away.

A consumer stand-in records commits and seeks; the loop itself runs against the real
broker in tests/integration (test_pipeline, test_kill_restart, test_intake).
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from aiokafka.errors import CommitFailedError
from aiokafka.structs import TopicPartition

from processor.app.failstop import Deliveries, FailStop
from processor.app.intake import Intake, router_group
from processor.app.pipeline import InputRecord
from processor.settings import Settings

A0 = TopicPartition("journey.clickstream", 0)
A1 = TopicPartition("journey.clickstream", 1)
S0 = TopicPartition("journey.support", 0)


@dataclass
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None = b"c"
    value: bytes | None = b"{}"


def messages(tp: TopicPartition, *offsets: int) -> list[Message]:
    return [Message(tp.topic, tp.partition, o) for o in offsets]


@dataclass
class Consumer:
    """The few aiokafka consumer methods the intake calls outside its loop."""

    assigned: set[TopicPartition] = field(default_factory=lambda: {A0, A1, S0})
    commits: list[dict[TopicPartition, int]] = field(default_factory=list)
    stored: dict[TopicPartition, int] = field(default_factory=dict)
    seeks: dict[TopicPartition, int] = field(default_factory=dict)
    refuse: bool = False

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self.refuse:
            raise CommitFailedError("the group rebalanced")
        self.commits.append(dict(offsets))
        self.stored.update(offsets)

    async def committed(self, tp: TopicPartition) -> int | None:
        return self.stored.get(tp)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks[tp] = offset


class Exits:
    def __init__(self) -> None:
        self.codes: list[int] = []

    def __call__(self, code: int) -> None:
        self.codes.append(code)


class Routes:
    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[InputRecord]] = []
        self.fail = fail

    async def __call__(self, records: list[InputRecord]) -> None:
        if self.fail:
            raise RuntimeError("boom")
        self.batches.append(records)


def intake(route: Routes | None = None) -> tuple[Intake, Consumer, Deliveries]:
    failstop = FailStop(exit=Exits(), exit_after=60)
    deliveries = Deliveries(failstop)
    it = Intake(Settings(), route or Routes(), deliveries, failstop, commit_interval=60)
    consumer = Consumer()
    it.consumer = consumer  # type: ignore[assignment]
    return it, consumer, deliveries


async def stops(coro: Any, failstop: FailStop) -> None:
    """Run a step that must fail-stop: it never returns, and the failure is recorded."""
    task = asyncio.create_task(coro)
    for _ in range(200):
        if failstop.failed:
            break
        await asyncio.sleep(0.01)
    assert failstop.failed
    assert not task.done(), "a failed step makes no further progress"
    task.cancel()


def test_the_intake_has_its_own_group() -> None:
    assert router_group(Settings(app_id="shop")) == "shop-router"


async def test_a_fetch_is_routed_as_one_batch_and_committed_past_its_last_offsets() -> None:
    route = Routes()
    it, consumer, _ = intake(route)
    await it.take({A0: messages(A0, 5, 6, 7), S0: messages(S0, 0)})
    assert [(r.topic, r.partition, r.offset) for r in route.batches[0]] == [
        (A0.topic, 0, 5),
        (A0.topic, 0, 6),
        (A0.topic, 0, 7),
        (S0.topic, 0, 0),
    ]
    assert consumer.commits == [], "routing alone commits nothing"
    async with it.lock:
        await it._commit()
    assert consumer.commits == [{A0: 8, S0: 1}]
    async with it.lock:
        await it._commit()
    assert consumer.commits == [{A0: 8, S0: 1}], "nothing new: no second commit"


async def test_a_commit_waits_until_the_broker_confirmed_every_send() -> None:
    it, consumer, deliveries = intake()
    await it.take({A0: messages(A0, 0)})
    sent: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    deliveries.track(sent)

    async def commit() -> None:
        async with it.lock:
            await it._commit()

    task = asyncio.create_task(commit())
    await asyncio.sleep(0.05)
    assert consumer.commits == [] and not task.done()
    sent.set_result(None)
    await asyncio.wait_for(task, 5)
    assert consumer.commits == [{A0: 1}]


async def test_a_refused_send_stops_the_worker_with_nothing_committed() -> None:
    it, consumer, deliveries = intake()
    await it.take({A0: messages(A0, 0, 1)})
    refused: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    deliveries.track(refused)
    refused.set_exception(RuntimeError("MessageSizeTooLarge"))
    await asyncio.sleep(0)

    async def commit() -> None:
        async with it.lock:
            await it._commit()

    await stops(commit(), it.failstop)
    assert consumer.commits == []
    assert "refused" in (it.failstop.reason or "")


async def test_a_router_failure_stops_the_worker_and_the_batch_is_never_committed() -> None:
    it, consumer, _ = intake(Routes(fail=True))
    await stops(it.take({A0: messages(A0, 0, 1, 2)}), it.failstop)
    assert it.routed == {}
    assert "the router failed" in (it.failstop.reason or "")
    assert consumer.commits == []


async def test_revocation_commits_what_was_routed_of_those_partitions_then_forgets_them() -> None:
    it, consumer, _ = intake()
    await it.take({A0: messages(A0, 0, 1), A1: messages(A1, 3)})
    consumer.assigned.discard(A1)
    await it.revoked([A1])
    assert consumer.commits == [{A1: 4}]
    assert A1 not in it.routed and A1 not in it.committed
    assert it.routed == {A0: 2}, "the partition kept is committed later, as usual"


async def test_a_fetch_for_a_partition_revoked_meanwhile_is_not_routed() -> None:
    route = Routes()
    it, consumer, _ = intake(route)
    consumer.assigned.discard(A1)
    await it.take({A0: messages(A0, 0), A1: messages(A1, 9)})
    assert [(r.partition, r.offset) for r in route.batches[0]] == [(0, 0)]
    assert A1 not in it.routed


async def test_a_commit_the_group_refuses_is_not_a_failure_and_not_recorded() -> None:
    it, consumer, _ = intake()
    await it.take({A0: messages(A0, 0)})
    consumer.refuse = True
    async with it.lock:
        await it._commit()
    assert not it.failstop.failed
    assert it.committed == {}, "the new owner reads them again: at-least-once"


async def test_partitions_the_group_never_committed_start_where_the_faust_router_left_them(
    monkeypatch: Any,
) -> None:
    it, consumer, _ = intake()
    consumer.stored = {A0: 40}

    async def legacy(partitions: Collection[TopicPartition]) -> dict[TopicPartition, int]:
        assert set(partitions) == {A1, S0}, "only partitions without a commit of their own"
        return {A1: 17}

    monkeypatch.setattr(it, "_legacy_offsets", legacy)
    await it.assigned([A0, A1, S0])
    assert it.committed == {A0: 40}
    assert consumer.seeks == {A1: 17}, "S0 has no offset anywhere: the log start (earliest)"


async def test_records_fetched_below_where_the_last_owner_left_a_partition_are_not_routed() -> None:
    """aiokafka may reset a partition with no commit to its log start and fetch from there
    before the seek to the Faust group's offset: those records were routed already."""
    route = Routes()
    it, consumer, _ = intake(route)
    consumer.stored = {A0: 40}

    async def legacy(partitions: Collection[TopicPartition]) -> dict[TopicPartition, int]:
        return {A1: 17}

    it._legacy_offsets = legacy  # type: ignore[method-assign]
    await it.assigned([A0, A1])
    await it.take({A0: messages(A0, 39, 40), A1: messages(A1, 0, 1, 16, 17, 18)})
    assert [(r.partition, r.offset) for r in route.batches[0]] == [(0, 40), (1, 17), (1, 18)]
