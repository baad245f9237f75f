"""Customers per stage and cycle on this worker, kept per table partition.

Counts move with every state write (one stage and cycle out, another in), so a
scrape or a ``/funnel`` request costs nothing per customer. Per-partition counts
let a rebalance drop exactly what was revoked; newly assigned partitions are
counted once, by a scan of their table, after recovery.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from processor.contracts.funnel import funnel_document, merge_funnels
from processor.engine import CustomerState, Stage

__all__ = ["Place", "StageCounts", "funnel_document", "merge_funnels"]

Place = tuple[Stage, int]
"""A customer's stage and cycle."""


@dataclass
class StageCounts:
    """Customers per (stage, cycle), per partition of the customer-state table."""

    by_partition: dict[int, Counter[Place]] = field(default_factory=dict)

    def move(self, partition: int, before: CustomerState | None, after: CustomerState) -> None:
        counts = self.by_partition.setdefault(partition, Counter())
        if before is not None:
            counts[(before.stage, before.cycle)] -= 1
        counts[(after.stage, after.cycle)] += 1

    def remove(self, partition: int, before: CustomerState) -> None:
        """A customer was erased: it no longer counts anywhere."""
        self.by_partition.setdefault(partition, Counter())[(before.stage, before.cycle)] -= 1

    def replace_partition(self, partition: int, places: Iterable[Place]) -> None:
        self.by_partition[partition] = Counter(places)

    def drop_partitions(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            self.by_partition.pop(partition, None)

    def keep_only(self, partitions: Iterable[int]) -> None:
        self.drop_partitions(set(self.by_partition) - set(partitions))

    def totals(self) -> Counter[Place]:
        total: Counter[Place] = Counter()
        for counts in self.by_partition.values():
            total.update(counts)
        return +total

    def per_stage(self, stages: Iterable[Stage]) -> dict[Stage, int]:
        total = self.totals()
        result = dict.fromkeys(stages, 0)
        for (stage, _), n in total.items():
            result[stage] = result.get(stage, 0) + n
        return result
