"""Throughput benchmark of journey-processor against its own floors; prints figures.

``python -m bench.run [--events N] [--customers C]``. One run, one embedded
broker (Tansu, on a free loopback port), one set of pre-produced input records
read by every consumer in its own consumer group:

1. the pure engine in-process (no broker), split into its hot-path parts;
2. baseline A: a plain aiokafka consumer decoding every value with orjson;
3. baseline B: a no-op Faust agent (``bench.noop_app``) with the processor's Faust settings;
4. the processor end to end: a real ``python -m processor worker``, then
   (``--no-workers-row`` skips it) two such workers in one consumer group;
5. baseline C (``--no-table-baseline`` skips it): a Faust agent that writes a
   table once per event, the floor of the design the processor's bundles avoid.

Machines are noisy, so every figure is also given as a ratio to baseline B of
the same run. See ``bench/README.md`` for what each row means and its caveats.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition

from bench.noop_app import FIRST_STAMP, LAST_STAMP
from processor.broker import EmbeddedBroker, free_port
from processor.contracts.bundle import decode_bundle, encode_bundle
from processor.contracts.inputs import Rejection, decode_event
from processor.contracts.outputs import encode_stage_change
from processor.contracts.state import decode_state, encode_state
from processor.demo.population import DemoRecord, generate
from processor.engine import (
    ChunkSealed,
    CustomerState,
    Event,
    JourneyModel,
    StageChange,
    apply,
    load_model,
)
from processor.kafka_security import client_kwargs
from processor.settings import Settings

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

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- results


@dataclass
class Row:
    """One line of the result table; ``low``/``high`` bracket the time when it is uncertain."""

    name: str
    events: int
    seconds: float | None
    startup: float | None = None
    low: float | None = None
    high: float | None = None
    exact: float | None = None
    """Seconds to the last record seen by other means than commits (see the timing note)."""
    note: str = ""

    @property
    def rate(self) -> float | None:
        return self.events / self.seconds if self.seconds else None

    @property
    def exact_rate(self) -> float | None:
        return self.events / self.exact if self.exact else None


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
    ordered_changes: int = 0
    """Stage changes of the same events applied one by one in event-time order."""
    ordered_final: dict[str, CustomerState] = field(default_factory=dict)


@dataclass
class ProcessorFigures:
    """Outputs of the end-to-end run, read from the topics' end offsets."""

    stage_changes: int = 0
    dead_letters: int = 0
    bundles: int = 0
    state_changelog: int = 0
    chunk_changelog: int = 0
    last_activity: float | None = None
    final: dict[str, CustomerState] = field(default_factory=dict)
    """Each customer's last state in the customer-state changelog."""
    inputs_done: float | None = None
    timeline: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- processes


@dataclass
class Child:
    """A subprocess in its own session, so that it and its children stop together."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    signalled: bool = False

    def terminate(self) -> None:
        """SIGTERM once (a clean Faust shutdown), without waiting for the exit."""
        if self.process.poll() is None and not self.signalled:
            self.signalled = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM (a clean Faust shutdown), SIGKILL after ``grace`` seconds."""
        if self.process.poll() is not None:
            return
        self.terminate()
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(f"    | {line}" for line in text[-lines:])


_children: list[Child] = []


def spawn(name: str, argv: list[str], env: dict[str, str], log_path: Path) -> Child:
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            argv,
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    child = Child(name, process, log_path)
    _children.append(child)
    return child


def stop_children() -> None:
    """Stop every subprocess this run started; safe to call more than once."""
    for child in _children:
        child.terminate()
    while _children:
        _children.pop().stop()


def stop_together(children: Sequence[Child]) -> None:
    """SIGTERM all first, then wait for each: members of one group leave together, so
    no survivor takes over the others' partitions and recovers their tables on the way out."""
    for child in children:
        child.terminate()
    for child in children:
        child.stop()
        _children.remove(child)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def worker_env(settings: Settings, extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without inherited ``JOURNEY_*`` variables, plus this run's settings."""
    env = settings.environment()
    env.update(extra or {})
    return env


# --------------------------------------------------------------------------- population


def population(events: int, customers: int | None, seed: int, malformed: int) -> list[DemoRecord]:
    """About ``events`` demo records (exactly, unless ``customers`` yields fewer)."""
    start = datetime(2025, 3, 1, tzinfo=UTC)
    count = customers or max(1, math.ceil(events / EVENTS_PER_CUSTOMER * 1.05))
    records = generate(count, seed, start, malformed)
    while customers is None and len(records) < events:
        count = math.ceil(count * 1.2)
        records = generate(count, seed, start, malformed)
    return records[:events]


# --------------------------------------------------------------------------- 1. engine


def engine_only(
    records: Sequence[DemoRecord], topics: dict[str, str], model: JourneyModel
) -> EngineFigures:
    """The pure engine over the population, in three passes that add one cost at a time.

    State lives in a dict. The third pass stores it encoded and reads it back for
    every event: the CPU floor of a design that writes its table once per event.
    """
    n = len(records)
    inputs = [(r.value, r.source, topics[r.source]) for r in records]

    started = time.perf_counter()
    decoded = [decode_event(value, source, topic) for value, source, topic in inputs]
    decode_s = time.perf_counter() - started
    events = [e for e in decoded if isinstance(e, Event)]

    states: dict[str, CustomerState] = {}
    chunks: dict[tuple[str, int], tuple[str, ...]] = {}
    changes: list[StageChange] = []
    applied = rejected = 0
    started = time.perf_counter()
    for value, source, topic in inputs:
        event = decode_event(value, source, topic)
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

    table: dict[str, bytes] = {}
    encode_s = decode_s_state = 0.0
    writes = reads = size = 0
    clock = time.perf_counter
    started = clock()
    for value, source, topic in inputs:
        event = decode_event(value, source, topic)
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

    # Event-time order, as the processor's hold buffer orders (ties: topic, then input order).
    ordered: dict[str, CustomerState] = {}
    ordered_changes = 0
    keyed = sorted(
        enumerate(events), key=lambda pair: (pair[1].occurred_at, pair[1].topic, pair[0])
    )
    for _, event in keyed:
        step = apply(ordered.get(event.customer_id), event, model)
        if step.state is not None:
            ordered[event.customer_id] = step.state
        ordered_changes += sum(1 for o in step.outputs if isinstance(o, StageChange))

    rows = [
        Row("engine: decode_event only", n, decode_s),
        Row("engine: decode_event + apply", n, apply_s),
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
        ordered_changes=ordered_changes,
        ordered_final=ordered,
    )


def digest(states: dict[str, CustomerState]) -> str:
    """A digest of every customer's final stage, cycle, sequence and applied-event count."""
    h = hashlib.sha256()
    for customer in sorted(states):
        s = states[customer]
        h.update(f"{customer}|{s.stage}|{s.cycle}|{s.sequence}|{s.applied_count}\n".encode())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- broker side


async def create_topics(kafka: Settings, topics: Sequence[str]) -> None:
    admin = AIOKafkaAdminClient(**client_kwargs(kafka))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in topics])
    finally:
        await admin.close()


async def produce(
    kafka: Settings, records: Sequence[DemoRecord], topics: dict[str, str]
) -> tuple[float, dict[TopicPartition, int]]:
    """Send every record (keys as generated, so null and wrong keys too).

    Returns the seconds taken and each input partition's end offset as the
    produce acknowledgements give it. Those ends are exact; the broker's own
    answer (ListOffsets) can be one batch short on Tansu, which would end a
    measurement early.
    """
    producer = AIOKafkaProducer(
        **client_kwargs(kafka), acks="all", linger_ms=5, max_batch_size=256 * 1024
    )
    await producer.start()
    ends = {TopicPartition(t, p): 0 for t in topics.values() for p in range(PARTITIONS)}

    def note(acks: Sequence[Any]) -> None:
        for ack in acks:
            tp = TopicPartition(ack.topic, ack.partition)
            ends[tp] = max(ends[tp], ack.offset + 1)

    try:
        started = time.perf_counter()
        pending: list[asyncio.Future[Any]] = []
        for record in records:
            pending.append(await producer.send(topics[record.source], record.value, record.key))
            if len(pending) >= 5000:
                note(await asyncio.gather(*pending))
                pending.clear()
        note(await asyncio.gather(*pending))
        return time.perf_counter() - started, ends
    finally:
        await producer.stop()


class Offsets:
    """Committed offsets of a group and end offsets of topics, over one broker connection."""

    def __init__(self, kafka: Settings, known: dict[TopicPartition, int]) -> None:
        self.kafka = kafka
        self.known = known
        self.admin = AIOKafkaAdminClient(**client_kwargs(kafka))
        self.reader = AIOKafkaConsumer(**client_kwargs(kafka), group_id=None)

    async def __aenter__(self) -> Offsets:
        await self.admin.start()
        await self.reader.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.reader.stop()
        await self.admin.close()

    async def existing(self, topics: Sequence[str]) -> list[str]:
        names = set(await self.admin.list_topics())
        return [t for t in topics if t in names]

    async def committed(self, group: str, topics: Sequence[str]) -> dict[TopicPartition, int]:
        """Partitions are named: Tansu 0.6 answers an all-partitions OffsetFetch with a
        response aiokafka cannot decode (and the connection drops)."""
        parts = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
        offsets = await self.admin.list_consumer_group_offsets(group, partitions=parts)
        return {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}

    async def ends(self, topics: Sequence[str]) -> dict[TopicPartition, int]:
        """End offsets of the topics that exist (a missing topic has none).

        The input topics' ends are known exactly from producing them; only the
        topics the workers write are asked of the broker.
        """
        asked = [t for t in topics if not any(tp.topic == t for tp in self.known)]
        present = await self.existing(asked) if asked else []
        result: dict[TopicPartition, int] = {
            tp: end for tp, end in self.known.items() if tp.topic in topics
        }
        if present:
            parts = [TopicPartition(t, p) for t in present for p in range(PARTITIONS)]
            result.update(await self.reader.end_offsets(parts))
        return result


async def latest_states(
    kafka: Settings, topic: str, ends: dict[TopicPartition, int], limit: float
) -> dict[str, CustomerState]:
    """Read a state changelog to its end; the last record per key is the customer's state.

    Summing ``applied_count`` over these shows whether every event was applied
    exactly once, whatever order the worker saw them in.
    """
    parts = [tp for tp, end in ends.items() if tp.topic == topic and end > 0]
    if not parts:
        return {}
    reader = AIOKafkaConsumer(
        **client_kwargs(kafka),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await reader.start()
    try:
        reader.assign(parts)
        await reader.seek_to_beginning(*parts)
        latest: dict[bytes, bytes | None] = {}
        waiting = set(parts)
        quiet = False
        deadline = time.monotonic() + limit
        while waiting or not quiet:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: not read to its end after {limit:.0f} s")
            # Past the reported end, one more quiet second: Tansu's end can be a batch short.
            wait_ms = 500 if waiting else 1000
            batch = await reader.getmany(timeout_ms=wait_ms, max_records=10_000)
            quiet = not waiting and not batch
            for messages in batch.values():
                for message in messages:
                    latest[message.key] = message.value
            for tp in list(waiting):
                if await reader.position(tp) >= ends[tp]:
                    waiting.discard(tp)
        states: dict[str, CustomerState] = {}
        for key, value in latest.items():
            if key is None or value is None:
                continue
            try:  # the worker also writes non-state records (handover markers)
                states[key.decode()] = decode_state(value)
            except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                continue
        return states
    finally:
        await reader.stop()


def total(offsets: dict[TopicPartition, int], topics: Sequence[str]) -> int:
    return sum(offset for tp, offset in offsets.items() if tp.topic in topics)


def complete(
    committed: dict[TopicPartition, int], ends: dict[TopicPartition, int], topics: Sequence[str]
) -> bool:
    """Every partition of ``topics`` is committed up to its end."""
    return all(committed.get(tp, 0) >= end for tp, end in ends.items() if tp.topic in topics)


# --------------------------------------------------------------------------- 2. aiokafka


class _Assigned(ConsumerRebalanceListener):  # type: ignore[misc]
    """Stamps the first assignment: fetching starts there, so timing starts there too.

    Timing from the first record returned would leave out the fetches that
    aiokafka's background fetcher makes before ``getmany`` first returns.
    """

    def __init__(self) -> None:
        self.at: float | None = None

    async def on_partitions_revoked(self, revoked: Any) -> None:
        return None

    async def on_partitions_assigned(self, assigned: Any) -> None:
        if self.at is None and assigned:
            self.at = time.time()


async def baseline_aiokafka(
    kafka: Settings, topics: Sequence[str], group: str, expect: int, limit: float
) -> Row:
    """A plain consumer group member with auto-commit; orjson-decodes every value."""
    consumer = AIOKafkaConsumer(
        **client_kwargs(kafka),
        group_id=group,
        enable_auto_commit=True,
        auto_offset_reset="earliest",
        session_timeout_ms=int(SESSION_TIMEOUT * 1000),
        heartbeat_interval_ms=int(SESSION_TIMEOUT * 200),
    )
    assigned = _Assigned()
    consumer.subscribe(list(topics), listener=assigned)
    launched = time.time()
    await consumer.start()
    try:
        seen = bad = 0
        deadline = time.monotonic() + limit
        while seen < expect:
            if time.monotonic() > deadline:
                return Row("A aiokafka consumer + orjson", expect, None, note=f"DNF: {seen} read")
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for messages in batch.values():
                for message in messages:
                    try:
                        orjson.loads(message.value)
                    except orjson.JSONDecodeError:
                        bad += 1
                seen += len(messages)
        finished = time.time()
        start = assigned.at if assigned.at is not None else launched
        return Row(
            "A aiokafka consumer + orjson",
            seen,
            finished - start,
            startup=start - launched,
            note=f"{bad} undecodable",
        )
    finally:
        await consumer.stop()


# --------------------------------------------------------------------------- 3./4. Faust


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
) -> Watch:
    """Poll until the group committed everything, or a child dies, or ``limit`` seconds.

    Complete means: every input partition committed to its (fixed) end and, after
    that, every ``chained`` (internal) partition committed to its end too. The
    internal topic only stops growing once the inputs are done, and committed
    offsets are read before end offsets, so an end read after the inputs were
    seen complete is final. ``started`` returns the start time once observable.
    ``activity`` topics (outputs) are watched for the time of the last write.
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
        committed = await offsets.committed(group, everything)
        ends = await offsets.ends(everything)
        outputs: dict[TopicPartition, int] = {}
        if activity:
            outputs = await offsets.ends([*chained, *activity])
            if outputs != seen.activity_ends:
                seen.activity_ends = outputs
                seen.last_activity = now
        seen.samples.append(
            Sample(
                now,
                {topic: total(committed, [topic]) for topic in everything},
                {topic: total({**ends, **outputs}, [topic]) for topic in [*everything, *activity]},
            )
        )
        if seen.inputs_done is None and complete(committed, ends, inputs):
            seen.inputs_done = now
        seen.progress = ", ".join(
            f"{topic}: {total(committed, [topic])}/{total(ends, [topic])} committed"
            for topic in everything
        )
        moved = previous is not None and committed != previous
        seen.commits_seen += moved
        previous = committed
        if complete(committed, ends, inputs) and complete(committed, ends, chained):
            seen.done = now
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
    )


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
        child.stop()
        _children.remove(child)
    row = row_from_watch(name, expect, launched, seen)
    last = read_stamps(log)[1]
    if last is not None and seen.start is not None:
        row.exact = last - seen.start
    return row, child


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
    child = spawn(
        "processor worker", [sys.executable, "-m", "processor", "worker"], worker_env(settings), log
    )
    events_topic = settings.events_topic
    state_log = f"{settings.app_id}-customer-state-changelog"
    chunk_log = f"{settings.app_id}-dedupe-chunks-changelog"
    outputs = [settings.stage_changes_topic, settings.dead_letter_topic, state_log, chunk_log]

    async def ready() -> float | None:
        return worker_ready(log)

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
        )
        # Counted before the worker stops: on the way out it writes handover markers.
        ends = await offsets.ends([events_topic, *outputs])
    finally:
        child.stop()
        _children.remove(child)
    final = await latest_states(offsets.kafka, state_log, ends, limit)
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
        inputs_done=seen.inputs_done - seen.start if seen.inputs_done and seen.start else None,
        timeline=timeline(seen, list(settings.source_topics), events_topic, state_log),
    )
    row = row_from_watch(name, expect, launched, seen)
    row.exact = figures.last_activity
    return row, figures, child


# --------------------------------------------------------------------------- 4b. two workers


_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float | None:
    """User + system CPU seconds of a process (all its threads), or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    parts = stat.rsplit(")", 1)[1].split()  # after the command name: state is parts[0]
    return (int(parts[11]) + int(parts[12])) / _TICK


def machine_cpu() -> tuple[float, float]:
    """Busy and total CPU seconds of the machine since boot, summed over its CPUs."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return (total - idle) / _TICK, total / _TICK


@dataclass(frozen=True)
class CpuSample:
    at: float
    processes: dict[str, float | None]
    busy: float
    total: float


class CpuWatch:
    """Samples the CPU time of named processes and of the machine, every ``every`` seconds."""

    def __init__(self, pids: dict[str, int], every: float = 0.25) -> None:
        self.pids = pids
        self.every = every
        self.samples: list[CpuSample] = []

    def sample(self) -> None:
        busy, total = machine_cpu()
        processes = {name: process_cpu(pid) for name, pid in self.pids.items()}
        self.samples.append(CpuSample(time.time(), processes, busy, total))

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.every)

    def between(self, start: float, end: float) -> str | None:
        """Each process's share of one core and the machine's busy share, from ``start`` to
        ``end`` (the nearest samples at or after each)."""
        first = next((s for s in self.samples if s.at >= start), None)
        last = next((s for s in self.samples if s.at >= end), None) or (
            self.samples[-1] if self.samples else None
        )
        if first is None or last is None or last.at - first.at < 0.5:
            return None
        wall = last.at - first.at
        parts = []
        for name in self.pids:
            a, b = first.processes.get(name), last.processes.get(name)
            if a is None or b is None:
                parts.append(f"{name} -")
            else:
                parts.append(f"{name} {b - a:.1f} s ({(b - a) / wall:.0%} of a core)")
        cpus = (last.total - first.total) / wall
        busy = (last.busy - first.busy) / max(last.total - first.total, 1e-9)
        return (
            f"over {wall:.1f} s: {', '.join(parts)}; machine busy {busy:.0%} of its {cpus:.1f} CPUs"
        )


_STAMP = r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})\] \[\d+\] \[\w+\] "
JOINED = re.compile(_STAMP + r"Joined group '[^']*' \(generation (-?\d+)\)")
ASSIGNED = re.compile(_STAMP + r"Setting newly assigned partitions")
TABLE_ROW = re.compile(r"^\| (\S+)\s+\| (\{[^}]*\})\s+\|$")


def _stamp(match: re.Match[str]) -> float:
    moment = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S")
    return moment.timestamp() + int(match.group(2)) / 1000


def joins(log: Path) -> list[tuple[float, int]]:
    """(time, generation) of every group join in a worker log."""
    if not log.exists():
        return []
    found = []
    for line in log.read_text(errors="replace").splitlines():
        match = JOINED.match(line)
        if match:
            found.append((_stamp(match), int(match.group(3))))
    return found


def assignment(log: Path, before: float, labels: dict[str, str]) -> str:
    """The last partition assignment a worker logged before ``before``, for ``labels``'s topics."""
    chosen: dict[str, str] = {}
    current: dict[str, str] | None = None
    for line in log.read_text(errors="replace").splitlines():
        match = ASSIGNED.match(line)
        if match:
            current = {} if _stamp(match) <= before else None
            if current is not None:
                chosen = current
            continue
        row = TABLE_ROW.match(line)
        if row and current is not None and row.group(1) in labels:
            current[labels[row.group(1)]] = row.group(2)
    return ", ".join(f"{label} {chosen.get(label, '{}')}" for label in labels.values())


@dataclass
class TwoWorkers:
    """The two-worker row and what is printed below the table about it."""

    row: Row
    children: list[Child]
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
    argv = [sys.executable, "-m", "processor", "worker"]
    children = [
        spawn(f"processor worker {i}", argv, worker_env(member), log)
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
    labels = dict(settings.source_topics)
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
    final = await latest_states(offsets.kafka, state_log, ends, limit)
    applied = sum(state.applied_count for state in final.values())
    lines.append(
        f"check: events applied per the changelog's final states {applied:,} (in-process "
        f"{applied_in_process:,}); customers {len(final):,}"
    )
    for i, child in enumerate(children, start=1):
        lines.append(f"worker {i} log: {log_summary(child.log_path)}")
    result.timeline = timeline(seen, list(settings.source_topics), events_topic, state_log)
    return result


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


# --------------------------------------------------------------------------- report


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(rows: Sequence[Row], noop: Row) -> str:
    """The result table; both ratios are to the no-op Faust agent of this run."""
    base, exact_base = noop.rate, noop.exact_rate
    head = (
        f"{'':38} {'events':>8} {'startup s':>9} {'seconds':>8} {'events/s':>9} "
        f"{'vs no-op':>8}  {'commit bracket':>17}  {'exact end/s':>11} {'vs no-op':>8}  note"
    )
    lines = [head, "-" * len(head)]
    for row in rows:
        ratio = row.rate / base if row.rate and base else None
        exact = row.exact_rate if row.exact_rate else row.rate if row.low is None else None
        exact_ratio = exact / exact_base if exact and exact_base else None
        bracket = ""
        if row.low is not None and row.high is not None:
            bracket = f"{row.events / row.high:,.0f}..{row.events / row.low:,.0f}"
        lines.append(
            f"{row.name:38} {row.events:>8,} {fmt(row.startup, '.1f'):>9} "
            f"{fmt(row.seconds, '.2f'):>8} {fmt(row.rate, ',.0f'):>9} "
            f"{fmt(ratio, '.2f') + 'x' if ratio else '-':>8}  {bracket:>17}  "
            f"{fmt(exact, ',.0f'):>11} {fmt(exact_ratio, '.2f') + 'x' if exact_ratio else '-':>8}"
            f"  {row.note}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000, help="input records [200000]")
    parser.add_argument(
        "--customers", type=int, default=None, help="population size [sized for --events]"
    )
    parser.add_argument("--seed", type=int, default=11, help="population seed [11]")
    parser.add_argument(
        "--malformed", type=int, default=None, help="undecodable records [events/1000]"
    )
    parser.add_argument(
        "--timeout", type=float, default=240.0, help="seconds each consumer may take [240]"
    )
    parser.add_argument(
        "--batch-window",
        type=float,
        default=None,
        help="the processor's JOURNEY_BATCH_WINDOW [its default]",
    )
    parser.add_argument(
        "--batch-max", type=int, default=None, help="the processor's JOURNEY_BATCH_MAX [default]"
    )
    parser.add_argument(
        "--no-table-baseline",
        action="store_true",
        help="skip row C (a Faust agent writing a table once per event)",
    )
    parser.add_argument(
        "--workers-row",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the processor row again with 2 workers in one group [on]",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, data)")
    return parser.parse_args(argv)


async def run(args: argparse.Namespace, broker: EmbeddedBroker, work: Path) -> Child | None:
    """Everything after the broker started; returns the processor worker (for its log)."""
    malformed = args.malformed if args.malformed is not None else args.events // 1000
    t = time.perf_counter()
    records = population(args.events, args.customers, args.seed, malformed)
    n = len(records)
    tag = f"b{os.getpid()}"
    base = Settings(
        broker_url=broker.url,
        partitions=PARTITIONS,
        clickstream_topic=f"{tag}.clickstream",
        research_topic=f"{tag}.research",
        support_topic=f"{tag}.support",
        stage_changes_topic=f"{tag}.stage-changes",
        dead_letter_topic=f"{tag}.dead-letter",
        session_timeout=SESSION_TIMEOUT,
        web_bind="127.0.0.1",
        log_level="info",
    )
    topics = {source: topic for topic, source in base.source_topics.items()}
    print(
        f"population: {n:,} records ({malformed} malformed), "
        f"generated in {time.perf_counter() - t:.1f} s; {os.cpu_count()} CPUs; "
        f"load average {os.getloadavg()[0]:.2f}; Tansu at {broker.bootstrap}; work dir {work}",
        flush=True,
    )

    model = load_model(base.definition)
    print("1. engine in-process ...", flush=True)
    engine = engine_only(records, topics, model)

    await create_topics(
        base,
        [*base.source_topics, base.stage_changes_topic, base.dead_letter_topic],
    )
    produce_s, input_ends = await produce(base, records, topics)
    print(f"   produced {n:,} records in {produce_s:.1f} s ({n / produce_s:,.0f}/s)", flush=True)

    print("2. aiokafka consumer ...", flush=True)
    inputs = list(base.source_topics)
    plain = await baseline_aiokafka(base, inputs, f"{tag}-aiokafka", n, args.timeout)

    def own(name: str, store: str) -> Settings:
        return replace(
            base,
            app_id=f"{tag}-{name}",
            data_dir=work / f"data-{name}",
            web_port=free_port(),
            store_url=store,
            batch_max=args.batch_max or base.batch_max,
            batch_window=args.batch_window or base.batch_window,
        )

    async with Offsets(base, input_ends) as offsets:
        print("3. no-op Faust agent ...", flush=True)
        noop, _ = await baseline_faust(
            offsets, own("noop", "memory://"), n, work, args.timeout, name="B Faust no-op agent"
        )
        print("4. processor worker ...", flush=True)
        processor, figures, worker = await processor_end_to_end(
            offsets, own("processor", "rocksdb://"), n, work, args.timeout
        )
        print("4a. processor worker, holding off (JOURNEY_MAX_HELD_EVENTS=0) ...", flush=True)
        unheld, unheld_figures, _ = await processor_end_to_end(
            offsets,
            replace(own("unheld", "rocksdb://"), max_held_events=0),
            n,
            work,
            args.timeout,
            name="processor, holding off",
        )
        rows = [*engine.rows, plain, noop, processor, unheld]
        two: TwoWorkers | None = None
        if args.workers_row:
            print("4b. processor, 2 workers in one group ...", flush=True)
            two = await processor_two_workers(
                offsets,
                own("processor2", "rocksdb://"),
                n,
                work,
                args.timeout,
                broker.process.pid if broker.process is not None else None,
                engine.applied,
            )
            rows.append(two.row)
        floor: Child | None = None
        if not args.no_table_baseline:
            print("5. Faust table write per event ...", flush=True)
            per_event, floor = await baseline_faust(
                offsets,
                own("per-event", "rocksdb://"),
                n,
                work,
                args.timeout,
                name="C Faust table write per event",
                value_bytes=round(engine.state_bytes),
            )
            rows.append(per_event)

    print()
    print(f"{engine.customers:,} customers; every row reads the same {n:,} records")
    print(table(rows, noop))
    if processor.seconds is None:
        print(f"processor worker did not finish; its log ({worker.log_path}) ends:")
        print(worker.log_tail())
    if two is not None and two.row.seconds is None:
        for child in two.children:
            print(f"{child.name} did not finish; its log ({child.log_path}) ends:")
            print(child.log_tail())
    print()
    print(
        f"engine parts: state encode {engine.state_encode_us:.1f} us/write, decode "
        f"{engine.state_decode_us:.1f} us/read ({engine.state_bytes:,.0f} B/state); bundle "
        f"encode+decode {engine.bundle_us_per_event:.1f} us/event; stage-change encode "
        f"{engine.change_encode_us:.1f} us/change"
    )
    per = 1 / n
    print(
        f"processor outputs: {figures.stage_changes:,} stage changes "
        f"({figures.stage_changes * per:.3f}/event; in-process engine: "
        f"{engine.stage_changes:,}), {figures.dead_letters:,} dead letters (in-process "
        f"rejections: {engine.rejected:,}), {figures.bundles:,} bundles "
        f"({n / max(figures.bundles, 1):.0f} records/bundle)"
    )
    print(
        f"changelog records: customer-state {figures.state_changelog:,} "
        f"({figures.state_changelog * per:.3f}/event), dedupe-chunks "
        f"{figures.chunk_changelog:,} ({figures.chunk_changelog * per:.3f}/event); "
        f"a write-per-event design writes 1.000/event"
    )
    if figures.inputs_done is not None:
        print(
            f"processor: inputs committed to their ends (router done) {figures.inputs_done:.1f} s"
            " after Ready; progress:"
        )
    print("\n".join(f"    {line}" for line in figures.timeline))
    same = digest(figures.final) == digest(engine.ordered_final)
    verdict = "equal" if same and figures.stage_changes == engine.ordered_changes else "DIFFERENT"
    print(
        f"event time: processor {figures.stage_changes:,} stage changes, final-state digest "
        f"{digest(figures.final)}; in-process engine in event-time order "
        f"{engine.ordered_changes:,}, digest {digest(engine.ordered_final)} "
        f"({verdict}); "
        f"holding off (arrival order): {unheld_figures.stage_changes:,} stage changes, digest "
        f"{digest(unheld_figures.final)}"
    )
    if processor.rate and unheld.rate:
        print(
            f"cost of holding: {processor.rate:,.0f} events/s with event-time ordering vs "
            f"{unheld.rate:,.0f}/s with holding off: ratio {processor.rate / unheld.rate:.2f}"
        )
    applied = sum(state.applied_count for state in figures.final.values())
    differ = [
        (state, other)
        for customer, state in engine.final.items()
        if (other := figures.final.get(customer)) is None or other.stage != state.stage
    ]
    one_cycle = sum(1 for a, b in differ if b is not None and a.cycle == b.cycle == 1)
    print(
        f"check: events applied per the changelog's final states {applied:,} (in-process "
        f"{engine.applied:,}); customers {len(figures.final):,} (in-process "
        f"{engine.customers:,}); final stage differs for {len(differ):,} customers, "
        f"{one_cycle} of them in cycle 1 on both sides (the engine promises order "
        "independence within a cycle only; the worker sees another arrival order)"
    )
    print(
        f"load average now {os.getloadavg()[0]:.2f} (1 min; above ~0.2 before the run or far "
        f"above 1 now means something else ran on this machine's {os.cpu_count()} CPUs)"
    )
    print(f"processor log: {log_summary(worker.log_path)}")
    if floor is not None:
        print(f"write-per-event log: {log_summary(floor.log_path)}")
    if two is not None:
        print("processor, 2 workers in one group (same records, its own app id):")
        print("\n".join(f"    {line}" for line in two.lines))
        if two.timeline:
            print("    progress:")
            print("\n".join(f"    {line}" for line in two.timeline))
    print(
        "timing: every consumer row starts when its consumer has its partitions and starts "
        "fetching (A: first assignment; Faust rows: the '[^Worker]: Ready' log line, after "
        "group join and table recovery), so startup (its own column) is left out. 'seconds' "
        "ends for A at its last record, for the Faust rows when their committed offsets are "
        f"seen complete (polled every {POLL} s; for the processor the input topics and the "
        f"internal topic). Faust commits every {COMMIT_INTERVAL} s or 10,000 acks, so the "
        "true end lies in the commit bracket (between the last commit movement before "
        "completion and the completion). 'exact end' needs no commit: B and C stamp their "
        "N-th record themselves; for the processor it is the last growth of its internal "
        f"topic, changelogs and outputs (polled every {POLL} s)."
    )
    return worker


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    work = Path(tempfile.mkdtemp(prefix="journey-bench-"))
    worker: Child | None = None
    try:
        with EmbeddedBroker(log_path=work / "tansu.log") as broker:
            try:
                worker = asyncio.run(run(args, broker, work))
            finally:
                stop_children()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        stop_children()
        if args.keep:
            print(f"kept {work}")
        else:
            for path in _data_dirs(work):
                shutil.rmtree(path, ignore_errors=True)
    if worker is not None:
        print(f"logs: {work}")
    return 0


def log_summary(log: Path) -> str:
    """Counts of the worker's warnings and errors: the evidence to read first."""
    lines = log.read_text(errors="replace").splitlines()
    warnings = [line for line in lines if "[WARNING]" in line]
    sizes = [int(line.split()[-1]) for line in warnings if "producer buffer full size" in line]
    stalled = sum(
        float(line.rsplit(maxsplit=1)[-1]) for line in lines if "producer flush took" in line
    )
    errors = sum("[ERROR]" in line or "Traceback" in line for line in lines)
    return (
        f"{len(warnings)} WARNING lines, {len(sizes)} of them 'producer buffer full' (up to "
        f"{max(sizes, default=0):,} pending table writes; the agent waited {stalled:.1f} s in "
        f"all for Faust's ProducerBuffer to drain), {errors} ERROR/Traceback lines; {log.name}"
    )


def _data_dirs(work: Path) -> Iterator[Path]:
    yield from (p for p in work.iterdir() if p.is_dir() and p.name.startswith("data-"))


if __name__ == "__main__":
    sys.exit(main())
