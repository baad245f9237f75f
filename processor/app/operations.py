"""What an SRE sees of a worker: readiness, rebalances, consumer lag, the local funnel.

Hooks into Faust's signals and timers; the HTTP side is in :mod:`processor.api`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import faust
from prometheus_client.core import GaugeMetricFamily

from processor.app.funnel import StageCounts
from processor.app.metrics import Metrics
from processor.app.pipeline import partition_for
from processor.contracts.state import decode_state
from processor.engine import JourneyModel
from processor.settings import Settings

log = logging.getLogger(__name__)

SCAN_YIELD_EVERY = 2000
"""Keys counted between yields to the event loop while recounting after a rebalance."""


@dataclass
class Operations:
    """Readiness and the gauges that are cheaper to compute at scrape time."""

    app: faust.App
    settings: Settings
    model: JourneyModel
    metrics: Metrics
    states: Any
    tables: tuple[Any, ...] = ()
    counts: StageCounts = field(default_factory=StageCounts)
    rebalance_completed: bool = False
    counted_generation: int = -1
    generation: int = 0

    def readiness(self) -> tuple[bool, str]:
        """Ready once partitions are assigned and table recovery is done (and not rebalancing)."""
        if not self.rebalance_completed:
            return False, "waiting for the first partition assignment and table recovery"
        if self.app.rebalancing:
            return False, "rebalancing"
        recovery = self.recovery
        if recovery.in_recovery:
            return False, f"recovering tables: {recovery.active_remaining_total()} records left"
        return True, "ready"

    def engine_partitions(self) -> set[int]:
        """Partitions of the customer-state table this worker owns."""
        topic = self.settings.events_topic
        return {tp.partition for tp in self.app.consumer.assignment() if tp.topic == topic}

    @property
    def recovery(self) -> Any:
        return cast(Any, self.app.tables).recovery

    def install(self) -> None:
        """Connect to Faust's rebalance signals, start the timers, register the gauges."""
        cast(Any, self.app.on_partitions_assigned).connect(self._on_assigned)
        cast(Any, self.app.on_rebalance_complete).connect(self._on_rebalance_complete)
        cast(Any, self.app.on_partitions_revoked).connect(self._on_revoked)
        cast(Any, self.app.on_before_shutdown).connect(self._on_shutdown)
        self.app.timer(interval=2.0)(self._recount_after_rebalance)
        self.app.timer(interval=5.0)(self._measure_lag)
        self.metrics.add_collector(self.collect)

    async def _on_assigned(self, sender: Any, *args: Any, signal: Any = None, **kw: Any) -> None:
        assigned = args[0] if args else kw.get("assigned", set())
        self.metrics.rebalances.inc()
        self.generation += 1
        self.counts.keep_only(
            {tp.partition for tp in assigned if tp.topic == self.settings.events_topic}
        )
        self.metrics.assigned_partitions.set(len(assigned))

    async def _on_rebalance_complete(
        self, sender: Any, *_: Any, signal: Any = None, **__: Any
    ) -> None:
        self.rebalance_completed = True

    async def _on_revoked(self, sender: Any, *args: Any, signal: Any = None, **kw: Any) -> None:
        """Mark the end of every table partition this worker gives up (see MARKER_KEY).

        Faust has drained the streams and flushed the producer by now, and with
        eager rebalancing no other worker gets these partitions before this one
        rejoins, so the markers are on the broker before anyone recovers them.
        """
        revoked = args[0] if args else kw.get("revoked", set())
        await self._mark_handover(
            {tp.partition for tp in revoked if tp.topic == self.settings.events_topic}
        )

    async def _on_shutdown(self, sender: Any, *_: Any, signal: Any = None, **__: Any) -> None:
        await self._mark_handover(self.counts.by_partition.keys())

    async def _mark_handover(self, partitions: Iterable[int]) -> None:
        partitions = sorted(partitions)
        if not partitions or not self.tables:
            return
        await self.app.producer.flush()
        for table in self.tables:
            table.mark_handover(partitions)
        await self.app.producer.flush()

    async def _recount_after_rebalance(self) -> None:
        if self.readiness()[0] and self.counted_generation != self.generation:
            await self.recount()

    async def _measure_lag(self) -> None:
        self.measure_lag()

    async def recount(self) -> None:
        """Count customers per stage from the local table (after each rebalance only)."""
        generation = self.generation
        owned = self.engine_partitions()
        places: dict[int, list[tuple[str, int]]] = {p: [] for p in owned}
        for n, (key, raw) in enumerate(self.states.items()):
            if n % SCAN_YIELD_EVERY == 0:
                await asyncio.sleep(0)
            partition = partition_for(key.decode(), self.settings.partitions)
            if partition in places:
                state = decode_state(raw)
                places[partition].append((state.stage, state.cycle))
        if generation == self.generation:  # no rebalance while counting
            for partition, found in places.items():
                self.counts.replace_partition(partition, found)
            self.counts.keep_only(owned)
            self.counted_generation = generation

    def measure_lag(self) -> None:
        consumer = self.app.consumer
        committed = getattr(consumer, "_committed_offset", {})
        watched = {*self.settings.source_topics, self.settings.events_topic}
        self.metrics.consumer_lag.clear()
        for tp in consumer.assignment():
            if tp.topic not in watched:
                continue
            try:
                end = consumer.highwater(tp)
            except Exception:  # no fetch response seen yet for this partition
                continue
            done = committed.get(tp) or 0
            if end is not None:
                self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(
                    max(0, end - done)
                )

    def collect(self) -> Iterator[GaugeMetricFamily]:
        customers = GaugeMetricFamily(
            "journey_customers", "Customers per current stage on this worker", labels=["stage"]
        )
        for stage, n in self.counts.per_stage(self.model.stages).items():
            customers.add_metric([stage], n)
        yield customers
        recovery = self.recovery
        yield GaugeMetricFamily(
            "journey_recovery_in_progress",
            "1 while this worker restores tables from their changelogs",
            value=1 if recovery.in_recovery else 0,
        )
        yield GaugeMetricFamily(
            "journey_recovery_remaining_records",
            "Changelog records this worker still has to restore",
            value=recovery.active_remaining_total() if recovery.in_recovery else 0,
        )
        yield GaugeMetricFamily(
            "journey_ready", "1 when this worker is ready (see /readyz)", value=self.readiness()[0]
        )
