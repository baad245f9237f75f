"""The imperative shell around the engine: decode, route, apply, persist, send.

Two steps, each a Faust agent with concurrency 1:

* :class:`Router` reads the input topics in batches, dead-letters what cannot be
  decoded, and re-partitions valid events by customer_id into bundles (one
  record per target partition per batch) on the internal events topic. Input
  keys are not trusted: a null or wrong key still reaches its customer.
* :class:`Applier` applies one bundle at a time: each customer's state is read
  once, every event of the bundle applied in order, and the state written once,
  so the changelog sees one record per customer per bundle, not per event.

Identity (an identify event routed by its anonymous id, merge and forward control
messages, alias forgets) is carried out by :class:`processor.app.identity.IdentityShell`,
which the engine hands the groups that carry an anonymous id.

Delivery is at-least-once: offsets are committed only after Faust flushed the
producer, and a replay after a crash meets state that may already contain its
events; the engine then re-emits those events' changes with the same ids.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from processor.app.identity import IdentityShell
from processor.app.metrics import Metrics, Tally
from processor.app.ordering import PartitionOrder, Pending, RouterClock
from processor.app.partitioning import partition_for
from processor.app.store import CustomerStore, Settle, StateDeleted, StateTable, StateWritten
from processor.app.timers import TimerIndex, clamp_tick
from processor.contracts.bundle import (
    Envelope,
    ForgetMessage,
    InputPosition,
    Tick,
    decode_envelope,
    encode_bundle,
    encode_ordered_bundles,
)
from processor.contracts.erasure import encode_customer_erased
from processor.contracts.inputs import Rejection
from processor.contracts.limits import Limits, decode_record
from processor.contracts.outputs import (
    Record,
    encode_dead_letter,
    encode_stage_change,
    encode_trigger,
)
from processor.contracts.state import (
    chunk_key,
    decode_chunk,
    encode_chunk,
)
from processor.engine import (
    ChunkSealed,
    CustomerState,
    Event,
    JourneyModel,
    Source,
    StageChange,
    Step,
    apply,
    reemit,
)
from processor.engine.core import fire_due
from processor.engine.erasure import forget
from processor.engine.identity import is_identify, partition_key
from processor.engine.ordering import Arrival
from processor.engine.triggers import TriggerFired

log = logging.getLogger(__name__)

Send = Callable[[Record, int | None], Awaitable[None]]
"""Sends a record, to a given partition or (None) by key."""


@dataclass(frozen=True, slots=True)
class InputRecord:
    """What the router needs of a consumed record."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float | None = None
    """Create time (epoch seconds) of an internal-topic record: checks replay markers."""


def type_label(model: JourneyModel, source: Source, event_type: str) -> str:
    return event_type if model.evidence_for(source, event_type) is not None else "other"


class Router:
    """Decode input records, dead-letter bad ones, bundle the rest by target partition."""

    def __init__(
        self,
        *,
        model: JourneyModel,
        sources: dict[str, Source],
        partitions: int,
        send_bundle: Send,
        send_dead_letter: Send,
        metrics: Metrics,
        clock: RouterClock,
        limits: Limits | None = None,
    ) -> None:
        self.model = model
        self.clock = clock
        self.sources = sources
        self.partitions = partitions
        self.send_bundle = send_bundle
        self.send_dead_letter = send_dead_letter
        self.metrics = metrics
        self.limits = limits if limits is not None else Limits()
        self.tally = Tally()

    async def route(self, records: Iterable[InputRecord]) -> None:
        """Route one batch: dead letters as they are found, then bundles per partition.

        Each bundle carries its events' input positions, and the last one of a
        partition the batch's watermark marks; bundles are split by bytes. A send
        that fails raises: the caller stops the worker (fail-stop), so nothing of
        this batch is committed and all of it is read again.
        """
        bundles: dict[int, list[Arrival]] = defaultdict(list)
        pending = Pending()  # the batch's watermarks: claimed only once its bundles are sent
        try:
            for record in records:
                self.tally.add(self.metrics.records_consumed, record.topic, str(record.partition))
                pending.next_offset[(record.topic, record.partition)] = record.offset + 1
                event = await self._decode(record)
                if event is not None:
                    arrival = self.clock.arrival(event, record.partition, record.offset, pending)
                    key = partition_key(event, self.model)  # an identify: the anonymous id's
                    bundles[partition_for(key, self.partitions)].append(arrival)
        finally:
            self.tally.flush()
        marks = self.clock.marks(pending)
        for partition, arrivals in sorted(bundles.items()):
            for value in encode_ordered_bundles(arrivals, marks, self.limits.max_bundle_bytes):
                await self.send_bundle(Record(None, value, []), partition)
        self.clock.commit(pending)

    async def _decode(self, record: InputRecord) -> Event | None:
        source = self.sources[record.topic]
        try:
            decoded = decode_record(record.key, record.value, source, record.topic, self.limits)
        except Exception as exc:  # a decoder bug must not stop the stream
            log.exception(
                "decoding failed at %s[%d]@%d", record.topic, record.partition, record.offset
            )
            await self.dead_letter(record, "processing_error", repr(exc)[:500])
            return None
        if isinstance(decoded, Rejection):
            await self.dead_letter(record, decoded.reason, decoded.detail)
            return None
        if self.model.evidence_for(source, decoded.type) is None and not is_identify(
            decoded, self.model
        ):
            self.tally.add(self.metrics.events, record.topic, "other", "ignored")
            self.tally.add(self.metrics.records, record.topic, str(record.partition), "ignored")
            return None
        return decoded

    async def dead_letter(self, record: InputRecord, reason: str, detail: str) -> None:
        letter = encode_dead_letter(
            reason=reason,
            detail=detail,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            payload=record.value,
        )
        await self.send_dead_letter(letter, None)
        self.metrics.dead_letters.labels(record.topic, reason).inc()
        self.metrics.events.labels(record.topic, "unknown", "dead_lettered").inc()
        self.metrics.outcome(record.topic, record.partition, "dead_lettered")


class Applier:
    """Apply bundles of events to customer state held in two Faust tables."""

    def __init__(
        self,
        *,
        model: JourneyModel,
        states: StateTable,
        chunks: StateTable,
        send_change: Send,
        send_trigger: Send,
        send_dead_letter: Send,
        ce_source: str,
        metrics: Metrics,
        timers: TimerIndex,
        ordering: PartitionOrder,
        on_state_written: StateWritten | None = None,
        on_tick_applied: Callable[[int], None] | None = None,
        send_erased: Send | None = None,
        on_state_deleted: StateDeleted | None = None,
        on_erased: Callable[[int, str], None] | None = None,
        settle: Settle | None = None,
        aliases: StateTable | None = None,
        send_internal: Send | None = None,
        send_identity: Send | None = None,
        partitions: int = 1,
    ) -> None:
        self.model = model
        self.settle = settle
        self.send_erased = send_erased
        self.on_state_deleted = on_state_deleted
        self.on_erased = on_erased
        """Told (partition, customer_id) once a customer's keys are deleted (store compaction)."""
        self.ordering = ordering
        self.timers = timers
        self.on_tick_applied = on_tick_applied
        self.send_trigger = send_trigger
        self.on_state_written = on_state_written
        self.states = states
        self.chunks = chunks
        self.send_change = send_change
        self.send_dead_letter = send_dead_letter
        self.ce_source = ce_source
        self.metrics = metrics
        self.store = CustomerStore(
            states,
            chunks,
            on_state_written=self._state_written,
            on_state_deleted=self._state_deleted,
            aliases=aliases,
        )
        self.identity = IdentityShell(
            model=model,
            store=self.store,
            route=lambda customer_id: partition_for(customer_id, partitions),
            send_internal=send_internal,
            send_identity=send_identity,
            send_outputs=self._send_outputs,
            metrics=metrics,
            ce_source=ce_source,
            settle=settle,
        )
        self.tally = Tally()
        """Counts of events, records' outcomes, stage changes and triggers, over a bundle."""

    def _state_written(
        self, partition: int, before: CustomerState | None, after: CustomerState
    ) -> None:
        self.timers.on_state_written(partition, before, after)
        if self.on_state_written is not None:
            self.on_state_written(partition, before, after)

    def _state_deleted(self, partition: int, before: CustomerState) -> None:
        self.timers.on_state_deleted(partition, before)
        if self.on_state_deleted is not None:
            self.on_state_deleted(partition, before)

    async def apply_bundle(self, raw: bytes, position: InputRecord) -> None:
        """Apply one bundle; ``position`` is where it was read, for dead letters."""
        started = time.perf_counter()
        try:
            await self._apply_envelope(raw, position)
        finally:  # counts of whatever was applied, even when a failure stops the worker
            self.tally.flush()
        self.metrics.bundle_seconds.observe(time.perf_counter() - started)

    async def _apply_envelope(self, raw: bytes, position: InputRecord) -> None:
        try:
            envelope = decode_envelope(raw)
        except Exception as exc:  # not a bundle we wrote: no input record is behind it
            await self._dead_letter(position, raw, exc)
            self.ordering.processed(position.partition, position.offset)
            return
        if envelope.tick is not None:
            await self._apply_tick(envelope.tick, position)
        elif envelope.forget is not None:
            await self._apply_forget(envelope.forget, position.partition)
        elif envelope.merge is not None:  # identity (processor/app/identity.py)
            archive = _Archive(self.chunks, envelope.merge.customer_id, position.partition)
            await self.identity.merge(envelope.merge, position.partition, archive)
        elif envelope.forward is not None:  # already ordered on the anonymous id's partition
            forwarded = envelope.forward
            await self._apply_customer(forwarded.customer_id, forwarded.events, position)
        else:
            await self._apply_events(envelope, position)
            return
        # Processed, its sends out: part of the run a replay marker may name (ordering.py).
        self.ordering.processed(position.partition, position.offset)

    async def _apply_events(self, envelope: Envelope, position: InputRecord) -> None:
        """A bundle of events: released in event-time order, then applied per customer."""
        released = await self.ordering.release(
            envelope, position.partition, position.offset, position.timestamp
        )
        by_customer: dict[str, list[tuple[Event, InputPosition | None]]] = defaultdict(list)
        for event, origin in released:
            by_customer[partition_key(event, self.model)].append((event, origin))
        for customer_id, customer_events in by_customer.items():
            # A store or send failure raises out of here: the agent stops the worker
            # (fail-stop) rather than dead-letter events whose outputs may be out.
            if any(e.anonymous_id is not None for e, _ in customer_events):
                await self.identity.apply(
                    customer_id,
                    customer_events,
                    position.partition,
                    lambda key, events, _: self._apply_customer(key, events, position),
                )
            else:
                await self._apply_customer(customer_id, customer_events, position)

    async def _apply_customer(
        self,
        customer_id: str,
        events: Sequence[tuple[Event, InputPosition | None]],
        position: InputRecord,
    ) -> None:
        metrics = self.metrics
        state = before = self.store.get(customer_id)
        archive = _Archive(self.chunks, customer_id, position.partition)
        replayed = False
        for event, origin in events:
            started = time.perf_counter()
            try:
                if state is not None and archive.holds(state, event.event_id):
                    step = reemit(state, event.event_id)
                else:
                    step = apply(state, event, self.model)
            except Exception as exc:  # the engine cannot take this event: nothing was sent
                await self._dead_letter(position, encode_bundle([event]), exc)
                self._count(event, origin, "dead_lettered")
                continue
            metrics.processing_seconds.observe(time.perf_counter() - started)
            metrics.event_time_lag.observe(time.time() - event.occurred_at.timestamp())
            state = step.state
            replayed = replayed or step.outcome == "duplicate"
            label = type_label(self.model, event.source, event.type)
            self.tally.add(metrics.events, event.topic, label, step.outcome)
            self._count(event, origin, step.outcome)
            if step.outputs:  # four events in five have none: no coroutine for them
                for output in step.outputs:
                    if isinstance(output, ChunkSealed):
                        await archive.seal(output)
                await self._send_outputs(step)
        if state is not None and (state is not before or replayed):
            # A replayed event means this state may be in the local store but not yet
            # in the changelog (a crash between the two): write it again, so that the
            # next owner of the partition cannot recover an older state than the
            # committed offsets imply.
            await self.store.put(position.partition, before, state)

    def _count(self, event: Event, origin: InputPosition | None, outcome: str) -> None:
        """Count the input record's outcome (as Metrics.outcome does, a bundle at a time)."""
        if origin is not None:
            self.tally.add(self.metrics.records, event.topic, str(origin[0]), outcome)

    async def _apply_forget(self, message: ForgetMessage, partition: int) -> None:
        """Forget a customer on the partition that owns it, then confirm (processor/app/erasure.py).

        Its held events arrived before the request: they are dropped, and counted
        ``erased``. Then the store tombstones its chunks and, last, its state (a
        replay that still finds the state does everything again; one that finds
        none tombstones the state key again and confirms, with the same id and
        bytes). The confirmation goes out only once every tombstone is delivered
        (``settle``). A failure raises: fail-stop.
        """
        if message.unlink_from is not None:  # a forgotten anonymous id, out of its customer
            await self.identity.unlink(message, partition)
            if self.on_erased is not None:  # the old values holding the id, off the disk too
                self.on_erased(partition, message.unlink_from)
            return
        if self.send_erased is None:
            raise RuntimeError("a forget request, but no erasures topic to confirm on")
        request = message.request
        state = self.store.get(request.customer_id)
        decision = forget(state, request)

        def identifies(event: Event) -> bool:  # held here for the anonymous id: it goes too
            return event.anonymous_id == request.customer_id and is_identify(event, self.model)

        dropped = await self.ordering.drop_customer(partition, request.customer_id, identifies)
        for held in dropped:
            self.metrics.outcome(held.event.topic, held.key[2], "erased")
        await self.identity.forget_aliases(message)  # before the list that names them goes
        await self.identity.unlink_forgotten(message)  # before the alias that names its customer
        await self.store.delete(partition, request.customer_id, decision, state, self.settle)
        if self.on_erased is not None:
            self.on_erased(partition, request.customer_id)
        if self.settle is not None and not await self.settle():
            raise RuntimeError(f"the tombstones of {request.customer_id!r} were not delivered")
        await self.send_erased(encode_customer_erased(decision.confirmation, self.ce_source), None)
        if message.alias_of is None:  # an alias's forget: its request is counted at its customer
            self.metrics.outcome(message.source[0], message.source[1], "applied")
            self.metrics.erasures.labels("found" if decision.had_state else "none").inc()

    async def _apply_tick(self, tick: Tick, position: InputRecord) -> None:
        """Fire the partition's due timers; a replayed tick re-emits what it fired."""
        tick = clamp_tick(tick, self.timers.max_clock_skew)  # a forged tick fires nothing early
        partition = position.partition
        customers = dict.fromkeys(self.timers.pop_due(partition, tick.now))
        customers.update(dict.fromkeys(self.timers.fired_by(partition, tick.id)))
        fired: set[str] = set()
        for customer_id in customers:
            state = self.store.get(customer_id)
            if state is None:
                continue
            step = fire_due(state, tick.now, tick.id, self.model)
            if step.outputs:
                fired.add(customer_id)
            for output in step.outputs:
                if isinstance(output, TriggerFired) and step.outcome == "applied":
                    lateness = (tick.now - output.fired_at).total_seconds()
                    self.metrics.timer_lateness.observe(max(0.0, lateness))
            await self._send_outputs(step)
            if step.state is not None and step.state is not state:
                await self.store.put(partition, state, step.state)
        if fired:
            self.timers.record_tick(partition, tick.id, fired)
        if self.on_tick_applied is not None:
            self.on_tick_applied(partition)

    async def _send_outputs(self, step: Step) -> None:
        again = step.outcome == "duplicate"
        for output in step.outputs:
            if isinstance(output, StageChange):
                await self._send(output, again=again)
            elif isinstance(output, TriggerFired):
                await self.send_trigger(encode_trigger(output, self.ce_source), None)
                if not again:
                    self.tally.add(self.metrics.triggers, output.rule)

    async def _send(self, change: StageChange, *, again: bool) -> None:
        await self.send_change(encode_stage_change(change, self.ce_source), None)
        if again:
            self.tally.add(self.metrics.reemitted)
        else:
            self.tally.add(self.metrics.stage_changes, change.from_stage or "none", change.to_stage)

    async def _dead_letter(self, position: InputRecord, payload: bytes, exc: Exception) -> None:
        log.exception(
            "engine failed on %s[%d]@%d",
            position.topic,
            position.partition,
            position.offset,
            exc_info=exc,
        )
        letter = encode_dead_letter(
            reason="processing_error",
            detail=repr(exc)[:500],
            topic=position.topic,
            partition=position.partition,
            offset=position.offset,
            key=position.key,
            payload=payload,
        )
        await self.send_dead_letter(letter, None)
        self.metrics.dead_letters.labels(position.topic, "processing_error").inc()


class _Archive:
    """A customer's sealed dedupe chunks: read at most once per bundle, and only if needed."""

    def __init__(self, chunks: StateTable, customer_id: str, partition: int) -> None:
        self.chunks = chunks
        self.customer_id = customer_id
        self.partition = partition
        self.ids: set[str] | None = None

    def holds(self, state: CustomerState, event_id: str) -> bool:
        """Whether the event id is in a sealed chunk (the open chunk is the engine's)."""
        if not state.sealed_chunks or event_id in state.recent_event_ids:
            return False
        if self.ids is None:
            self.ids = set()
            for index in state.sealed_chunks:
                raw = self.chunks.get(chunk_key(self.customer_id, index))
                if raw is not None:
                    self.ids.update(decode_chunk(raw))
        return event_id in self.ids

    async def seal(self, sealed: ChunkSealed) -> None:
        key = chunk_key(sealed.customer_id, sealed.index)
        raw = encode_chunk(sealed.event_ids, sealed.customer_id)
        await self.chunks.put(key, raw, self.partition)
        expired = chunk_key(sealed.customer_id, sealed.expired_index)
        if sealed.expired_index >= 0 and self.chunks.get(expired) is not None:
            await self.chunks.delete(expired, self.partition)
        if self.ids is not None:
            self.ids.update(sealed.event_ids)
