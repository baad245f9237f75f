"""Watching a subprocess group until it has committed everything: the timing of every
row that runs in a child process."""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from aiokafka.structs import TopicPartition

from bench.harness.config import FIRST_STAMP, LAST_STAMP, POLL, START_POLL
from bench.harness.offsets import Offsets, complete, total
from bench.harness.results import Row
from processor.processes import Child


@dataclass
class Watch:
    """What polling a subprocess group saw: when it started, and when it was done."""

    start: float | None = None
    done: float | None = None
    last_incomplete_commit: float | None = None
    """When committed offsets last moved while not yet complete: the finish is later."""
    commits_seen: int = 0
    progress: str = ""
    last_activity: float | None = None
    activity_ends: dict[TopicPartition, int] = field(default_factory=dict)
    inputs_done: float | None = None
    """When the input topics were first seen committed to their ends (the router is done)."""
    samples: list[Sample] = field(default_factory=list)
    activity_chained: dict[TopicPartition, int] = field(default_factory=dict)
    """The ``chained`` (internal) topic's end offsets read when the outputs last grew."""
    work_committed: float | None = None
    """When the inputs, and the internal topic up to its end at the last output growth, were
    first seen committed: every record that led to an output is committed. The processor's
    internal topic also carries watermark bundles that never stop (a few seconds apart once
    quiet), so "committed to its end" waits out that rhythm; this does not, and it is what a
    peer without such records (Quix) reaches when it is "done"."""


@dataclass(frozen=True)
class Sample:
    """One poll: committed and end offsets summed per topic, to show the phases of a run."""

    at: float
    committed: dict[str, int]
    ends: dict[str, int]


async def watch_group(
    offsets: Offsets,
    children: Sequence[Child],
    group: str,
    inputs: Sequence[str],
    chained: Sequence[str],
    activity: Sequence[str],
    started: Callable[[], Any],
    limit: float,
    on_sample: Callable[[Sample], None] | None = None,
    input_group: str | None = None,
) -> Watch:
    """Poll until the group committed everything, or a child dies, or ``limit`` seconds.

    Complete means: every input partition committed to its (fixed) end and, after
    that, every ``chained`` (internal) partition committed to its end too. The
    internal topic only stops growing once the inputs are done, and committed
    offsets are read before end offsets, so an end read after the inputs were
    seen complete is final. ``started`` returns the start time once observable.
    ``activity`` topics (outputs) are watched for the time of the last write.
    ``on_sample`` sees every poll (a long run prints its progress with it).
    ``input_group`` is the group that commits the inputs when it is not ``group``
    (the processor's intake commits them as ``{app_id}-router``).
    """
    seen = Watch()
    deadline = time.monotonic() + limit
    previous: dict[TopicPartition, int] | None = None
    everything = [*inputs, *chained]
    while True:
        dead = [child for child in children if not child.alive()]
        if dead:
            child = dead[0]
            signalled = "Signal received" in child.log_path.read_text(errors="replace")
            cause = " after a signal this run did not send (see its log)" if signalled else ""
            who = f"{child.name} " if len(children) > 1 else ""
            seen.progress = f"{who}exited with {child.process.returncode}{cause}; {seen.progress}"
            return seen
        if time.monotonic() > deadline:
            seen.progress = f"timed out after {limit:.0f} s; {seen.progress}"
            return seen
        if seen.start is None:
            seen.start = await started()
            if seen.start is None:
                await asyncio.sleep(START_POLL)
                continue
        now = time.time()
        if input_group is None:
            committed = await offsets.committed(group, everything)
        else:
            committed = {
                **await offsets.committed(input_group, inputs),
                **await offsets.committed(group, chained),
            }
        ends = await offsets.ends(everything)
        outputs: dict[TopicPartition, int] = {}
        if activity:
            # The internal topic is not activity: it also carries watermark bundles, sent
            # every 0.25 s while marks move and every few seconds after (never quiet).
            outputs = await offsets.ends([*chained, *activity])
            grown = {tp: end for tp, end in outputs.items() if tp.topic in activity}
            if grown != seen.activity_ends:
                seen.activity_ends = grown
                seen.last_activity = now
                seen.activity_chained = {
                    tp: end for tp, end in outputs.items() if tp.topic in chained
                }
                seen.work_committed = None  # more work came: committed once it is too
        seen.samples.append(
            Sample(
                now,
                {topic: total(committed, [topic]) for topic in everything},
                {topic: total({**ends, **outputs}, [topic]) for topic in [*everything, *activity]},
            )
        )
        if on_sample is not None:
            on_sample(seen.samples[-1])
        if seen.inputs_done is None and complete(committed, ends, inputs):
            seen.inputs_done = now
        if (
            seen.work_committed is None
            and seen.last_activity is not None
            and complete(committed, ends, inputs)
            and complete(committed, seen.activity_chained, chained)
        ):
            seen.work_committed = now
        seen.progress = ", ".join(
            f"{topic}: {total(committed, [topic])}/{total(ends, [topic])} committed"
            for topic in everything
        )
        moved = previous is not None and committed != previous
        seen.commits_seen += moved
        previous = committed
        if complete(committed, ends, inputs) and complete(committed, ends, chained):
            seen.done = now
            if seen.work_committed is None:  # the outputs grew in this last poll
                seen.work_committed = now
            return seen
        if moved:
            seen.last_incomplete_commit = now
        await asyncio.sleep(POLL)


def read_stamps(log: Path) -> tuple[float | None, float | None]:
    """The no-op agent's own first- and last-record wall-clock stamps.

    Faust routes the agent's stdout through its logger, so a stamp is found
    anywhere in a line, not only at its start.
    """
    first = last = None
    for line in log.read_text(errors="replace").splitlines():
        for stamp in (FIRST_STAMP, LAST_STAMP):
            at = line.find(stamp)
            if at >= 0:
                value = float(line[at + len(stamp) :].split()[0])
                first, last = (value, last) if stamp == FIRST_STAMP else (first, value)
    return first, last


READY = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})\] .*\[\^Worker\]: Ready")
"""Faust's (mode's) log line once the group is joined, tables recovered and fetching starts."""


def worker_ready(log: Path) -> float | None:
    """Wall-clock time of the first ``[^Worker]: Ready`` (local time, millisecond resolution).

    This is the earliest start visible from outside a Faust worker that already
    excludes process start, group join and table recovery.
    """
    if not log.exists():
        return None
    for line in log.read_text(errors="replace").splitlines():
        match = READY.match(line)
        if match:
            moment = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S")
            return moment.timestamp() + int(match.group(2)) / 1000
    return None


def row_from_watch(name: str, events: int, launched: float, seen: Watch) -> Row:
    if seen.start is None or seen.done is None:
        return Row(name, events, None, note=f"DNF: {seen.progress}")
    low_end = seen.last_incomplete_commit - POLL if seen.last_incomplete_commit else seen.start
    return Row(
        name,
        events,
        seen.done - seen.start,
        startup=seen.start - launched,
        low=max(low_end - seen.start, 1e-3),
        high=seen.done - seen.start,
        work=seen.work_committed - seen.start if seen.work_committed else None,
    )


def timeline(seen: Watch, inputs: Sequence[str], events: str, state_log: str) -> list[str]:
    """About one line per two seconds: how far the router and the engine got.

    Offsets committed on the inputs are the router's progress; records on the
    internal topic are its output, committed ones the engine's progress; the
    state changelog grows with the engine's table writes.
    """
    if seen.start is None:
        return []
    lines = [
        f"{'s after Ready':>13} {'inputs committed':>16} {'bundles sent':>12} "
        f"{'bundles committed':>17} {'state changelog':>15}"
    ]
    shown = -math.inf
    for index, sample in enumerate(seen.samples):
        if sample.at - shown < 2.0 and index != len(seen.samples) - 1:
            continue
        shown = sample.at
        routed = sum(sample.committed.get(topic, 0) for topic in inputs)
        lines.append(
            f"{sample.at - seen.start:>13.1f} {routed:>16,} {sample.ends.get(events, 0):>12,} "
            f"{sample.committed.get(events, 0):>17,} {sample.ends.get(state_log, 0):>15,}"
        )
    return lines
