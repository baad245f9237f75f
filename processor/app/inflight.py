"""Commit only what an agent finished: Faust acks records that no agent processed.

Faust's ``Stream.__aiter__`` acks a record in a ``finally`` around its ``yield``
(faust/streams.py, "This inlines self.ack"), and acks a record it *skips*
without yielding it at all: one read while the app's flow control is inactive
(a rebalance, or the stop after a SIGTERM: ``_stop_consumer`` suspends the
flow, then ``wait_empty`` commits) or one of a stale generation ("We want to ack
the filtered out message otherwise the lag would increase"). An ack makes the
offset committable, so the commit that follows moves past a record no agent
ever saw, and the next owner of the partition never reads it. The chaos suite
lost whole bundles that way (seed 2: events-by-customer p3@129, with two
customers' events, was read by a worker that got SIGTERM a moment later; its
successor started at 130, and no state change of either customer was ever
written from it; seed 3's hot customer ended 8 events short, the size of one
of its bundles).

The remedy: each agent runs its body for a record (or a batch) inside
:meth:`Finished.guard`, which notes the records once the body returned; the
consumer's ``ack`` takes an ack of one of the agents' topics only for a noted
record. Any other ack (a skipped record, or one whose body was interrupted by
a cancellation) is dropped from Faust's bookkeeping (so that ``wait_empty``
does not wait for it) without making the offset committable: commits stop
below it, and whoever reads the partition next, after its seek to the
committed offset, processes it.

The other half: a worker also gets records *twice* within one assignment. After
a rebalance Faust resumes the flow before it seeks the stream partitions to
their committed offsets ("Resuming flow..." comes before "Seek stream
partitions to committed offsets."), so what the fetcher delivered from its old
position is delivered again after the seek; Faust's read-offset filter would
drop the second copy, but :mod:`processor.app.redelivery` turns it off because
it also dropped records never delivered. A second copy is harmless for an
ordinary customer (the engine's dedupe window holds its last 1,024 event ids),
but not for a hot one: seed 2's ``s2-hot1`` had its 1,200 events applied, then
events-by-customer p7 from the committed offset again, and the events older than
its window were applied as new, each one pushing the next out of the window
(2,013 applied, cycle 51 instead of 30). :meth:`Finished.again` says when a
record was finished by this worker since its partitions were last revoked; the
agents skip it (its effects are in this worker's tables and producer already)
and let its ack through. Revocation forgets, because another worker may have
moved the partition on in between; a replay from the committed offset by the
next owner is what the dedupe window is for.

And a third: between an assignment and the end of table recovery, records of
the new assignment that the fetcher had already buffered reach the agents
(recovery resumes the flow to read the changelogs while the stream partitions
are only being paused). The engine then reads tables that are not recovered
yet: seed 2 again, w1 took events-by-customer p1, applied a bundle of it
before the event-order changelog was read back, and cached an empty ordering
state: the events held on p1 (three customers') were never released.
:meth:`Finished.deferred` says so for the engine agent until Faust signals
``on_rebalance_complete`` (sent when recovery is done, just before the seek to
the committed offsets); such a record is left unfinished, so it is not
committed and comes again after that seek.

And a fourth: a worker frozen longer than its session (SIGSTOP, a stalled VM)
was expelled while others took its partitions, but when it wakes it does not
know yet: it goes on applying what its fetcher had buffered and writes those
states to changelogs the new owners write too (chaos seed 1: a paused worker
wrote a hot customer back from 206 applied events to 18, after the new owner's
206). :meth:`Finished.frozen` says so (a :class:`FreezeWatch` thread saw that
the whole process did not run for longer than the session; a thread, unlike
the event loop, is not held up by a slow callback), and the worker stops
before it applies anything more (fail-stop, exit 70: it was expelled, its
partitions are someone else's now). ``on_freeze`` first makes the tables
forget their persisted changelog offsets, which may lie past the new owners'
writes, so the restarted worker recovers every partition from its changelog
whole.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)


class FreezeWatch:
    """A thread that notices the whole process was stopped for longer than ``limit`` seconds."""

    def __init__(self, limit: float, interval: float = 0.5) -> None:
        self.limit = limit
        self.interval = interval
        self.count = 0
        """Freezes seen; read by the event loop (an int: assignments are atomic)."""
        self.longest = 0.0
        self.started = False
        self.last = time.monotonic()
        """When the thread last looked (monotonic)."""

    def start(self) -> None:
        """Start watching (once; from the running worker, not when an app is only built)."""
        if not self.started:
            self.started = True
            self.last = time.monotonic()
            threading.Thread(target=self._run, name="freeze-watch", daemon=True).start()

    def _run(self) -> None:
        while True:
            time.sleep(self.interval)
            now = time.monotonic()
            self.seen(now - self.last)
            self.last = now

    def seen(self, silence: float) -> None:
        """One look: ``silence`` seconds passed since the previous one."""
        if silence > self.limit:
            self.longest = silence
            self.count += 1


class Finished:
    """The records the agents finished and Faust has not acked yet."""

    def __init__(self, watch: FreezeWatch | None = None) -> None:
        self.watch = watch
        self.freezes = 0
        """Freezes of the process past its session seen (see :meth:`frozen`)."""
        self.on_freeze: list[Callable[[], None]] = []
        self.pending: set[tuple[Any, int]] = set()
        self.dropped = 0
        """Acks refused: records acked by Faust that no agent finished."""
        self.done: dict[Any, set[int]] = {}
        """Per topic partition: the offsets finished since the last revocation."""
        self.skipped = 0
        """Records delivered again after this worker had finished them (see :meth:`again`)."""
        self.recovered = False
        """Tables are recovered for the current assignment (see :meth:`deferred`)."""
        self.deferrals = 0

    @contextmanager
    def guard(self, messages: Iterable[Any]) -> Iterator[None]:
        """Run an agent's body for ``messages`` (Faust messages: ``tp`` and ``offset``).

        The records count as finished only if the body returns: an exception
        (the agent's fail-stop) or a cancellation leaves them unfinished.
        """
        keys = [(message.tp, int(message.offset)) for message in messages]
        yield
        self.pending.update(keys)
        for tp, offset in keys:
            self.done.setdefault(tp, set()).add(offset)

    def again(self, message: Any) -> bool:
        """Whether this worker finished ``message`` already since its last revocation.

        Then the agent skips it, and Faust's ack of this copy is let through.
        """
        tp, offset = message.tp, int(message.offset)
        if offset not in self.done.get(tp, ()):
            return False
        self.pending.add((tp, offset))
        self.skipped += 1
        return True

    def frozen(self) -> bool:
        """Whether the process was stopped for longer than its session (then for good).

        The first time, ``on_freeze`` runs; the caller stops the worker.
        """
        if self.freezes:
            return True
        watch = self.watch
        if watch is None:
            return False
        watch.start()
        silence = time.monotonic() - watch.last  # the loop may run before the thread looks
        if not watch.count and silence <= watch.limit:
            return False
        self.freezes = max(watch.count, 1)
        log.warning(
            "the worker was stopped for %.1fs, longer than its session: it was expelled",
            max(watch.longest, silence),
        )
        for callback in self.on_freeze:
            callback()
        return True

    def deferred(self, message: Any) -> bool:
        """Whether ``message`` came before its tables were recovered: then leave it (unfinished).

        It is not committed, and the seek that follows recovery delivers it again.
        """
        if self.recovered:
            return False
        self.deferrals += 1
        return True

    def forget(self) -> None:
        """Partitions were revoked: another worker may process them before this one again,
        and the tables of the next assignment are not recovered yet."""
        self.done.clear()
        self.recovered = False

    def prune(self, committed: Mapping[Any, int | None]) -> None:
        """Drop finished offsets below each partition's commit: never delivered again."""
        for tp, offsets in self.done.items():
            below = committed.get(tp)
            if below:
                offsets.difference_update([o for o in offsets if o < below])

    def take(self, message: Any) -> bool:
        """Whether Faust's ack of ``message`` is for a finished record (then forget it)."""
        key = (message.tp, int(message.offset))
        if key in self.pending:
            self.pending.discard(key)
            return True
        return False


def ack_only_finished(consumer: Any, finished: Finished, topics: Collection[str]) -> None:
    """Wrap the consumer's ``ack``: for ``topics``, only records an agent finished count."""
    original = consumer.ack

    def ack(message: Any) -> bool:
        if message.topic not in topics or finished.take(message):
            result: bool = original(message)
            return result
        finished.dropped += 1
        if not message.acked:
            log.info(
                "not committing %s@%d: acked by Faust, but no agent finished it",
                message.tp,
                message.offset,
            )
        message.acked = True  # Faust stops waiting for it (wait_empty)...
        consumer._unacked_messages.discard(message)
        return False  # ...but its offset never becomes committable

    consumer.ack = ack


def install(app: Any, finished: Finished, topics: Collection[str]) -> None:
    """Wire :class:`Finished` into a Faust app: the ack filter, forgetting on revocation,
    recovered once Faust says the rebalance is complete, and pruning after each commit."""
    consumer = app.consumer
    ack_only_finished(consumer, finished, topics)

    async def on_revoked(sender: Any, *_: Any, **__: Any) -> None:
        finished.forget()

    async def on_recovered(sender: Any, *_: Any, **__: Any) -> None:
        finished.recovered = True

    app.on_partitions_revoked.connect(on_revoked)
    app.on_rebalance_complete.connect(on_recovered)
    commit = consumer.commit

    async def commit_and_prune(*args: Any, **kwargs: Any) -> bool:
        result: bool = await commit(*args, **kwargs)
        finished.prune(consumer._committed_offset)
        return result

    consumer.commit = commit_and_prune
