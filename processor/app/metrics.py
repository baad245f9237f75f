"""Prometheus metrics of the processing path.

Labels are closed sets: event types outside the journey definition are counted
under ``type="other"``, and no customer or event id is ever a label.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class Metrics:
    """The counters the router and the engine update; one instance per app."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.events = Counter(
            "journey_events",
            "Input events by topic, type and outcome (applied, duplicate, ignored, dead_lettered)",
            ["topic", "type", "outcome"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "journey_dead_letters",
            "Input records sent to the dead-letter topic, by input topic and reason",
            ["topic", "reason"],
            registry=self.registry,
        )
        self.stage_changes = Counter(
            "journey_stage_changes",
            "Stage changes emitted (re-emissions of duplicates excluded)",
            ["from_stage", "to_stage"],
            registry=self.registry,
        )
        self.reemitted = Counter(
            "journey_stage_changes_reemitted",
            "Stage changes sent again because their event was replayed",
            registry=self.registry,
        )
        self.bundle_seconds = Histogram(
            "journey_bundle_processing_seconds",
            "Time to apply one bundle of events in the engine",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=self.registry,
        )
