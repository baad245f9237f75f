"""The watchdog service: its checks run on their own clock, and one that breaks stops the worker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from processor.app.failstop import FailStop
from processor.app.watchdog import Watchdog


async def wait_until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def test_the_check_runs_repeatedly_with_the_time() -> None:
    seen: list[float] = []
    dog = Watchdog(seen.append, FailStop(exit=lambda code: None), interval=0.01)
    await dog.start()
    try:
        await wait_until(lambda: len(seen) >= 3)
    finally:
        await dog.stop()
    assert seen == sorted(seen) and len(set(seen)) == len(seen)


async def test_a_check_that_raises_stops_the_worker_with_the_reason() -> None:
    failstop = FailStop(exit=lambda code: None, exit_after=3600)

    def broken(now: float) -> None:
        raise KeyError("no recovery")

    dog = Watchdog(broken, failstop, interval=0.01)
    await dog.start()
    try:
        await wait_until(lambda: failstop.reason is not None)
    finally:
        await dog.stop()
    assert failstop.reason is not None and "progress check failed" in failstop.reason
    assert "no recovery" in failstop.reason
