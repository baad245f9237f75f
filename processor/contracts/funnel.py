"""The funnel documents workers exchange: ``/funnel/local`` (one worker's share) and ``/funnel``.

A contract between workers of one group (and with API clients): per table
partition, rows of ``[stage, cycle, customers]``. Merging counts each partition
once, so two workers answering for one partition mid-rebalance are not summed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Protocol


class PartitionCounts(Protocol):
    """Customers per (stage, cycle), per table partition (the shell's StageCounts)."""

    @property
    def by_partition(self) -> Mapping[int, Counter[tuple[str, int]]]: ...


def funnel_document(counts: PartitionCounts, partitions: Iterable[int]) -> dict[str, object]:
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


def is_local_funnel(doc: object) -> bool:
    """Whether a peer's answer has the ``/funnel/local`` shape (so merging cannot fail on it)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("partitions"), dict):
        return False
    for partition, rows in doc["partitions"].items():
        if not (isinstance(partition, str) and partition.isdigit() and isinstance(rows, list)):
            return False
        for row in rows:
            if not (
                isinstance(row, list)
                and len(row) == 3
                and isinstance(row[0], str)
                and all(isinstance(n, int) and not isinstance(n, bool) for n in row[1:])
            ):
                return False
    return True


def merge_funnels(documents: Iterable[Mapping[str, Any]], stages: Iterable[str]) -> dict[str, Any]:
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
