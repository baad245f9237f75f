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
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)


class Finished:
    """The records the agents finished and Faust has not acked yet."""

    def __init__(self) -> None:
        self.pending: set[tuple[Any, int]] = set()
        self.dropped = 0
        """Acks refused: records acked by Faust that no agent finished."""

    @contextmanager
    def guard(self, messages: Iterable[Any]) -> Iterator[None]:
        """Run an agent's body for ``messages`` (Faust messages: ``tp`` and ``offset``).

        The records count as finished only if the body returns: an exception
        (the agent's fail-stop) or a cancellation leaves them unfinished.
        """
        keys = [(message.tp, int(message.offset)) for message in messages]
        yield
        self.pending.update(keys)

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
