"""Never let Faust's consumer drop a record it has not delivered.

Faust's fetch loop (``Consumer._drain_messages``) keeps a *read offset* per
partition and silently drops any fetched record below it, to avoid delivering
a record twice. Around a rebalance that rule loses records: the loop can still
be draining a batch fetched before the rebalance while the recovery seeks the
partition back to its committed offset. Draining the stale batch pushes the
read offset past the committed one, so the records fetched again from the
committed offset are dropped as "already read" although no agent processed
them. The commit logic then either stalls for good behind the hole (a gap of
more than one offset), or, for a hole of exactly one record, commits past it
(faust-streaming's ``_new_offset`` lets ``min(acked)`` be one above the
committed offset). The chaos suite saw both: valid events that never reached
the internal topic, malformed records without a dead letter, and a partition
that never moved while its worker reported ready.

The remedy is to deliver every fetched record. At-least-once already makes a
second delivery harmless: the router routes it again, the engine recognises
its event id and re-emits identical outputs. What is given up is Faust's gap
detection for compacted or transactional *input* topics, which this processor
does not rely on (a gap of one offset, a transaction marker, still passes
Faust's commit check; a longer one stops the worker through the stall check
instead of silently).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

log = logging.getLogger(__name__)


class _NeverRead(defaultdict[Any, "int | None"]):
    """A read-offset map whose every lookup says "nothing read yet"."""

    def __getitem__(self, key: Any) -> int | None:
        return None


def deliver_every_record(consumer: Any) -> None:
    """Install the map on Faust's consumer; seeks still record into it, nothing reads back."""
    consumer._read_offset = _NeverRead(lambda: None)


def guard_uncommitted_heads(consumer: Any) -> None:
    """Never commit past a hole at the head of a partition that has no commit yet.

    Faust's ``_new_offset`` refuses to commit when the lowest acked offset lies
    more than one above the committed offset, but it skips that check when the
    partition has never been committed (``if committed_offset:`` is false for
    None and for 0). The chaos suite (seed 1) lost clickstream[5]@14..48 that
    way: the partition's first owner was paused before its first commit, the
    next owner's acks began at 49, and with nothing committed they were
    committed as 57 over the 35 records no one had routed.

    For such a partition the head is its log start offset (learnt after every
    seek to the committed offsets, where the partition is also sought to it:
    aiokafka's ``seek_to_committed`` does not move a partition without a
    commit, so records a Stream skipped as "flow inactive" or "old generation"
    would otherwise never be fetched again); the same check as Faust's applies
    against it. A hole there then stalls the partition, and the stall check stops the
    worker, whose successor reads from the log start again: a fail-stop instead
    of a silent loss.
    """
    new_offset = consumer._new_offset
    perform_seek = consumer.perform_seek
    starts: dict[Any, int] = {}
    warned: set[Any] = set()

    def _new_offset(tp: Any) -> int | None:
        committed = consumer._committed_offset[tp]
        acked = consumer._acked[tp]
        if not committed and acked:
            start = committed if committed is not None else starts.get(tp)
            if start is None or min(acked) - start > 1:
                if tp not in warned:
                    warned.add(tp)
                    log.warning(
                        "not committing %s: no commit yet, acked from %d, log starts at %s",
                        tp,
                        min(acked),
                        start,
                    )
                return None
        result: int | None = new_offset(tp)
        return result

    async def _perform_seek() -> None:
        await perform_seek()
        starts.clear()
        warned.clear()
        unknown = [
            tp
            for tp in consumer.assignment()
            if not consumer._committed_offset[tp] and not consumer._is_changelog_tp(tp)
        ]
        if not unknown:
            return
        try:
            earliest = await consumer.earliest_offsets(*unknown)
        except Exception as exc:  # no start known: those partitions wait (the stall check)
            log.warning("log start offsets unknown, not committing %s yet: %r", unknown, exc)
            return
        for tp, offset in earliest.items():
            # aiokafka's seek_to_committed leaves a partition without a commit where
            # it is: records a Stream skipped there (flow suspended during recovery,
            # or a stale generation) would never be read again. Start over instead.
            # Said at INFO: a group that loses its commits shows here first.
            log.info(
                "%s[%d]: no commit found, reading it from its log start, offset %d",
                tp.topic,
                tp.partition,
                int(offset),
            )
            await consumer.seek(tp, int(offset))
            starts[tp] = int(offset)

    consumer._new_offset = _new_offset
    consumer.perform_seek = _perform_seek


def guard_committed_heads(consumer: Any) -> None:
    """Never commit past a record at the committed offset that no agent finished.

    Faust's ``_new_offset`` refuses a commit only when the lowest acked offset
    lies *more than one* above the committed offset (the next one to read), so
    a hole of exactly one record there is committed over. Holes are what
    :mod:`processor.app.inflight` makes of records Faust acked unprocessed,
    expecting commits to stop below them. The chaos suite (seed 2, rolling
    SIGTERM) lost events-by-customer p7@287 that way: the worker took a new
    assignment, left 287 for after its table recovery (``Finished.deferred``),
    finished 288 from its fetch buffer, and was stopped before its seek
    delivered 287 again; the commit at the stop moved the group to 289, and
    seven customers never got that record's events. A head hole now stops the
    commit of its partition until the record is read again and finished. Gaps
    Faust knows of (``_gap``, offsets that hold no record) still count as read.
    """
    new_offset = consumer._new_offset

    def _new_offset(tp: Any) -> int | None:
        committed = consumer._committed_offset[tp]
        acked = consumer._acked[tp]
        if committed and acked and min(acked) > committed:
            gap = consumer._gap[tp]
            if not gap or not gap.overlaps(committed):
                return None
        result: int | None = new_offset(tp)
        return result

    consumer._new_offset = _new_offset
