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

from collections import defaultdict
from typing import Any


class _NeverRead(defaultdict[Any, "int | None"]):
    """A read-offset map whose every lookup says "nothing read yet"."""

    def __getitem__(self, key: Any) -> int | None:
        return None


def deliver_every_record(consumer: Any) -> None:
    """Install the map on Faust's consumer; seeks still record into it, nothing reads back."""
    consumer._read_offset = _NeverRead(lambda: None)
