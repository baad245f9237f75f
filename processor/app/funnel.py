"""Customers per stage and cycle on this worker, kept per table partition.

Counts move with every state write (one stage and cycle out, another in), so a
scrape or a ``/funnel`` request costs nothing per customer. Per-partition counts
let a rebalance drop exactly what was revoked; newly assigned partitions are
counted once, by a scan of their table, after recovery.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from processor.engine import CustomerState, Stage

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


def funnel_document(counts: StageCounts, partitions: Iterable[int]) -> dict[str, object]:
    """This worker's share of the funnel, per partition, as ``/funnel/local`` serves it."""
    return {
        "partitions": {
            str(p): [
                [stage, cycle, n]
                for (stage, cycle), n in sorted(counts.by_partition.get(p, Counter()).items())
                if n
            ]
            for p in sorted(partitions)
        }
    }


def merge_funnels(
    documents: Iterable[Mapping[str, Any]], stages: Iterable[Stage]
) -> dict[str, Any]:
    """Sum workers' local funnels, counting each partition once (mid-rebalance, two may)."""
    by_partition: dict[str, list[list[Any]]] = {}
    for doc in documents:
        for partition, rows in doc["partitions"].items():
            by_partition.setdefault(partition, rows)
    per_stage = dict.fromkeys(stages, 0)
    per_cycle: Counter[int] = Counter()
    per_place: Counter[tuple[str, int]] = Counter()
    for rows in by_partition.values():
        for stage, cycle, n in rows:
            per_stage[stage] = per_stage.get(stage, 0) + n
            per_cycle[cycle] += n
            per_place[(stage, cycle)] += n
    return {
        "customers": sum(per_stage.values()),
        "stages": per_stage,
        "cycles": {str(c): n for c, n in sorted(per_cycle.items())},
        "stage_cycles": [
            {"stage": s, "cycle": c, "customers": n}
            for (s, c), n in sorted(per_place.items(), key=lambda kv: (kv[0][1], kv[0][0]))
        ],
        "partitions": sorted(by_partition, key=int),
    }
