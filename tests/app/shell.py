"""The shell without Faust: Router and Applier wired to dict tables and list sinks.

The router's bundles go straight to the engine, partition by partition, as the
internal topic would carry them; every record either sends is kept, so a test
can look at the bytes that would have reached the broker. Event-time ordering
is on, as in a worker: :meth:`Shell.drain` says every input partition is caught
up, which releases whatever is still held.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from processor.app.erasure import ErasureRouter
from processor.app.funnel import StageCounts
from processor.app.metrics import Metrics
from processor.app.ordering import PartitionOrder, RouterClock
from processor.app.pipeline import Applier, InputRecord, Router
from processor.app.timers import TimerIndex
from processor.contracts.bundle import encode_ordered_bundle
from processor.contracts.limits import Limits
from processor.contracts.outputs import Record
from processor.engine import JourneyModel, Source, load_model
from processor.engine.ordering import InputPartition, Mark, OrderingConfig

SOURCES: dict[str, Source] = {
    "journey.clickstream": "clickstream",
    "journey.research": "research",
    "journey.support": "support",
}


class DictTable:
    """A table as the shell sees it: a mapping read, writes told their changelog partition."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.writes: list[tuple[bytes, bytes | None, int]] = []

    def get(self, key: bytes, /) -> bytes | None:
        return self.data.get(key)

    def items(self) -> list[tuple[bytes, bytes]]:
        return list(self.data.items())

    async def put(self, key: bytes, value: bytes, partition: int) -> None:
        self.data[key] = value
        self.writes.append((key, value, partition))

    async def delete(self, key: bytes, partition: int) -> None:
        self.data.pop(key, None)
        self.writes.append((key, None, partition))


@dataclass
class Sink:
    """Records sent to one topic, with the partition asked for (None: by key)."""

    records: list[tuple[Record, int | None]] = field(default_factory=list)

    async def __call__(self, record: Record, partition: int | None) -> None:
        self.records.append((record, partition))


@dataclass
class Shell:
    model: JourneyModel
    router: Router
    applier: Applier
    metrics: Metrics
    states: DictTable
    chunks: DictTable
    bundles: Sink
    changes: Sink
    triggers: Sink
    dead_letters: Sink
    partitions: int
    erasures: Sink = field(default_factory=Sink)
    erasure_router: ErasureRouter | None = None
    counts: StageCounts = field(default_factory=StageCounts)
    order: DictTable = field(default_factory=DictTable)
    aliases: DictTable = field(default_factory=DictTable)
    identities: Sink = field(default_factory=Sink)
    applied_bundles: int = 0
    offsets: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    cursor: int = 0
    """Records of ``bundles`` (the internal topic) applied so far, in the order sent."""

    async def feed(self, records: list[InputRecord], *, drain: bool = True) -> None:
        """Route a batch, apply every internal record it led to in the order sent, then drain.

        The engine's own sends to the internal topic (merge and forward messages,
        alias forgets) are applied too, after what was sent before them.
        """
        await self.router.route(records)
        await self.pump()
        if drain:
            await self.drain()

    async def forget(self, records: list[InputRecord]) -> None:
        """Route a batch of erasure requests and apply the forget messages it produced."""
        assert self.erasure_router is not None
        await self.erasure_router.route(records)
        await self.pump()

    async def pump(self) -> None:
        """Apply every internal record not applied yet, including those sent meanwhile."""
        while self.cursor < len(self.bundles.records):
            record, partition = self.bundles.records[self.cursor]
            self.cursor += 1
            assert partition is not None
            await self._apply(record.value, partition)

    async def drain(self) -> None:
        """Every input partition seen is caught up: release everything held, in order."""
        now = datetime.now(UTC)
        marks = {tp: Mark(now, True) for tp in self.inputs}
        for partition in range(self.partitions):
            await self.pump()
            await self._apply(encode_ordered_bundle([], marks), partition)
        await self.pump()

    async def _apply(self, value: bytes, partition: int) -> None:
        position = InputRecord("events", partition, self.offsets[partition], None, None)
        self.offsets[partition] += 1
        await self.applier.apply_bundle(value, position)
        self.applied_bundles += 1

    @property
    def inputs(self) -> frozenset[InputPartition]:
        return frozenset(self.router.clock.seen)

    def sent(self) -> list[Record]:
        """Every record sent anywhere, bundles included."""
        sinks = (
            self.bundles,
            self.changes,
            self.triggers,
            self.dead_letters,
            self.erasures,
            self.identities,
        )
        return [record for sink in sinks for record, _ in sink.records]


def make_shell(
    partitions: int = 4,
    limits: Limits | None = None,
    timers: TimerIndex | None = None,
    *,
    table: Callable[[str], DictTable] = lambda name: DictTable(),
    sink: Callable[[str], Sink] = lambda name: Sink(),
) -> Shell:
    """The shell on dict tables and list sinks; ``table`` and ``sink`` make others by name.

    The internal topic (``events``) is a list sink whatever ``sink`` makes: its
    bundles are applied in process (:meth:`Shell.pump`).
    """
    model = load_model()
    metrics = Metrics()
    states, chunks = table("customer-state"), table("dedupe-chunks")
    order, aliases = table("event-order"), table("aliases")
    config = OrderingConfig(timedelta(seconds=2), 20_000, timedelta(seconds=300))
    clock = RouterClock(config, idle_timeout=1.0)
    bundles = Sink()
    changes, triggers = sink("stage-changes"), sink("triggers")
    dead_letters, erasures, identities = sink("dead-letter"), sink("erasures"), sink("identities")
    counts = StageCounts()
    router = Router(
        model=model,
        sources=SOURCES,
        partitions=partitions,
        send_bundle=bundles,
        send_dead_letter=dead_letters,
        metrics=metrics,
        clock=clock,
        limits=limits,
    )
    applier = Applier(
        model=model,
        states=states,
        chunks=chunks,
        send_change=changes,
        send_trigger=triggers,
        send_dead_letter=dead_letters,
        ce_source="/journey-processor/test",
        metrics=metrics,
        timers=timers if timers is not None else TimerIndex(),
        ordering=PartitionOrder(order, config, lambda: frozenset(clock.seen), metrics),
        send_erased=erasures,
        on_state_written=counts.move,
        on_state_deleted=counts.remove,
        aliases=aliases,
        send_internal=bundles,
        send_identity=identities,
        partitions=partitions,
    )
    erasure_router = ErasureRouter(
        partitions=partitions,
        send_forget=bundles,
        metrics=metrics,
        dead_letters=router,
        limits=limits,
    )
    return Shell(
        model,
        router,
        applier,
        metrics,
        states,
        chunks,
        bundles,
        changes,
        triggers,
        dead_letters,
        partitions,
        erasures,
        erasure_router,
        counts,
        order,
        aliases,
        identities,
    )


def outcomes(metrics: Metrics) -> dict[tuple[str, str, str], float]:
    """journey_records_total by (topic, partition, outcome)."""
    found: dict[tuple[str, str, str], float] = {}
    for metric in metrics.records.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                labels = sample.labels
                found[(labels["topic"], labels["partition"], labels["outcome"])] = sample.value
    return found


def consumed(metrics: Metrics) -> dict[tuple[str, str], float]:
    found: dict[tuple[str, str], float] = {}
    for metric in metrics.records_consumed.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                found[(sample.labels["topic"], sample.labels["partition"])] = sample.value
    return found
