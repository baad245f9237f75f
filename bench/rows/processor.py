"""The processor end to end: one real ``python -m processor worker``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness.cpu import CpuWatch, process_cpu
from bench.harness.offsets import FinalStates, Offsets, every_record, latest_states, total
from bench.harness.processes import spawn_worker, stop_one
from bench.harness.results import Row
from bench.harness.watch import row_from_watch, timeline, watch_group, worker_ready
from bench.rows.event_time import Chains, chains_from_output
from processor.app.intake import router_group
from processor.processes import Child
from processor.settings import Settings


@dataclass
class ProcessorFigures:
    """Outputs of the end-to-end run, read from the topics' end offsets."""

    stage_changes: int = 0
    dead_letters: int = 0
    bundles: int = 0
    state_changelog: int = 0
    chunk_changelog: int = 0
    last_activity: float | None = None
    final: FinalStates = field(default_factory=FinalStates)
    """Each customer's last state (and its size) in the customer-state changelog."""
    inputs_done: float | None = None
    changes: Chains = field(default_factory=Chains)
    """Every stage change on the output topic, as per-customer chains."""
    timeline: list[str] = field(default_factory=list)
    cpu_to_last_output: float | None = None
    """The worker's CPU seconds from Ready to its last output record (the exact end)."""


async def processor_end_to_end(
    offsets: Offsets,
    settings: Settings,
    expect: int,
    logs: Path,
    limit: float,
    name: str = "processor end to end",
) -> tuple[Row, ProcessorFigures, Child]:
    """Run a real worker until inputs and the internal topic are committed to their ends."""
    log = logs / f"{settings.app_id}-worker.log"
    launched = time.time()
    child = spawn_worker("processor worker", settings, log)
    events_topic = settings.events_topic
    state_log = f"{settings.app_id}-customer-state-changelog"
    chunk_log = f"{settings.app_id}-dedupe-chunks-changelog"
    outputs = [settings.stage_changes_topic, settings.dead_letter_topic, state_log, chunk_log]

    cpu_at_ready: list[float | None] = []
    # Sampled through the run, so that the CPU at the last output can be read afterwards:
    # from Ready to the commit that ends the run the worker also idles through the commit
    # interval, a second or two of polling that varies from run to run.
    watch_cpu = CpuWatch({"worker": child.pid}, every=0.1)
    sampling = asyncio.create_task(watch_cpu.run())

    async def ready() -> float | None:
        at = worker_ready(log)
        if at is not None and not cpu_at_ready:  # the worker's CPU so far: startup, left out
            cpu_at_ready.append(process_cpu(child.pid))
        return at

    try:
        seen = await watch_group(
            offsets,
            [child],
            settings.app_id,
            list(settings.source_topics),
            [events_topic],
            outputs,
            ready,
            limit,
            input_group=router_group(settings),
        )
        cpu_at_done = process_cpu(child.pid)
        # Counted before the worker stops: on the way out it writes handover markers.
        ends = await offsets.ends([events_topic, *outputs])
    finally:
        sampling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampling
        stop_one(child)
    final = await latest_states(offsets.bootstrap, state_log, ends, limit)
    changes = await every_record(offsets.bootstrap, settings.stage_changes_topic, ends, limit)
    figures = ProcessorFigures(
        stage_changes=total(ends, [settings.stage_changes_topic]),
        dead_letters=total(ends, [settings.dead_letter_topic]),
        bundles=total(ends, [events_topic]),
        state_changelog=total(ends, [state_log]),
        chunk_changelog=total(ends, [chunk_log]),
        last_activity=(
            seen.last_activity - seen.start if seen.last_activity and seen.start else None
        ),
        final=final,
        changes=chains_from_output([value for _, value in changes]),
        inputs_done=seen.inputs_done - seen.start if seen.inputs_done and seen.start else None,
        timeline=timeline(seen, list(settings.source_topics), events_topic, state_log),
    )
    row = row_from_watch(name, expect, launched, seen)
    row.exact = figures.last_activity
    started_cpu = cpu_at_ready[0] if cpu_at_ready else None
    if started_cpu is not None and cpu_at_done is not None and row.seconds is not None:
        # CPU seconds from Ready to done: what the run cost, whatever else the machine did.
        cpu = cpu_at_done - started_cpu
        row.note = f"worker {cpu:.1f} CPU s, {cpu / expect * 1e6:.0f} us/event"
        to_last = _cpu_at(watch_cpu, seen.last_activity)
        if to_last is not None:
            figures.cpu_to_last_output = to_last - started_cpu
    return row, figures, child


def _cpu_at(watch: CpuWatch, moment: float | None) -> float | None:
    """The worker's CPU seconds at the first sample at or after ``moment``."""
    if moment is None:
        return None
    return next(
        (s.processes["worker"] for s in watch.samples if s.at >= moment),
        None,
    )
