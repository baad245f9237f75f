"""Constants every row shares: partitions, group timeouts, polling, where the repo is."""

from __future__ import annotations

from pathlib import Path

PARTITIONS = 8
"""Partitions of every topic the benchmark creates, and of the processor's own topics."""

SESSION_TIMEOUT = 6.0
"""Consumer group session timeout of every consumer (as in the integration tests)."""

POLL = 0.2
"""Seconds between two looks at a subprocess group's committed offsets."""

START_POLL = 0.05
"""Seconds between two looks for a Faust worker's Ready line (the start of its timing)."""

EVENTS_PER_CUSTOMER = 14.7
"""Mean records per customer of the demo population; sizes it for ``--events``."""

COMMIT_INTERVAL = 2.8
"""Faust's default ``broker_commit_interval``; it also commits every 10,000 acks."""

TOPIC_CONFIG = {"retention.ms": "-1", "retention.bytes": "-1"}
"""Set explicitly: Tansu describes only configs set at creation, and Quix Streams reads
``retention.ms`` of its input topics to create the repartition topic."""

FIRST_STAMP = "BENCH first-record"
LAST_STAMP = "BENCH last-record"
"""What the benchmark's own apps print (with a wall-clock time) at their first and N-th record."""

REPO = Path(__file__).resolve().parents[2]
