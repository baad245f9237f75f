"""The zombie fence: a process woken past its session sends and commits nothing it held."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.producer.sender import Sender

from processor.app import fence
from processor.app.failstop import EXIT_CODE, FailStop
from processor.app.inflight import Finished, FreezeWatch


class Exits:
    def __init__(self) -> None:
        self.codes: list[int] = []

    def __call__(self, code: int) -> None:
        self.codes.append(code)


class Reached(Exception):
    """The wrapped aiokafka method ran (its stand-in ``self`` stops it right away)."""


class StandIn:
    """A ``self`` (or an argument) for aiokafka's methods: any attribute touched raises Reached."""

    def __getattr__(self, name: str) -> Any:
        raise Reached(name)


OFFSETS = {StandIn(): StandIn()}  # the commit reads tp.topic first


@pytest.fixture
def zombie() -> Iterator[tuple[FreezeWatch, Exits]]:
    """The worker's check, as create_app builds it, installed as the CLI installs it."""
    watch = FreezeWatch(limit=6.0)
    watch.started = True  # no thread: the test says what it saw
    finished, exits = Finished(watch), Exits()
    failstop = FailStop(exit=exits, exit_after=60)

    def check() -> None:
        if finished.frozen():
            failstop.stop_now("stopped longer than the session")

    fence.install(check)
    yield watch, exits
    fence.uninstall()


async def test_a_produce_request_after_a_freeze_is_never_sent(zombie) -> None:
    """Chaos seed 1: what the producer held at a SIGSTOP went out on waking, after the
    new owner's writes (the changelog went back, a sequence got two payloads)."""
    watch, exits = zombie
    watch.last -= 9.0  # stopped 9 s, and the watch thread has not looked since
    with pytest.raises(SystemExit):
        await Sender._send_produce_req(StandIn(), 0, {"tp": "batch"})
    assert exits.codes == [EXIT_CODE]


async def test_an_offset_commit_after_a_freeze_is_never_sent(zombie) -> None:
    watch, exits = zombie
    watch.seen(8.8)  # the thread saw it first this time
    with pytest.raises(SystemExit):
        await GroupCoordinator._do_commit_offsets(StandIn(), {"tp"}, OFFSETS)
    assert exits.codes == [EXIT_CODE]


async def test_a_process_that_was_never_frozen_sends_and_commits(zombie) -> None:
    watch, exits = zombie
    watch.seen(0.5)
    with pytest.raises(Reached):
        await Sender._send_produce_req(StandIn(), 0, {"tp": "batch"})
    with pytest.raises(Reached):
        await GroupCoordinator._do_commit_offsets(StandIn(), {"tp"}, OFFSETS)
    assert exits.codes == []


async def test_uninstall_puts_aiokafka_back() -> None:
    send, commit = Sender._send_produce_req, GroupCoordinator._do_commit_offsets
    fence.install(lambda: None)
    assert Sender._send_produce_req is not send
    fence.install(lambda: None)  # again: wrapped once, only the check replaced
    fence.uninstall()
    assert Sender._send_produce_req is send
    assert GroupCoordinator._do_commit_offsets is commit
