"""The engine alone: decode and apply in-process, no broker (the engine rows)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bench.harness.results import Row
from processor.contracts.bundle import decode_bundle, encode_bundle
from processor.contracts.inputs import Rejection, decode_event
from processor.contracts.limits import Limits, decode_record
from processor.contracts.outputs import encode_stage_change
from processor.contracts.state import decode_state, encode_state
from processor.demo.population import DemoRecord
from processor.engine import (
    ChunkSealed,
    CustomerState,
    Event,
    JourneyModel,
    Source,
    StageChange,
    apply,
)


@dataclass
class EngineFigures:
    """The in-process engine's parts; the per-event costs the Faust shell adds to."""

    rows: list[Row]
    customers: int
    stage_changes: int
    applied: int
    rejected: int
    final: dict[str, CustomerState]
    state_encode_us: float
    state_decode_us: float
    bundle_us_per_event: float
    change_encode_us: float
    state_bytes: float


def engine_only(
    records: Sequence[DemoRecord], topics: Mapping[Source, str], model: JourneyModel, limits: Limits
) -> EngineFigures:
    """The pure engine over the population, in three passes that add one cost at a time.

    The apply passes decode as the worker's router does (``decode_record``: the
    size limits, then ``decode_event``), so that the same records are applied:
    the population holds a few records over ``max_event_bytes``, which the
    worker dead-letters as ``too_large``.

    State lives in a dict. The third pass stores it encoded and reads it back for
    every event: the CPU floor of a design that writes its table once per event.
    """
    n = len(records)
    inputs = [(r.value, r.source, topics[r.source]) for r in records]
    keyed = [(r.key, r.value, r.source, topics[r.source]) for r in records]

    cpu = time.process_time  # beside wall time: other load on the machine does not count
    started, cpu_started = time.perf_counter(), cpu()
    decoded = [decode_event(value, source, topic) for value, source, topic in inputs]
    decode_s = time.perf_counter() - started
    decode_cpu = cpu() - cpu_started
    events = [e for e in decoded if isinstance(e, Event)]

    states: dict[str, CustomerState] = {}
    chunks: dict[tuple[str, int], tuple[str, ...]] = {}
    changes: list[StageChange] = []
    applied = rejected = 0
    started, cpu_started = time.perf_counter(), cpu()
    for key, value, source, topic in keyed:
        event = decode_record(key, value, source, topic, limits)
        if isinstance(event, Rejection):
            rejected += 1
            continue
        step = apply(states.get(event.customer_id), event, model)
        applied += step.outcome == "applied"
        if step.state is not None:
            states[event.customer_id] = step.state
        for output in step.outputs:
            if isinstance(output, StageChange):
                changes.append(output)
            elif isinstance(output, ChunkSealed):
                chunks[(output.customer_id, output.index)] = output.event_ids
    apply_s = time.perf_counter() - started
    apply_cpu = cpu() - cpu_started

    table: dict[str, bytes] = {}
    encode_s = decode_s_state = 0.0
    writes = reads = size = 0
    clock = time.perf_counter
    started = clock()
    for key, value, source, topic in keyed:
        event = decode_record(key, value, source, topic, limits)
        if isinstance(event, Rejection):
            continue
        raw = table.get(event.customer_id)
        state = None
        if raw is not None:
            t = clock()
            state = decode_state(raw)
            decode_s_state += clock() - t
            reads += 1
        step = apply(state, event, model)
        if step.state is not None and step.state is not state:
            t = clock()
            encoded = encode_state(step.state)
            encode_s += clock() - t
            table[event.customer_id] = encoded
            writes += 1
            size += len(encoded)
    codec_s = clock() - started

    started = clock()
    for offset in range(0, len(events), 500):
        decode_bundle(encode_bundle(events[offset : offset + 500]))
    bundle_s = clock() - started

    started = clock()
    for change in changes:
        encode_stage_change(change, "/journey-processor/bench")
    change_s = clock() - started

    rows = [
        Row("engine: decode_event only", n, decode_s, note=_per_cpu_second(n, decode_cpu)),
        Row("engine: decode_event + apply", n, apply_s, note=_per_cpu_second(n, apply_cpu)),
        Row("engine: + state codec every event", n, codec_s, note="read+write per event"),
    ]
    return EngineFigures(
        rows=rows,
        customers=len(states),
        stage_changes=len(changes),
        applied=applied,
        rejected=rejected,
        final=states,
        state_encode_us=encode_s / max(writes, 1) * 1e6,
        state_decode_us=decode_s_state / max(reads, 1) * 1e6,
        bundle_us_per_event=bundle_s / max(len(events), 1) * 1e6,
        change_encode_us=change_s / max(len(changes), 1) * 1e6,
        state_bytes=size / max(writes, 1),
    )


def _per_cpu_second(n: int, cpu_seconds: float) -> str:
    """The rate per CPU second of this process: what the engine does when it has a core."""
    return f"{n / cpu_seconds:,.0f}/CPU s" if cpu_seconds > 0 else ""


def digest(states: dict[str, CustomerState]) -> str:
    """A digest of every customer's final stage, cycle, sequence and applied-event count."""
    h = hashlib.sha256()
    for customer in sorted(states):
        s = states[customer]
        h.update(f"{customer}|{s.stage}|{s.cycle}|{s.sequence}|{s.applied_count}\n".encode())
    return h.hexdigest()[:16]
