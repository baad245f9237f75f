"""Rows B and C: the no-op Faust agent and the table write per event (``bench.noop_app``)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from bench.harness.offsets import Offsets
from bench.harness.processes import spawn, stop_one, worker_env
from bench.harness.results import Row
from bench.harness.watch import read_stamps, row_from_watch, watch_group, worker_ready
from processor.processes import Child
from processor.settings import Settings


async def baseline_faust(
    offsets: Offsets,
    settings: Settings,
    expect: int,
    logs: Path,
    limit: float,
    *,
    name: str,
    value_bytes: int = 0,
) -> tuple[Row, Child]:
    """Run ``bench.noop_app`` until its group committed every input record.

    ``value_bytes`` > 0 turns the no-op agent into the write-per-event agent.
    """
    log = logs / f"{settings.app_id}.log"
    env = worker_env(settings, {"BENCH_EXPECT": str(expect), "BENCH_VALUE_BYTES": str(value_bytes)})
    launched = time.time()
    child = spawn(name, [sys.executable, "-m", "bench.noop_app"], env, log)
    try:

        async def ready() -> float | None:
            return worker_ready(log)

        inputs = list(settings.source_topics)
        seen = await watch_group(offsets, [child], settings.app_id, inputs, [], [], ready, limit)
    finally:
        stop_one(child)
    row = row_from_watch(name, expect, launched, seen)
    last = read_stamps(log)[1]
    if last is not None and seen.start is not None:
        row.exact = last - seen.start
    return row, child
