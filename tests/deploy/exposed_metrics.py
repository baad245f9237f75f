"""The metrics a worker exposes at /metrics, as PromQL sees them.

The one list the deployment files are checked against: every ``journey_*`` name
in the Grafana dashboard and the Prometheus alert rules must be in ``EXPOSED``
(see ``test_deploy_files.py``). Counters are listed with their ``_total``
sample name; histograms by their base name, whose ``_bucket``, ``_sum`` and
``_count`` series ``normalise`` maps back to it.
"""

from __future__ import annotations

HISTOGRAMS: frozenset[str] = frozenset(
    {
        "journey_event_processing_seconds",
        "journey_event_time_lag_seconds",
        "journey_bundle_processing_seconds",
        "journey_timer_lateness_seconds",
        "journey_event_hold_seconds",
    }
)

EXPOSED: frozenset[str] = frozenset(
    {
        "journey_events_total",  # {topic, type, outcome}: applied|duplicate|ignored|dead_lettered
        "journey_dead_letters_total",  # {topic, reason}
        "journey_records_consumed_total",  # {topic, partition}
        "journey_records_total",  # {topic, partition, outcome}
        "journey_stage_changes_total",  # {from_stage, to_stage}
        "journey_stage_changes_reemitted_total",
        "journey_replay_skipped_events_total",
        "journey_customers",  # {stage}: customers per current stage on this worker
        "journey_consumer_lag",  # {topic, partition}
        "journey_recovery_in_progress",  # 0/1
        "journey_recovery_remaining_records",
        "journey_rebalances_total",
        "journey_triggers_total",  # {trigger}
        "journey_timers_pending",
        "journey_events_held",  # {partition}: held for event-time ordering
        "journey_late_events_total",  # {topic}
        "journey_clock_skew_events_total",
        "journey_events_released_early_total",
        "journey_erasures_total",  # {state}: found|none
        "journey_identity_merges_total",
        "journey_forwarded_events_total",
        "journey_assigned_partitions",
        "journey_ready",  # 0/1, as /readyz
        "journey_build_info",  # {version}, always 1
        *HISTOGRAMS,
    }
)

_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def normalise(name: str) -> str:
    """The EXPOSED name for a series name: a histogram's ``_bucket/_sum/_count`` → its base."""
    for suffix in _HISTOGRAM_SUFFIXES:
        base = name.removesuffix(suffix)
        if base != name and base in HISTOGRAMS:
            return base
    return name
