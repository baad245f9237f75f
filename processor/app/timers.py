"""Where absence timers are due: an in-memory index over the durable timers in customer state.

Timers themselves live in each customer's state (changelog-backed, so they
survive restarts and move with their partition). This index only knows *when*
each customer next needs a look: one min-heap per table partition, rebuilt by
a scan after a rebalance and fed by every state write. A tick pops only the
entries that are due, so its cost grows with the timers that fire, not with the
customers that hold timers. Entries are never updated in place: a customer whose
timer moved gets a new entry, and a stale one pops to find nothing due.

Time. Deadlines are event time. The clock a tick carries is the partition's
event-time clock (the minimum watermark over every input partition, see
processor.app.ordering) while anything is behind or held, so a replayed backlog
decides by the events themselves: an order ten minutes after a checkout,
further down the backlog, cancels the timer before the clock passes its
deadline, and an event dated far ahead moves no clock. Once every input is idle
and nothing is held, the clock is the wall clock. (``watermarks`` below is the
older per-partition "highest occurred_at applied", used only without ordering.)
"""

from __future__ import annotations

import heapq
import logging
from collections import Counter, OrderedDict
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from processor.contracts.bundle import Tick
from processor.engine import CustomerState

log = logging.getLogger(__name__)

TICK_PREFIX = "tick:"
"""Tick ids start with this, so a trigger's ``caused_by`` tells timer firings from events."""

TICKS_REMEMBERED = 256
"""Ticks whose fired customers are remembered per partition, for re-emission on replay."""


def clamp_tick(tick: Tick, max_skew: float, wall: datetime | None = None) -> Tick:
    """A tick no later than this worker's wall clock plus ``max_skew`` seconds.

    Anyone who can write to the internal topic could otherwise send a tick from
    the far future and fire every timer of a partition at once. A worker's own
    ticks are at most its wall clock (or a watermark that is behind it).
    """
    limit = (wall if wall is not None else datetime.now(UTC)) + timedelta(seconds=max_skew)
    if tick.now <= limit:
        return tick
    log.warning("tick %s at %s is ahead of the wall clock; clamped to %s", tick.id, tick.now, limit)
    return replace(tick, now=limit)


@dataclass
class TimerIndex:
    heaps: dict[int, list[tuple[datetime, str]]] = field(default_factory=dict)
    pending: dict[int, Counter[str]] = field(default_factory=dict)
    watermarks: dict[int, datetime] = field(default_factory=dict)
    fired_by_tick: dict[int, OrderedDict[str, set[str]]] = field(default_factory=dict)
    max_clock_skew: float = 300.0
    """How far ahead of the wall clock a watermark may be (JOURNEY_MAX_CLOCK_SKEW)."""

    def on_state_written(
        self, partition: int, before: CustomerState | None, after: CustomerState
    ) -> None:
        """Keep the index current with one customer's new state (called for every write)."""
        counts = self.pending.setdefault(partition, Counter())
        if before is not None:
            counts.subtract(t.rule for t in before.triggers.timers)
        counts.update(t.rule for t in after.triggers.timers)
        deadline = after.triggers.next_deadline
        if deadline is not None and (before is None or before.triggers.next_deadline != deadline):
            heapq.heappush(self.heaps.setdefault(partition, []), (deadline, after.customer_id))

    def on_state_deleted(self, partition: int, before: CustomerState) -> None:
        """A customer was erased: its timers no longer count; its heap entry pops to nothing."""
        self.pending.setdefault(partition, Counter()).subtract(
            t.rule for t in before.triggers.timers
        )
        for customers in self.fired_by_tick.get(partition, OrderedDict()).values():
            customers.discard(before.customer_id)

    def observe(self, partition: int, occurred_at: datetime) -> None:
        """Advance the partition's event-time watermark, never past wall clock plus the skew.

        One event from the far future (a bad client clock, or a forged record)
        would otherwise move the clock of a whole partition there.
        """
        limit = datetime.now(UTC) + timedelta(seconds=self.max_clock_skew)
        occurred_at = min(occurred_at, limit)
        seen = self.watermarks.get(partition)
        if seen is None or occurred_at > seen:
            self.watermarks[partition] = occurred_at

    def next_due(self, partition: int) -> datetime | None:
        heap = self.heaps.get(partition)
        return heap[0][0] if heap else None

    def pop_due(self, partition: int, now: datetime) -> list[str]:
        """Customers with an entry due at or before ``now`` (each once)."""
        heap = self.heaps.get(partition, [])
        due: dict[str, None] = {}
        while heap and heap[0][0] <= now:
            due[heapq.heappop(heap)[1]] = None
        return list(due)

    def record_tick(self, partition: int, tick_id: str, customers: set[str]) -> None:
        ticks = self.fired_by_tick.setdefault(partition, OrderedDict())
        ticks.setdefault(tick_id, set()).update(customers)
        while len(ticks) > TICKS_REMEMBERED:
            ticks.popitem(last=False)

    def fired_by(self, partition: int, tick_id: str) -> set[str]:
        return self.fired_by_tick.get(partition, OrderedDict()).get(tick_id, set())

    def rebuild(self, partition: int, states: list[CustomerState]) -> None:
        """Index one partition from scratch (after a rebalance gave it to this worker)."""
        heap = [
            (s.triggers.next_deadline, s.customer_id)
            for s in states
            if s.triggers.next_deadline is not None
        ]
        heapq.heapify(heap)
        self.heaps[partition] = heap
        self.pending[partition] = Counter(t.rule for s in states for t in s.triggers.timers)
        ticks: OrderedDict[str, set[str]] = OrderedDict()
        for s in states:
            for fired in s.triggers.recent:
                if fired.caused_by.startswith(TICK_PREFIX):
                    ticks.setdefault(fired.caused_by, set()).add(s.customer_id)
        self.fired_by_tick[partition] = ticks
        if states:
            latest = max(s.last_event_at for s in states)
            self.observe(partition, latest)

    def keep_only(self, partitions: set[int]) -> None:
        for mapping in (self.heaps, self.pending, self.watermarks, self.fired_by_tick):
            for partition in set(mapping) - partitions:
                del mapping[partition]

    def pending_total(self) -> int:
        return sum(max(0, n) for counts in self.pending.values() for n in counts.values())
