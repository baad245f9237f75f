"""Prometheus metrics of a worker, in base units (seconds), with closed label sets.

Event types outside the journey definition are counted under ``type="other"``,
and no customer or event id is ever a label. Faust's own Prometheus sensors
report milliseconds and are not used.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from processor import __version__

_bound_text: Callable[[float], str] = floatToGoString  # "1.0", "+Inf": as Histogram writes le

LAG_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400, 30 * 86400, 365 * 86400)
"""Event-time lag spans real time (seconds) to replayed history (months)."""


class Metrics:
    """Everything a worker exposes at ``/metrics``; one instance per app."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "journey_events",
            "Input events by topic, type and outcome (applied, duplicate, ignored, dead_lettered)",
            ["topic", "type", "outcome"],
            registry=r,
        )
        self.records_consumed = Counter(
            "journey_records_consumed",
            "Input records the router consumed, by input topic and partition",
            ["topic", "partition"],
            registry=r,
        )
        self.records = Counter(
            "journey_records",
            "Input records by input topic, partition and outcome (applied, duplicate, ignored, "
            "dead_lettered, erased: held when its customer was forgotten); summed over the "
            "workers, the outcomes of a partition add up to journey_records_consumed_total",
            ["topic", "partition", "outcome"],
            registry=r,
        )
        self.dead_letters = Counter(
            "journey_dead_letters",
            "Input records sent to the dead-letter topic, by input topic and reason",
            ["topic", "reason"],
            registry=r,
        )
        self.stage_changes = Counter(
            "journey_stage_changes",
            "Stage changes emitted (re-emissions of replayed events excluded)",
            ["from_stage", "to_stage"],
            registry=r,
        )
        self.reemitted = Counter(
            "journey_stage_changes_reemitted",
            "Stage changes sent again because their event was replayed",
            registry=r,
        )
        self.replay_skipped = Counter(
            "journey_replay_skipped_events",
            "Events of replayed bundles at or below their partition's replay marker, not "
            "applied again (their effects were delivered already)",
            registry=r,
        )
        self.processing_seconds = LoopHistogram(
            "journey_event_processing_seconds",
            "Time to apply one event in the engine, state lookups included",
            buckets=(1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2, 0.1),
            registry=r,
        )
        self.event_time_lag = LoopHistogram(
            "journey_event_time_lag_seconds",
            "Now minus the event's occurred_at, when the engine applies it",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.bundle_seconds = LoopHistogram(
            "journey_bundle_processing_seconds",
            "Time to apply one bundle of events (the unit of state writes)",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=r,
        )
        self.triggers = Counter(
            "journey_triggers",
            "Triggers fired, by rule (re-emissions of replayed input excluded)",
            ["trigger"],
            registry=r,
        )
        self.timer_lateness = LoopHistogram(
            "journey_timer_lateness_seconds",
            "How far past its deadline the partition's clock was when an absence timer fired",
            buckets=(0.5, 1, 2, 5, 10, 30, 60, 300, 3600, 86400),
            registry=r,
        )
        self.late_events = Counter(
            "journey_late_events",
            "Events that arrived after their partition's event-time clock had passed them: "
            "applied at once, out of event-time order, and flagged late on their stage changes",
            ["topic"],
            registry=r,
        )
        self.clock_skew_events = Counter(
            "journey_clock_skew_events",
            "Events dated more than JOURNEY_MAX_CLOCK_SKEW ahead of the wall clock: applied "
            "at once for their customer, never moving any clock",
            registry=r,
        )
        self.released_early = Counter(
            "journey_events_released_early",
            "Held events released before the clock passed them because the hold buffer was full",
            registry=r,
        )
        self.hold_seconds = LoopHistogram(
            "journey_event_hold_seconds",
            "Wall-clock time an event was held for event-time ordering before it was applied",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30, 60, 300, 3600),
            registry=r,
        )
        self.events_held = Gauge(
            "journey_events_held",
            "Events held for event-time ordering, per customer partition on this worker",
            ["partition"],
            registry=r,
        )
        self.consumer_lag = Gauge(
            "journey_consumer_lag",
            "Records not yet committed by this worker: end offset minus committed offset",
            ["topic", "partition"],
            registry=r,
        )
        self.erasures = Counter(
            "journey_erasures",
            "Erasure requests applied on their customer's partition, by whether state was found "
            "(found, none); replays included",
            ["state"],
            registry=r,
        )
        for state in ("found", "none"):  # exposed at 0 before the first erasure
            self.erasures.labels(state)
        self.merges = Counter(
            "journey_identity_merges",
            "Anonymous journeys merged into a customer's on its partition (identity)",
            registry=r,
        )
        self.forwarded = Counter(
            "journey_forwarded_events",
            "Events of a linked anonymous id sent on to its customer's partition (second hop); "
            "replays included",
            registry=r,
        )
        self.rebalances = Counter(
            "journey_rebalances", "Partition assignments this worker received", registry=r
        )
        self.assigned_partitions = Gauge(
            "journey_assigned_partitions",
            "Partitions of the processor's topics assigned to this worker",
            registry=r,
        )
        self.build_info = Gauge(
            "journey_build_info", "The running version", ["version"], registry=r
        )
        self.build_info.labels(__version__).set(1)

    def outcome(self, topic: str, partition: int, outcome: str) -> None:
        """Count one input record's outcome against the partition it was read from."""
        self.records.labels(topic, str(partition), outcome).inc()

    def add_collector(self, collect: Callable[[], Iterator[GaugeMetricFamily]]) -> None:
        """Gauges computed at scrape time (customers per stage, recovery, readiness)."""
        self.registry.register(_Callback(collect))


class Tally:
    """Counter increments added up over a batch, then added once per label set.

    ``counter.labels(...).inc()`` costs about 1.5 us (label strings checked, a
    lock, a dict); per record and per stage change that was a tenth of the
    shell's own time. Totals are the same, only added a batch at a time:
    :meth:`flush` runs when the batch (a fetch for the router, a bundle for the
    applier) is done, also when it fails.
    """

    def __init__(self) -> None:
        self.counts: dict[tuple[Counter, tuple[str, ...]], int] = defaultdict(int)

    def add(self, counter: Counter, *labels: str) -> None:
        self.counts[(counter, labels)] += 1

    def flush(self) -> None:
        for (counter, labels), n in self.counts.items():
            (counter.labels(*labels) if labels else counter).inc(n)
        self.counts.clear()


class LoopHistogram(Collector):
    """A histogram without labels, observed and scraped on the worker's event loop only.

    prometheus_client's ``Histogram`` takes a lock and walks its buckets on every
    ``observe`` (about 1.5 us); the worker observes three per event (processing
    time, event-time lag, hold time), a tenth of the shell's own cost. Every
    observation here comes from the event loop, and ``/metrics`` is served on
    the same loop (Faust's web server), so no lock is needed: a bisect and two
    additions. The exposition is the same as ``Histogram``'s (``_bucket``,
    ``_count``, ``_sum``, ``_created``).
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = sorted(float(b) for b in buckets)
        self.counts = [0] * (len(self.bounds) + 1)
        """Observations per bucket, not cumulative; the last is above every bound."""
        self.sum = 0.0
        self.created = time.time()
        registry.register(self)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def observe_each(self, values: Iterable[float]) -> None:
        """:meth:`observe` each value in turn (the same sum, added in the same order)."""
        counts, bounds, total = self.counts, self.bounds, self.sum
        for value in values:
            counts[bisect_left(bounds, value)] += 1
            total += value
        self.sum = total

    @property
    def count(self) -> int:
        return sum(self.counts)

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.name, self.documentation)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, n in zip([*self.bounds, float("inf")], self.counts, strict=True):
            cumulative += n
            buckets.append((_bound_text(bound), cumulative))
        family = HistogramMetricFamily(self.name, self.documentation)
        family.add_metric([], buckets, self.sum, timestamp=None)
        family.add_sample(f"{self.name}_created", {}, self.created)
        yield family


class _Callback(Collector):
    def __init__(self, collect: Callable[[], Iterator[GaugeMetricFamily]]) -> None:
        self._collect = collect

    def collect(self) -> Iterator[GaugeMetricFamily]:
        return self._collect()
