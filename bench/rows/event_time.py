"""The event-time check: the processor's stage-change chains against the same events applied
one by one, in process, in event-time order.

The reference orders every valid record by the processor's own key, ``(occurred_at, topic,
input partition, input offset)`` (``processor.engine.ordering.Arrival.key``), with the
partitions and offsets the produce acknowledgements returned. Production order is not the
same tie-break: a null or wrong key puts one customer's records on several partitions of a
topic, and two of them can share an ``occurred_at``.

The promise is exact only for events that arrive within the allowed lateness: an event that
trails the newest ``occurred_at`` already in its own input partition by more than the lateness
may be applied late (by the order-independent rules within a cycle), depending on how far the
other partitions have been read when it comes. The population delays about 1% of records by 5
to 90 minutes (a CRM export, a phone uploading late). So the reference marks, from the real
partition order, every customer with such an event ("beyond the lateness"), and the check
splits customers: the others must match the reference exactly, chain for chain; those are shown
with how many of them still match.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import orjson

from processor.contracts.inputs import Rejection
from processor.contracts.limits import Limits, decode_record
from processor.contracts.outputs import rfc3339
from processor.demo.population import DemoRecord
from processor.engine import CustomerState, Event, JourneyModel, Source, StageChange, apply

Link = tuple[int, int, str | None, str, str, str]
"""One stage change as the chain compares it: cycle, sequence, from, to, changed_at, trigger
event id (the fields a data platform reads; the id also covers ``late`` and the model)."""


@dataclass
class Reference:
    """The in-process engine over the records in the processor's event-time order."""

    chains: dict[str, list[Link]] = field(default_factory=dict)
    final: dict[str, CustomerState] = field(default_factory=dict)
    beyond: set[str] = field(default_factory=set)
    """Customers with an event beyond the lateness in its own input partition."""

    @property
    def stage_changes(self) -> int:
        return sum(len(chain) for chain in self.chains.values())


def reference(
    records: Sequence[DemoRecord],
    positions: Sequence[tuple[int, int]],
    topics: Mapping[Source, str],
    model: JourneyModel,
    limits: Limits,
    lateness: timedelta,
) -> Reference:
    """Apply the valid records one by one in ``(occurred_at, topic, partition, offset)`` order."""
    arrivals: list[tuple[tuple[datetime, str, int, int], Event]] = []
    for record, (partition, offset) in zip(records, positions, strict=True):
        topic = topics[record.source]
        event = decode_record(record.key, record.value, record.source, topic, limits)
        if isinstance(event, Rejection):
            continue
        arrivals.append(((event.occurred_at, event.topic, partition, offset), event))
    result = Reference()
    newest: dict[tuple[str, int], datetime] = {}
    for (occurred_at, topic, partition, _), event in sorted(
        arrivals, key=lambda pair: (pair[0][1], pair[0][2], pair[0][3])
    ):
        seen = newest.get((topic, partition))
        if seen is not None and occurred_at < seen - lateness:
            result.beyond.add(event.customer_id)
        if seen is None or occurred_at > seen:
            newest[(topic, partition)] = occurred_at
    arrivals.sort(key=lambda pair: pair[0])
    for _, event in arrivals:
        step = apply(result.final.get(event.customer_id), event, model)
        if step.state is not None:
            result.final[event.customer_id] = step.state
        for output in step.outputs:
            if isinstance(output, StageChange):
                result.chains.setdefault(output.customer_id, []).append(_link(output))
    return result


def _link(change: StageChange) -> Link:
    return (
        change.cycle,
        change.sequence,
        change.from_stage,
        change.to_stage,
        rfc3339(change.changed_at),
        change.evidence.event_id,
    )


@dataclass
class Chains:
    """The processor's stage changes, per customer, deduplicated by id (at-least-once)."""

    chains: dict[str, list[Link]] = field(default_factory=dict)
    late_customers: set[str] = field(default_factory=set)
    records: int = 0
    duplicates: int = 0


def chains_from_output(values: Sequence[bytes | None]) -> Chains:
    """Decode stage-change records (``stage-change.v2``) into per-customer chains."""
    result = Chains()
    seen: set[str] = set()
    links: dict[str, list[Link]] = defaultdict(list)
    for value in values:
        if value is None:
            continue
        result.records += 1
        doc = orjson.loads(value)
        if doc["id"] in seen:
            result.duplicates += 1
            continue
        seen.add(doc["id"])
        customer = doc["customer_id"]
        links[customer].append(
            (
                doc["cycle"],
                doc["sequence"],
                doc["from_stage"],
                doc["to_stage"],
                doc["changed_at"],
                doc["trigger"]["event_id"],
            )
        )
        if doc.get("late"):
            result.late_customers.add(customer)
    result.chains = {c: sorted(chain) for c, chain in links.items()}
    return result


@dataclass
class Comparison:
    in_time: int
    """Customers with every event within the lateness (and no late change)."""
    in_time_equal: int
    late: int
    late_equal: int
    differing_in_time: list[str]

    @property
    def exact(self) -> bool:
        """Every customer whose events all arrived within the lateness matches exactly."""
        return self.in_time == self.in_time_equal


def compare(processor: Chains, expected: Reference) -> Comparison:
    customers = set(processor.chains) | set(expected.chains)
    at_risk = processor.late_customers | expected.beyond
    in_time = [c for c in customers if c not in at_risk]
    late = [c for c in customers if c in at_risk]

    def same(customer: str) -> bool:
        return processor.chains.get(customer, []) == sorted(expected.chains.get(customer, []))

    differing = sorted(c for c in in_time if not same(c))
    return Comparison(
        in_time=len(in_time),
        in_time_equal=len(in_time) - len(differing),
        late=len(late),
        late_equal=sum(1 for c in late if same(c)),
        differing_in_time=differing,
    )
