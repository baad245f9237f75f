"""The Quix Streams peer row: this project's engine in a Quix Streams app (``bench.quix_app``).

Measured like the processor: from outside, by the group's committed offsets
on the input topics and on Quix's repartition topic, with the last growth of
its changelog and output topic as the exact end. Timing starts at the app's
first decoded record (after group join and state recovery, like a Faust
worker's Ready line).
"""

from __future__ import annotations

import importlib.util
import sys
import time
from base64 import b64decode
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from bench.harness.offsets import FinalStates, Offsets, decode_states, latest_values, total
from bench.harness.processes import spawn, stop_one, worker_env
from bench.harness.results import Row
from bench.harness.watch import read_stamps, row_from_watch, watch_group
from processor.processes import Child
from processor.settings import Settings

NAME = "Quix Streams + this engine"


def available() -> bool:
    """quixstreams is a benchmark-only dependency (the ``bench`` extra)."""
    return importlib.util.find_spec("quixstreams") is not None


@dataclass
class QuixFigures:
    row: Row
    child: Child | None = None
    changelog: int = 0
    repartitioned: int = 0
    stage_changes: int = 0
    final: FinalStates = field(default_factory=FinalStates)
    topics: list[str] = field(default_factory=list)


def quix_states(latest: dict[bytes, bytes | None]) -> FinalStates:
    """Customer states from Quix's changelog: keys ``<customer>|"s"``, values JSON strings.

    Quix prefixes each state key with the message key and a separator and
    JSON-serialises the value; the app stores ``encode_state(...)`` as a base64 string.
    Dedupe chunks (state keys ``c<n>``) are left out.
    """
    states: dict[bytes, bytes | None] = {}
    for key, value in latest.items():
        if key is None or value is None or not key.endswith(b'|"s"'):
            continue
        states[key[: -len(b'|"s"')]] = b64decode(orjson.loads(value))
    return decode_states(states)


async def quix_row(
    offsets: Offsets, settings: Settings, expect: int, logs: Path, limit: float
) -> QuixFigures:
    """Run the Quix app until its group committed the inputs and the repartition topic.

    ``settings`` name the group (``app_id``), the state dir (``data_dir``) and the
    output topic (``stage_changes_topic``: give it one of its own).
    """
    if not available():
        return QuixFigures(Row(NAME, expect, None, note="skipped: pip install -e '.[bench]'"))
    group, inputs, output = (
        settings.app_id,
        list(settings.source_topics),
        settings.stage_changes_topic,
    )
    log = logs / f"{group}.log"
    env = worker_env(settings, {"BENCH_EXPECT": str(expect)})
    launched = time.time()
    child = spawn("quix app", [sys.executable, "-m", "bench.quix_app"], env, log)
    repartition: list[str] = []
    activity: list[str] = [output]

    async def started() -> float | None:
        first = read_stamps(log)[0]
        if first is None:
            return None
        # Quix creates its topics before it consumes, so they exist by the first record.
        names = await offsets.admin.list_topics()
        repartition.extend(t for t in names if t.startswith(f"repartition__{group}--"))
        activity.extend(t for t in names if t.startswith(f"changelog__{group}--"))
        return first

    try:
        seen = await watch_group(
            offsets, [child], group, inputs, repartition, activity, started, limit
        )
        ends = await offsets.ends([*repartition, *activity])
    finally:
        stop_one(child)
    row = row_from_watch(NAME, expect, launched, seen)
    if seen.last_activity and seen.start:
        row.exact = seen.last_activity - seen.start
    changelogs = [t for t in activity if t != output]
    figures = QuixFigures(
        row,
        child,
        changelog=total(ends, changelogs),
        repartitioned=total(ends, repartition),
        stage_changes=total(ends, [output]),
        topics=[*repartition, *changelogs],
    )
    for topic in changelogs:
        latest = await latest_values(offsets.bootstrap, topic, ends, limit)
        found = quix_states(latest)
        figures.final.states.update(found.states)
        figures.final.sizes.extend(found.sizes)
    row.note = f"{figures.changelog / max(expect, 1):.3f} changelog records/event"
    return figures
