"""What an SRE sees of a worker: readiness, rebalances, consumer lag, the local funnel.

Hooks into Faust's signals and timers; the HTTP side is in :mod:`processor.api`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import faust
from prometheus_client.core import GaugeMetricFamily

from processor.app.failstop import Deliveries, FailStop
from processor.app.funnel import StageCounts
from processor.app.metrics import Metrics
from processor.app.partitioning import partition_for
from processor.app.timers import TICK_PREFIX, TimerIndex
from processor.contracts.bundle import Tick, encode_tick
from processor.contracts.state import decode_state
from processor.engine import CustomerState, JourneyModel
from processor.settings import Settings

log = logging.getLogger(__name__)

TICK_RETRY_SECONDS = 30.0
"""A tick not applied within this long (lost in a crash) is sent again."""

SCAN_YIELD_EVERY = 2000
"""Keys counted between yields to the event loop while recounting after a rebalance."""

RECOUNT_CHECK_EVERY = 0.5
"""Seconds between checks for a rebalance not counted yet (readiness waits for the count)."""


@dataclass
class Operations:
    """Readiness and the gauges that are cheaper to compute at scrape time."""

    app: faust.App
    settings: Settings
    model: JourneyModel
    metrics: Metrics
    states: Any
    tables: tuple[Any, ...] = ()
    timers: TimerIndex = field(default_factory=TimerIndex)
    events: Any = None
    """The internal events topic: timer ticks are sent on it, to the partition they are for."""
    send_internal: Callable[[bytes, int], Awaitable[None]] | None = None
    """Sends a value to an internal partition (the outbox, app/outbox.py, behind the bundles
    sent before it); without it, ticks go straight to ``events``."""
    ordering: Any = None
    """The engine side's event-time ordering (processor.app.ordering.PartitionOrder): the
    clock timers follow."""
    ticks_in_flight: dict[int, float] = field(default_factory=dict)
    counts: StageCounts = field(default_factory=StageCounts)
    failstop: FailStop = field(default_factory=FailStop)
    deliveries: Deliveries | None = None
    consumers: Any = None
    """Every partition this worker reads (processor.app.consumers.Consumers); Faust's consumer
    alone when None (the inputs then come through a Faust agent too)."""
    rebalance_completed: bool = False
    counted_generation: int = -1
    generation: int = 0
    progress: dict[Any, tuple[int, float]] = field(default_factory=dict)
    """Per partition: its committed offset and when that last moved (the stall check)."""
    restoring: dict[Any, tuple[int | None, float]] = field(default_factory=dict)
    """Per changelog partition being recovered: the offset restored and when that last moved."""
    checked_at: float | None = None
    """When the progress checks last ran: a longer gap means this process was not running."""
    _scanning: set[str] | None = None
    """Customers written while :meth:`recount` scans; None when no scan runs."""

    def readiness(self) -> tuple[bool, str]:
        """Ready once partitions are assigned, tables recovered and the local table counted.

        Until :meth:`recount` has read the table after the last rebalance, the
        funnel and the timer index do not know the customers held locally (a
        worker restarted on its RocksDB data would answer /funnel with zero
        customers, and fire no timer), so the worker is not ready yet.
        """
        recovered, reason = self.recovered()
        if not recovered:
            return False, reason
        if self.counted_generation != self.generation:
            return False, "counting the local table (funnel and timers) after a rebalance"
        return True, "ready"

    def recovered(self) -> tuple[bool, str]:
        """Partitions assigned and table recovery done (and not rebalancing): a recount may run."""
        if self.failstop.reason is not None:
            return False, f"stopped after a failure: {self.failstop.reason}"
        recovery = self.recovery
        if recovery.in_recovery:
            return False, f"recovering tables: {recovery.active_remaining_total()} records left"
        if not self.rebalance_completed:
            return False, "waiting for the first partition assignment and table recovery"
        if self.app.rebalancing:
            return False, "rebalancing"
        if self.consumers is not None and not self.consumers.inputs.joined:
            return False, "joining the input topics' group (the intake)"
        return True, "ready"

    def engine_partitions(self) -> set[int]:
        """Partitions of the customer-state table this worker owns."""
        topic = self.settings.events_topic
        return {tp.partition for tp in self.app.consumer.assignment() if tp.topic == topic}

    @property
    def recovery(self) -> Any:
        return cast(Any, self.app.tables).recovery

    def install(self) -> None:
        """Connect to Faust's rebalance signals, start the timers, register the gauges."""
        cast(Any, self.app.on_partitions_assigned).connect(self._on_assigned)
        cast(Any, self.app.on_rebalance_complete).connect(self._on_rebalance_complete)
        cast(Any, self.app.on_partitions_revoked).connect(self._on_revoked)
        cast(Any, self.app.on_before_shutdown).connect(self._on_shutdown)
        self.app.timer(interval=RECOUNT_CHECK_EVERY)(self._fail_stop(self._recount_after_rebalance))
        self.app.timer(interval=5.0)(self._measure_lag)
        self.app.timer(interval=self.settings.timer_interval)(self._fail_stop(self._tick))
        self.metrics.add_collector(self.collect)

    def _fail_stop(self, job: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        """A periodic job whose failure (an unreadable state, a refused tick) stops the worker."""

        async def run() -> None:
            if self.failstop.failed:
                return
            try:
                await job()
            except Exception as exc:
                self.failstop.fail(f"{job.__name__.strip('_')} failed: {exc!r}", exc)

        run.__name__ = job.__name__
        return run

    async def _on_assigned(self, sender: Any, *args: Any, signal: Any = None, **kw: Any) -> None:
        assigned = args[0] if args else kw.get("assigned", set())
        self.metrics.rebalances.inc()
        self.generation += 1
        if self.ordering is not None:
            self.ordering.forget()
        self.counts.keep_only(
            {tp.partition for tp in assigned if tp.topic == self.settings.events_topic}
        )
        self.metrics.assigned_partitions.set(len(assigned))

    async def _on_rebalance_complete(
        self, sender: Any, *_: Any, signal: Any = None, **__: Any
    ) -> None:
        self.rebalance_completed = True

    async def _on_revoked(self, sender: Any, *args: Any, signal: Any = None, **kw: Any) -> None:
        """Mark the end of every table partition this worker gives up (see MARKER_KEY).

        Faust has drained the streams and flushed the producer by now, and with
        eager rebalancing no other worker gets these partitions before this one
        rejoins, so the markers are on the broker before anyone recovers them.
        """
        revoked = args[0] if args else kw.get("revoked", set())
        await self._mark_handover(
            {tp.partition for tp in revoked if tp.topic == self.settings.events_topic}
        )

    async def _on_shutdown(self, sender: Any, *_: Any, signal: Any = None, **__: Any) -> None:
        await self._mark_handover(self.counts.by_partition.keys())

    async def _mark_handover(self, partitions: Iterable[int]) -> None:
        partitions = sorted(partitions)
        if not partitions or not self.tables:
            return
        # Every write of ours lies before the markers: the outbox first (app/outbox.py).
        if self.deliveries is not None:
            await self.deliveries.settle()
        await self.app.producer.flush()
        for table in self.tables:
            table.mark_handover(partitions)
        await self.app.producer.flush()

    async def _recount_after_rebalance(self) -> None:
        if self.recovered()[0] and self.counted_generation != self.generation:
            await self.recount()

    async def _measure_lag(self) -> None:
        self.measure_lag()

    def check_progress(self, now: float) -> None:
        """Stop the worker when a partition has records waiting and its commits stand still.

        A consumer that stopped delivering one partition (faust-streaming #175,
        #640; a gap that its commit logic cannot pass) is otherwise fail-silent:
        ready, alive, and never catching up. Stopping makes the orchestrator start
        a fresh consumer, which reads from the last commit. While the tables are
        recovered, :meth:`check_recovery` watches the changelog reads instead.
        """
        timeout = self.settings.stall_timeout
        last, self.checked_at = self.checked_at, now
        if timeout <= 0 or (last is not None and now - last > timeout):
            # Off, or this process did not run for a whole timeout (stopped,
            # suspended): nothing was measured in between, so nothing stalled.
            self.progress.clear()
            self.restoring.clear()
            return
        if not self.recovered()[0]:
            self.progress.clear()  # rebalancing or recovering: no commits expected
            self.check_recovery(now, timeout)
            return
        self.restoring.clear()
        consumer, committed = self._consumer()
        watched = {*self.settings.source_topics, self.settings.events_topic}
        for tp in consumer.assignment():
            if tp.topic not in watched:
                continue
            try:
                end = consumer.highwater(tp)
            except Exception:  # no fetch response yet for this partition
                continue
            done = committed.get(tp) or 0
            seen = self.progress.get(tp)
            if end is None or done >= end or seen is None or seen[0] != done:
                self.progress[tp] = (done, now)
            elif now - seen[1] > timeout:
                self._log_stall_context()
                self.failstop.fail(
                    f"no progress on {tp.topic}[{tp.partition}] for {now - seen[1]:.0f}s with "
                    f"{end - done} records waiting (JOURNEY_STALL_TIMEOUT)"
                )

    def check_recovery(self, now: float, timeout: float) -> None:
        """Stop the worker when a table recovery has records left and reads none of them.

        Faust's recovery can wait forever on a changelog partition that delivers
        nothing (it logs "No event received for active tp" every few seconds;
        faust-streaming #74, robinhood/faust #218). The worker is then not ready
        and never will be: fail-silent. Stopping it makes the orchestrator start a
        fresh consumer, which recovers the partition again. A slow recovery is
        not a stalled one: any record restored resets the partition's clock.
        """
        recovery = self.recovery
        if not getattr(recovery, "in_recovery", False):
            self.restoring.clear()
            return
        offsets = recovery.active_offsets
        remaining = recovery.active_remaining()
        for tp in set(self.restoring) - set(remaining):
            del self.restoring[tp]
        for tp, left in remaining.items():
            at = offsets.get(tp)
            seen = self.restoring.get(tp)
            if left <= 0 or seen is None or seen[0] != at:
                self.restoring[tp] = (at, now)
            elif now - seen[1] > timeout:
                log.critical("recovery stalled: %s", self.describe_recovery(tp))
                self.failstop.fail(
                    f"table recovery read nothing from {tp.topic}[{tp.partition}] for "
                    f"{now - seen[1]:.0f}s with {left} records left (JOURNEY_STALL_TIMEOUT)"
                )
                return

    def describe_recovery(self, tp: Any) -> str:
        """Where one changelog partition's recovery stands, as far as the clients can tell.

        The hang's cause is not known yet (Faust's fetching or the broker), so a
        stop says what would tell them apart: whether the partition is assigned,
        whether Faust fetches it (its active and paused sets), the client's read
        position and the highwater it saw, and what waits in Faust's queue of
        changelog records. Each fact is read without awaiting, and one that
        cannot be read is left out.
        """
        recovery = self.recovery
        consumer: Any = self.app.consumer  # Faust's, with its aiokafka client inside
        tables: Any = self.app.tables
        facts: dict[str, object] = {
            "restored_offset": recovery.active_offsets.get(tp),
            "needed_offset": recovery.active_highwaters.get(tp),
        }
        readers: list[tuple[str, Callable[[], object]]] = [
            ("assigned", lambda: tp in consumer.assignment()),
            ("faust_fetches", lambda: tp in consumer._active_partitions),
            ("faust_paused", lambda: tp in consumer._paused_partitions),
            ("client_paused", lambda: tp in consumer._thread._ensure_consumer().paused()),
            ("client_position", lambda: _client_position(consumer, tp)),
            ("client_highwater", lambda: consumer._thread._ensure_consumer().highwater(tp)),
            ("changelog_queue", lambda: tables.changelog_queue.qsize()),
        ]
        for name, read in readers:
            try:
                facts[name] = read()
            except Exception:  # a client internal that moved in another version
                continue
        return f"{tp.topic}[{tp.partition}] " + " ".join(f"{k}={v}" for k, v in facts.items())

    def _log_stall_context(self) -> None:
        """Say what the worker was doing when it stalled: its sends, and where our tasks wait.

        A task's own stack shows only its outermost coroutine; the await chain
        (``cr_await``) shows where it really waits. Tasks waiting in this
        package's code are logged; the idle loops of Faust and aiokafka are not.
        """
        if self.deliveries is not None:
            log.critical("stalled: %s", self.deliveries.describe())
        try:
            tasks = asyncio.all_tasks()
        except RuntimeError:  # no running loop (a test calling the check directly)
            return
        for task in tasks:
            chain = _await_chain(task.get_coro())
            if any("/processor/" in frame for frame in chain):
                log.critical("stalled: %s waits in %s", task.get_name(), " -> ".join(chain))

    def state_written(
        self, partition: int, before: CustomerState | None, after: CustomerState
    ) -> None:
        """The engine wrote a customer's state: keep the funnel current, note it for a scan."""
        self.counts.move(partition, before, after)
        if self._scanning is not None:
            self._scanning.add(after.customer_id)

    def state_deleted(self, partition: int, before: CustomerState) -> None:
        """A customer was erased: out of the funnel, and read again if a scan is running."""
        self.counts.remove(partition, before)
        if self._scanning is not None:
            self._scanning.add(before.customer_id)

    async def recount(self) -> None:
        """Count customers per stage and index their timers from the local table.

        Runs after each rebalance. The scan yields to the event loop, so the engine
        keeps applying bundles meanwhile; every customer it writes during the scan
        is read again at the end, so the result is the table as it is then, not a
        mix of older and newer states.
        """
        generation = self.generation
        owned = self.engine_partitions()
        found: dict[int, dict[str, CustomerState]] = {p: {} for p in owned}
        self._scanning = set()
        try:
            for n, (key, raw) in enumerate(self.states.items()):
                if n % SCAN_YIELD_EVERY == 0:
                    await asyncio.sleep(0)
                partition = partition_for(key.decode(), self.settings.partitions)
                if partition in found:
                    state = decode_state(raw)
                    found[partition][state.customer_id] = state
            for customer_id in self._scanning:
                partition = partition_for(customer_id, self.settings.partitions)
                raw = self.states.get(customer_id.encode())
                if partition in found and raw is not None:
                    found[partition][customer_id] = decode_state(raw)
                elif partition in found:  # erased while the scan ran
                    found[partition].pop(customer_id, None)
        finally:
            self._scanning = None
        if generation == self.generation:  # no rebalance while counting
            for partition, by_id in found.items():
                states = list(by_id.values())
                self.counts.replace_partition(partition, [(s.stage, s.cycle) for s in states])
                self.timers.rebuild(partition, states)
            self.counts.keep_only(owned)
            self.timers.keep_only(owned)
            self.counted_generation = generation

    async def _tick(self) -> None:
        """Send a timer tick to each owned partition whose next deadline has come.

        The partition's clock is its event-time clock (processor.app.ordering) while
        anything is behind or held, and the wall clock once every input is idle.
        """
        if not self.readiness()[0]:
            return
        wall = datetime.now(UTC)
        caught_up = await self._caught_up()
        for partition in sorted(self.engine_partitions()):
            if self.ordering is not None:  # the event-time clock, or wall once caught up
                now = self.ordering.timer_clock(partition, wall)
            else:
                done = caught_up.get(partition, False)
                now = wall if done else self.timers.watermarks.get(partition)
            due = self.timers.next_due(partition)
            if now is None or due is None or due > now:
                continue
            sent_at = self.ticks_in_flight.get(partition)
            if sent_at is not None and time.monotonic() - sent_at < TICK_RETRY_SECONDS:
                continue  # the last tick has not been applied yet
            self.ticks_in_flight[partition] = time.monotonic()
            tick = Tick(f"{TICK_PREFIX}{uuid.uuid4()}", now)
            if self.send_internal is not None:
                await self.send_internal(encode_tick(tick), partition)
                continue
            delivery = await self.events.send(
                key=None, value=encode_tick(tick), partition=partition, force=True
            )
            if self.deliveries is not None:
                self.deliveries.track(delivery)

    def tick_applied(self, partition: int) -> None:
        self.ticks_in_flight.pop(partition, None)

    async def _caught_up(self) -> dict[int, bool]:
        """Per owned events partition: nothing left to read there, nor on this worker's inputs."""
        consumer, _ = self._consumer()
        sources_done = True
        done: dict[int, bool] = {}
        for tp in consumer.assignment():
            if (
                tp.topic not in self.settings.source_topics
                and tp.topic != self.settings.events_topic
            ):
                continue
            try:
                position = await consumer.position(tp)
                end = consumer.highwater(tp)
            except Exception:  # not fetched yet: not known to be caught up
                position, end = None, None
            behind = position is None or end is None or position < end
            if tp.topic == self.settings.events_topic:
                done[tp.partition] = not behind
            elif behind:
                sources_done = False
        return {p: d and sources_done for p, d in done.items()}

    def measure_lag(self) -> None:
        consumer, committed = self._consumer()
        watched = {*self.settings.source_topics, self.settings.events_topic}
        self.metrics.consumer_lag.clear()
        for tp in consumer.assignment():
            if tp.topic not in watched:
                continue
            try:
                end = consumer.highwater(tp)
            except Exception:  # no fetch response seen yet for this partition
                continue
            done = committed.get(tp) or 0
            if end is not None:
                self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(
                    max(0, end - done)
                )

    def _consumer(self) -> tuple[Any, Mapping[Any, int]]:
        """The consumer view to read, and the offsets it committed."""
        if self.consumers is not None:
            return self.consumers, self.consumers.committed
        consumer = self.app.consumer
        return consumer, getattr(consumer, "_committed_offset", {})

    def collect(self) -> Iterator[GaugeMetricFamily]:
        customers = GaugeMetricFamily(
            "journey_customers", "Customers per current stage on this worker", labels=["stage"]
        )
        for stage, n in self.counts.per_stage(self.model.stages).items():
            customers.add_metric([stage], n)
        yield customers
        recovery = self.recovery
        yield GaugeMetricFamily(
            "journey_recovery_in_progress",
            "1 while this worker restores tables from their changelogs",
            value=1 if recovery.in_recovery else 0,
        )
        yield GaugeMetricFamily(
            "journey_recovery_remaining_records",
            "Changelog records this worker still has to restore",
            value=recovery.active_remaining_total() if recovery.in_recovery else 0,
        )
        yield GaugeMetricFamily(
            "journey_ready", "1 when this worker is ready (see /readyz)", value=self.readiness()[0]
        )
        yield GaugeMetricFamily(
            "journey_timers_pending",
            "Absence timers armed in the customer state on this worker",
            value=self.timers.pending_total(),
        )


def _client_position(consumer: Any, tp: Any) -> object:
    """aiokafka's read position of ``tp`` without awaiting it (None before the first seek)."""
    client = consumer._thread._ensure_consumer()
    state = client._subscription.subscription.assignment.state_value(tp)
    return None if state is None else state.position


def _await_chain(coro: Any) -> list[str]:
    """Where a coroutine waits: each awaited coroutine's function, file and line."""
    frames: list[str] = []
    while coro is not None and len(frames) < 20:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            path = frame.f_code.co_filename
            frames.append(f"{frame.f_code.co_name} ({path}:{frame.f_lineno})")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return frames
