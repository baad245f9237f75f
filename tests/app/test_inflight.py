"""Only records an agent finished become committable (processor/app/inflight.py).

Faust's own ``Consumer.ack`` and ``Consumer._new_offset`` run here on a bare
object that has just the attributes they use, with Faust's real messages, so
the offsets below are the ones Faust would commit.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import MethodType, SimpleNamespace
from typing import Any

import pytest
from faust.transport.consumer import Consumer
from faust.types.tuples import TP, ConsumerMessage
from intervaltree import IntervalTree

from processor.app.inflight import Finished, FreezeWatch, ack_only_finished
from processor.app.redelivery import guard_committed_heads

EVENTS = "app-events-by-customer"
OTHER = "app-__assignor-__leader"


def consumer(committed: int | None = None) -> Any:
    """The state Faust's ack and _new_offset read and write, and those two methods."""
    fake = SimpleNamespace(
        app=SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda topic: True)),
        _committed_offset=defaultdict(lambda: committed),
        _acked=defaultdict(list),
        _acked_index=defaultdict(set),
        _gap=defaultdict(IntervalTree),
        _unacked_messages=set(),
        _n_acked=0,
        _waiting_for_ack=None,
    )
    fake.ack = MethodType(Consumer.ack, fake)
    fake._new_offset = MethodType(Consumer._new_offset, fake)
    return fake


def message(offset: int, topic: str = EVENTS) -> ConsumerMessage:
    return ConsumerMessage(topic, 0, offset, 0.0, 0, [], None, b"{}", None, tp=TP(topic, 0))


def stream_ack(faust: Any, m: ConsumerMessage) -> None:
    """What Faust's Stream does after an event, and for an event it skipped: ``event.ack()``."""
    m.ack(faust)


async def agent(finished: Finished, faust: Any, m: ConsumerMessage, body: Any) -> None:
    """An agent body for one record, as factory.py runs it; the stream acks it afterwards."""
    faust._unacked_messages.add(m)
    try:
        with finished.guard((m,)):
            await body()
    finally:
        stream_ack(faust, m)  # Faust's ``finally`` around ``yield``


async def done() -> None:
    await asyncio.sleep(0)


TP0 = TP(EVENTS, 0)


def test_faust_alone_commits_past_a_record_it_skipped() -> None:
    """The loss this guards against: a record skipped while the flow was suspended (a
    rebalance, the stop after SIGTERM) is acked like a processed one."""
    faust = consumer(committed=5)
    for m in (message(5), message(6)):
        stream_ack(faust, m)  # 5 processed, 6 skipped: both acked
    assert faust._new_offset(TP0) == 7


def test_a_skipped_record_stops_the_commit_below_it() -> None:
    faust, finished = consumer(committed=5), Finished()
    ack_only_finished(faust, finished, {EVENTS})
    asyncio.run(agent(finished, faust, message(5), done))
    stream_ack(faust, message(6))  # skipped: no agent body ran for it
    asyncio.run(agent(finished, faust, message(7), done))

    assert faust._new_offset(TP0) == 6  # 5 is done; 6 is read again by the next owner
    assert finished.dropped == 1
    assert faust._new_offset(TP0) is None  # and nothing passes the hole later


def test_a_body_interrupted_by_a_cancellation_is_not_committed() -> None:
    faust, finished = consumer(committed=10), Finished()
    ack_only_finished(faust, finished, {EVENTS})
    interrupted = message(10)

    async def cancelled_midway() -> None:
        await done()
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(agent(finished, faust, interrupted, cancelled_midway))

    assert faust._new_offset(TP0) is None
    assert interrupted.acked  # so Faust's wait_empty does not wait for it forever
    assert interrupted not in faust._unacked_messages


def test_a_body_that_failed_is_not_committed() -> None:
    """The agent's fail-stop handler never returns; an exception that escapes is the same."""
    faust, finished = consumer(committed=3), Finished()
    ack_only_finished(faust, finished, {EVENTS})

    async def fails() -> None:
        raise RuntimeError("storage down")

    with pytest.raises(RuntimeError):
        asyncio.run(agent(finished, faust, message(3), fails))
    assert faust._new_offset(TP0) is None


def test_finished_records_commit_as_before_and_are_forgotten() -> None:
    faust, finished = consumer(committed=None), Finished()
    ack_only_finished(faust, finished, {EVENTS})
    for offset in range(4):
        asyncio.run(agent(finished, faust, message(offset), done))
    assert faust._new_offset(TP0) == 4
    assert finished.pending == set()
    assert finished.dropped == 0


def test_a_batch_counts_once_its_body_returned() -> None:
    """The router's take_events batch: the buffer is acked after the body, record by record."""
    faust, finished = consumer(committed=0), Finished()
    ack_only_finished(faust, finished, {EVENTS})
    batch = [message(n) for n in range(3)]
    with finished.guard(batch):
        pass
    for m in batch:
        stream_ack(faust, m)
    assert faust._new_offset(TP0) == 3


def test_a_record_read_again_after_a_seek_is_committed_once_finished() -> None:
    faust, finished = consumer(committed=5), Finished()
    ack_only_finished(faust, finished, {EVENTS})
    stream_ack(faust, message(5))  # skipped during the rebalance
    assert faust._new_offset(TP0) is None
    asyncio.run(agent(finished, faust, message(5), done))  # fetched again from the commit
    assert faust._new_offset(TP0) == 6


def test_other_topics_are_acked_as_faust_does() -> None:
    faust, finished = consumer(committed=None), Finished()
    ack_only_finished(faust, finished, {EVENTS})
    stream_ack(faust, message(0, OTHER))
    assert faust._new_offset(TP(OTHER, 0)) == 1


# --------------------------------------------------------------------------- once per assignment


async def run_agent(finished: Finished, faust: Any, m: ConsumerMessage, applied: list[int]) -> None:
    """The engine agent's loop body in factory.py: skip a second copy, else apply."""
    faust._unacked_messages.add(m)
    try:
        if finished.again(m):
            return
        with finished.guard((m,)):
            applied.append(m.offset)
    finally:
        stream_ack(faust, m)


def test_a_record_delivered_twice_in_one_assignment_is_applied_once() -> None:
    """Faust resumes the flow before its post-rebalance seek: what was fetched from the old
    position comes again after the seek (seed 2: a hot customer's whole partition twice)."""
    faust, finished = consumer(committed=20), Finished()
    ack_only_finished(faust, finished, {EVENTS})
    applied: list[int] = []
    for offset in [20, 21, 22, 20, 21, 22, 23]:  # the seek back to the commit at 20
        asyncio.run(run_agent(finished, faust, message(offset), applied))
    assert applied == [20, 21, 22, 23]
    assert finished.skipped == 3
    assert faust._new_offset(TP0) == 24  # the second copies' acks are let through


def test_a_record_skipped_by_faust_is_applied_when_delivered_again() -> None:
    """A record Faust skipped (flow suspended) was not finished: its next copy is applied."""
    faust, finished = consumer(committed=20), Finished()
    ack_only_finished(faust, finished, {EVENTS})
    applied: list[int] = []
    asyncio.run(run_agent(finished, faust, message(20), applied))
    stream_ack(faust, message(21))  # skipped
    for offset in [20, 21, 22]:
        asyncio.run(run_agent(finished, faust, message(offset), applied))
    assert applied == [20, 21, 22]


def test_revocation_forgets_what_was_finished() -> None:
    """Another worker may have moved the partition on: after it comes back, apply again."""
    faust, finished = consumer(committed=20), Finished()
    ack_only_finished(faust, finished, {EVENTS})
    applied: list[int] = []
    asyncio.run(run_agent(finished, faust, message(20), applied))
    finished.forget()
    asyncio.run(run_agent(finished, faust, message(20), applied))
    assert applied == [20, 20]


def test_offsets_below_the_commit_are_pruned() -> None:
    finished = Finished()
    with finished.guard([message(n) for n in range(10)]):
        pass
    finished.prune({TP0: 7})
    assert finished.done[TP0] == {7, 8, 9}
    finished.prune({TP0: None})
    assert finished.done[TP0] == {7, 8, 9}


def test_a_record_before_table_recovery_is_left_for_after_the_seek() -> None:
    """Seed 2: a bundle applied before the event-order table was recovered lost held events."""
    faust, finished = consumer(committed=20), Finished()
    ack_only_finished(faust, finished, {EVENTS})
    applied: list[int] = []

    async def engine_agent(m: ConsumerMessage) -> None:
        faust._unacked_messages.add(m)
        try:
            if finished.again(m) or finished.deferred(m):
                return
            with finished.guard((m,)):
                applied.append(m.offset)
        finally:
            stream_ack(faust, m)

    asyncio.run(engine_agent(message(20)))  # buffered before recovery: not applied
    assert applied == [] and faust._new_offset(TP0) is None
    finished.recovered = True  # Faust's on_rebalance_complete
    for offset in (20, 21):  # the seek to the committed offset delivers it again
        asyncio.run(engine_agent(message(offset)))
    assert applied == [20, 21]
    assert faust._new_offset(TP0) == 22
    finished.forget()  # the next rebalance
    assert not finished.recovered


def test_faust_alone_commits_past_a_one_record_hole_at_the_committed_offset() -> None:
    """Faust refuses a head hole only when it is longer than one record."""
    faust, finished = consumer(committed=287), Finished()
    ack_only_finished(faust, finished, {EVENTS})
    stream_ack(faust, message(287))  # left for after recovery: Faust acks it, no agent ran
    asyncio.run(agent(finished, faust, message(288), done))
    assert faust._new_offset(TP0) == 289  # 287 committed over: lost


def test_a_one_record_hole_at_the_committed_offset_stops_the_commit() -> None:
    faust, finished = consumer(committed=287), Finished()
    ack_only_finished(faust, finished, {EVENTS})
    guard_committed_heads(faust)
    stream_ack(faust, message(287))
    asyncio.run(agent(finished, faust, message(288), done))
    assert faust._new_offset(TP0) is None  # nothing committed: 287 is read again

    asyncio.run(agent(finished, faust, message(287), done))  # after the seek
    assert faust._new_offset(TP0) == 289


def test_a_known_gap_at_the_committed_offset_still_commits() -> None:
    faust = consumer(committed=287)
    guard_committed_heads(faust)
    faust._gap[TP0].addi(287, 288)  # an offset without a record (a transaction marker)
    stream_ack(faust, message(288))
    assert faust._new_offset(TP0) == 289


def test_a_freeze_past_the_session_is_seen_once_and_for_good() -> None:
    """A worker stopped longer than its session was expelled: what it applied on waking
    would be written over the new owner's state (chaos seed 1). The caller stops it."""
    watch = FreezeWatch(limit=6.0)
    watch.started = True  # no thread here: the test says what it saw
    finished, distrusted = Finished(watch), []
    finished.on_freeze.append(lambda: distrusted.append(True))
    watch.seen(0.5)
    assert not finished.frozen()
    watch.seen(8.8)  # SIGSTOP for 8.8 s
    assert finished.frozen() and finished.frozen()
    assert distrusted == [True]  # the tables forget their persisted offsets, once


def test_the_event_loop_sees_a_freeze_before_the_watch_thread_looks() -> None:
    watch = FreezeWatch(limit=6.0)
    watch.started = True
    watch.last -= 9.0  # the thread last looked 9 s ago: the process did not run since
    assert Finished(watch).frozen()


def test_a_slow_event_loop_is_no_freeze() -> None:
    """The watch is a thread: a callback that holds the loop does not stop it."""
    watch = FreezeWatch(limit=6.0)
    watch.started = True
    finished = Finished(watch)
    for _ in range(30):
        watch.seen(0.5)
    assert not finished.frozen() and finished.freezes == 0
