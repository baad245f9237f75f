"""Fail-stop: a failed delivery or a failure of ours blocks commits and ends the process."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from processor.app.failstop import EXIT_CODE, Deliveries, FailStop, guard_commits


class Exits:
    def __init__(self) -> None:
        self.codes: list[int] = []
        self.called = asyncio.Event()

    def __call__(self, code: int) -> None:
        self.codes.append(code)
        self.called.set()


class CommitLog:
    """Stands in for the one method of Faust's consumer that guard_commits wraps."""

    def __init__(self) -> None:
        self.committed: list[dict[str, int]] = []

    async def _commit_offsets(self, offsets: Any, start_new_transaction: bool = True) -> bool:
        self.committed.append(dict(offsets))
        return True


async def test_the_first_failure_is_the_reason_and_the_process_exits_non_zero() -> None:
    exits = Exits()
    failstop = FailStop(exit=exits, exit_after=0.01)
    failstop.fail("the engine failed: boom")
    failstop.fail("a later failure")
    assert failstop.reason == "the engine failed: boom"
    await asyncio.wait_for(exits.called.wait(), 5)
    assert exits.codes == [EXIT_CODE]


async def test_commits_wait_for_deliveries_and_stop_after_a_failed_one() -> None:
    failstop = FailStop(exit=Exits(), exit_after=60)
    deliveries = Deliveries(failstop)
    consumer = CommitLog()
    guard_commits(consumer, deliveries)

    ok: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    deliveries.track(ok)
    commit = asyncio.create_task(consumer._commit_offsets({"tp": 10}))
    await asyncio.sleep(0)
    assert not commit.done(), "a commit waits for the deliveries before it"
    ok.set_result(None)
    assert await asyncio.wait_for(commit, 5) is True
    assert consumer.committed == [{"tp": 10}]

    refused: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    deliveries.track(refused)
    refused.set_exception(RuntimeError("MessageSizeTooLarge"))
    assert await consumer._commit_offsets({"tp": 20}) is False
    assert consumer.committed == [{"tp": 10}], "nothing committed past a failed delivery"
    assert failstop.reason is not None and "MessageSizeTooLarge" in failstop.reason


async def test_halt_never_returns() -> None:
    failstop = FailStop(exit=Exits(), exit_after=60)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(failstop.halt(), 0.05)


async def test_deliveries_say_how_many_sends_wait_and_for_how_long() -> None:
    deliveries = Deliveries(FailStop(exit=Exits(), exit_after=60))
    assert deliveries.describe() == "no send waiting for the broker"
    waiting = asyncio.get_running_loop().create_future()
    deliveries.track(waiting)
    assert deliveries.describe().startswith("1 sends waiting for the broker, the oldest for ")
    waiting.set_result(None)
    await asyncio.sleep(0)  # the done callback runs on the next loop pass
    assert deliveries.describe() == "no send waiting for the broker"
