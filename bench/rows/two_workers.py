"""The processor end to end with two workers in one consumer group."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench.harness.cpu import CpuWatch
from bench.harness.logs import assignment, joins, log_summary
from bench.harness.offsets import Offsets, latest_states, total
from bench.harness.processes import spawn_worker, stop_together
from bench.harness.results import Row
from bench.harness.watch import row_from_watch, timeline, watch_group, worker_ready
from processor.app.intake import router_group
from processor.broker import free_port
from processor.processes import Worker
from processor.settings import Settings


@dataclass
class TwoWorkers:
    """The two-worker row and what is printed below the table about it."""

    row: Row
    children: list[Worker]
    lines: list[str] = field(default_factory=list)
    timeline: list[str] = field(default_factory=list)


async def processor_two_workers(
    offsets: Offsets,
    settings: Settings,
    expect: int,
    logs: Path,
    limit: float,
    broker_pid: int | None,
    applied_in_process: int,
) -> TwoWorkers:
    """Two real workers in one group, until inputs and the internal topic are committed.

    Both are launched together, so they usually join the first generation
    together; a later second join would be a rebalance of the first member, which
    is over when the second member has joined, synced and recovered its tables.
    Timing therefore starts at the later of the two Ready lines, when both
    fetch. The worker that was Ready first (on Tansu the group leader: the
    follower's assignment arrives about 1 s later) worked alone until then: the
    records committed by then and the rate timed from the first Ready are shown.
    Joins after the start (a rebalance during the run) are flagged.
    """
    name = "processor end to end, 2 workers"
    ports = {settings.web_port}
    while len(ports) < 2:
        ports.add(free_port())
    members = [
        replace(
            settings,
            web_port=port,
            data_dir=settings.data_dir.with_name(f"{settings.data_dir.name}-{i}"),
        )
        for i, port in enumerate(sorted(ports), start=1)
    ]
    events_topic = settings.events_topic
    state_log = f"{settings.app_id}-customer-state-changelog"
    chunk_log = f"{settings.app_id}-dedupe-chunks-changelog"
    shared = [settings.stage_changes_topic, settings.dead_letter_topic]
    outputs = [*shared, state_log, chunk_log]
    # The output topics are shared with the one-worker row: count this row's growth.
    before = await offsets.ends(shared)
    log_paths = [logs / f"processor-worker-{i}.log" for i in (1, 2)]
    launched = time.time()
    children = [
        spawn_worker(f"processor worker {i}", member, log)
        for i, (member, log) in enumerate(zip(members, log_paths, strict=True), start=1)
    ]
    pids = {f"worker {i}": child.process.pid for i, child in enumerate(children, start=1)}
    if broker_pid is not None:
        pids["broker"] = broker_pid
    pids["this benchmark"] = os.getpid()
    cpu = CpuWatch(pids)
    sampler = asyncio.create_task(cpu.run())
    readies: list[float | None] = [None, None]

    async def ready() -> float | None:
        for index, log in enumerate(log_paths):
            if readies[index] is None:
                readies[index] = worker_ready(log)
        if any(at is None for at in readies):
            return None
        return max(at for at in readies if at is not None)

    try:
        seen = await watch_group(
            offsets,
            children,
            settings.app_id,
            list(settings.source_topics),
            [events_topic],
            outputs,
            ready,
            limit,
            input_group=router_group(settings),
        )
        cpu.sample()
        # Counted before the workers stop: on the way out they write handover markers.
        ends = await offsets.ends([events_topic, *outputs])
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        stop_together(children)
    row = row_from_watch(name, expect, launched, seen)
    if seen.last_activity and seen.start:
        row.exact = seen.last_activity - seen.start
    result = TwoWorkers(row, children)
    if seen.start is None:
        result.lines.append(
            "Ready lines: "
            + ", ".join(
                f"worker {i} {'-' if at is None else f'{at - launched:.1f} s'}"
                for i, at in enumerate(readies, start=1)
            )
            + " after launch"
        )
        return result

    start = seen.start
    end = seen.done or time.time()
    first_ready = min(at for at in readies if at is not None)
    generations = [joins(log) for log in log_paths]
    late = [(i, at, gen) for i, js in enumerate(generations, 1) for at, gen in js if at > start]
    head = seen.samples[0] if seen.samples else None
    routed = sum(head.committed.get(t, 0) for t in settings.source_topics) if head else 0
    row.note = f"Ready {start - first_ready:.1f} s apart, {routed:,} inputs committed by then"
    if seen.done is not None and start > first_ready:
        row.note += f"; from 1st Ready {expect / (seen.done - first_ready):,.0f}/s"
    if late:
        row.note += f"; REJOINED {len(late)}x during the run"
    lines = result.lines
    lines.append(
        "joins (generation at s after launch): "
        + "; ".join(
            f"worker {i}: "
            + (", ".join(f"gen {gen} at {at - launched:.1f}" for at, gen in js) or "none")
            + f", Ready at {(at_ready or launched) - launched:.1f}"
            for i, (js, at_ready) in enumerate(zip(generations, readies, strict=True), start=1)
        )
        + f"; timing starts at the later Ready, {start - first_ready:.1f} s after the first"
    )
    if head is not None:
        lines.append(
            f"head start at the later Ready: {routed:,} input records already committed, "
            f"{head.ends.get(events_topic, 0):,} bundles on the internal topic"
        )
        if seen.done is not None and start > first_ready:
            since_first = seen.done - first_ready
            lines.append(
                f"timed from the first Ready instead: {since_first:.2f} s, "
                f"{expect / since_first:,.0f} events/s (includes the time one worker "
                "ran alone, or a rebalance)"
            )
    if late:
        lines.append(
            "REBALANCE after the start: "
            + ", ".join(f"worker {i} gen {gen} at +{at - start:.1f} s" for i, at, gen in late)
        )
    labels: dict[str, str] = dict(settings.source_topics)
    labels[events_topic] = "events"
    for i, log in enumerate(log_paths, start=1):
        lines.append(f"worker {i} partitions: {assignment(log, end, labels)}")
    if usage := cpu.between(start, seen.last_activity or end):
        lines.append(f"CPU from the later Ready to the last output growth {usage}")
    stage_changes = total(ends, [settings.stage_changes_topic]) - total(
        before, [settings.stage_changes_topic]
    )
    dead_letters = total(ends, [settings.dead_letter_topic]) - total(
        before, [settings.dead_letter_topic]
    )
    lines.append(
        f"outputs: {stage_changes:,} stage changes, {dead_letters:,} dead letters, "
        f"{total(ends, [events_topic]):,} bundles; changelog records: customer-state "
        f"{total(ends, [state_log]):,}, dedupe-chunks {total(ends, [chunk_log]):,}"
    )
    if seen.inputs_done is not None:
        lines.append(f"inputs committed to their ends {seen.inputs_done - start:.1f} s after Ready")
    final = (await latest_states(offsets.bootstrap, state_log, ends, limit)).states
    applied = sum(state.applied_count for state in final.values())
    lines.append(
        f"check: events applied per the changelog's final states {applied:,} (in-process "
        f"{applied_in_process:,}); customers {len(final):,}"
    )
    for i, child in enumerate(children, start=1):
        lines.append(f"worker {i} log: {log_summary(child.log_path)}")
    result.timeline = timeline(seen, list(settings.source_topics), events_topic, state_log)
    return result
