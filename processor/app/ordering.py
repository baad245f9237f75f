"""The shell of event-time ordering: watermarks at the router, the hold buffer at the engine.

The rules are pure (:mod:`processor.engine.ordering`); this module keeps their
state, reads the consumer's positions, and persists what is held.

Router side (:class:`RouterClock`). Per input partition this worker reads: the
newest trustworthy ``occurred_at`` routed, the next offset routed, and when the
last record came. A partition is *idle* once everything up to its end has been
routed (or committed) and nothing came for ``idle_timeout``. Marks go out with
every bundle, and in a watermark bundle to every customer partition whenever
they changed (at most every ``MARK_INTERVAL``), so a customer partition learns
the clock even when no event is bound for it.

Engine side (:class:`PartitionOrder`). Per customer partition the ordering state
(marks, clock, frontier, held events) lives in memory and in the changelog-backed
``event-order`` table, so held events survive SIGKILL and move with the
partition in a rebalance:

* ``clock:<p>``: marks, clock and frontier; written at most once per message;
* ``held:<p>:<offset>``: the events a message left held, written once when it
  arrives. Nothing growing is ever rewritten. On recovery, held events at or
  below the stored frontier were applied already and are dropped.

The message's offset is only committed after these writes are flushed (Faust's
at-least-once commit), so a crash either replays the message (its events are
held again, under the same key) or finds them in the table.

**Nothing released leaves the table before it is applied and delivered.** The
events a message releases come out of older messages' ``held`` records, and the
engine applies them after the release (state and chunk writes, outputs, to other
topics than the ``event-order`` changelog). Had a record's delete, or a stored
frontier past its events, been delivered and the state writes not, the next
owner would find the events neither held nor applied: lost (the short chaos run
lost two that way). So a release only notes its clean-up (records to delete, or
to rewrite smaller), and the clock record carries the frontier as of the last
replay marker; both move on with the next marker, which first waits until the
broker confirmed everything the earlier releases sent (and :meth:`checkpoint`
before an erasure rewrites held records). Until then a recovery holds some
applied events again, and the engine recognises them: they are fewer than the
bound below, well inside the dedupe window.

**Replays stay inside the dedupe window.** A replay from the committed offset
applies every event of the replayed messages again, and the engine recognises
an event only while it is among its customer's last 1,024 applied ids
(``DEDUPE_CHUNK * DEDUPE_KEEP_CHUNKS``). The committed offset can fall far
behind what was applied (a commit refused during a rebalance, a hole of a
record Faust acked unprocessed that only the next seek fills, a worker paused
mid-interval), and a hot customer's events then come back as new ones: the
chaos suite saw 25 s of ``s2-hot1``'s partition replayed after a pause and
15 events applied twice. So the clock record also carries a *replay marker*,
``through``: the offset of the last message whose every effect (state and
chunk writes, outputs, held records) the broker confirmed, and the wall-clock
time it was written. Before a message would take the events applied since the
last marker past :data:`REPLAY_BOUND`, the engine waits for every delivery so
far, writes a new marker and waits for that too. A later owner, or this worker
after a restart, skips the events of a replayed message at or below the
marker: they were applied (or are held in the table) and their effects are
out. What a replay applies again is then at most the events released since the
marker, which :data:`REPLAY_BOUND` (or one message's own release, far below the
window at the default ``JOURNEY_BATCH_MAX``) keeps inside the window. The count
of events released since the marker (``since``) is in the clock record too, so
that it survives a rebalance: counted per owner, a partition that changes hands
more often than it releases the bound's worth would never get a marker.

A marker that does not reach down to offset 0 does not replace one that did: a
session that started where no commit was known marks only its own range, and
the embedded broker's groups can lose their commits again, so the older reach
from 0 is kept beside it (``floor``) until a marker from 0 covers it again
(chaos seed 2 saw a hot customer's first 1,615 events applied twice without it).

A marker only vouches for the partition as it was: a topic recreated after an
embedded broker lost everything starts again at offset 0 while a kept volume
still holds the old marker. A message is skipped only if it was also created
no later than the marker was written (plus :data:`MARKER_CLOCK_SLACK` for the
clocks of other hosts): every message of a recreated topic was created after
the broker came back, so it is never skipped.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import orjson
from msgspec.structs import replace

from processor.app.metrics import Metrics
from processor.contracts.bundle import Envelope, InputPosition
from processor.engine import Event
from processor.engine.ordering import (
    Arrival,
    Held,
    InputPartition,
    InputWatermark,
    Key,
    Mark,
    Ordering,
    OrderingConfig,
    Released,
    accept,
    held_from,
    is_skewed,
    restore,
    timer_clock,
)
from processor.settings import Settings

log = logging.getLogger(__name__)

MARK_INTERVAL = 0.25
"""Seconds between watermark bundles while anything moves: bounds the added latency."""

QUIET_AFTER = 10.0
"""Seconds without records or idleness changes after which watermark bundles slow down."""

HEARTBEAT = 5.0
"""Seconds between watermark bundles on a quiet system (idle marks follow the wall clock)."""

REPLAY_BOUND = 512
"""Most events a partition may apply after its last replay marker before it writes a new one.

Half the engine's dedupe window (1,024 ids per customer): a replay applies again
at most this many events (or one message's own release), all still recognised."""

MARKER_CLOCK_SLACK = 1.0
"""Seconds a replayed message's create time may lie after its marker's write time (host clocks)."""

Settle = Callable[[], Awaitable[bool]]
"""Waits for every delivery so far; False if one failed (failstop.Deliveries.settle)."""

Marker = tuple[int, float, int]
"""A replay marker: (offset of the last message whose effects are delivered, written at, offset
of the first): every message from the first to the last was processed, in order."""

Floor = tuple[int, float]
"""What an earlier marker vouched for from offset 0: (its last offset, written at). Kept when
a later marker's range does not reach down to 0, so that no marker takes away what another
said: every message from 0 to the last one was processed, in order."""

Wall = Callable[[], datetime]


def wall_clock() -> datetime:
    return datetime.now(UTC)


def ordering_config(settings: Settings) -> OrderingConfig:
    return OrderingConfig(
        lateness=timedelta(seconds=settings.allowed_lateness),
        max_held=settings.max_held_events,
        max_clock_skew=timedelta(seconds=settings.max_clock_skew),
    )


# --------------------------------------------------------------------------- router side


@dataclass
class Pending:
    """What one batch would advance; applied with :meth:`RouterClock.commit` after sending."""

    seen: dict[InputPartition, InputWatermark] = field(default_factory=dict)
    next_offset: dict[InputPartition, int] = field(default_factory=dict)


@dataclass
class RouterClock:
    """Watermarks of the input partitions this worker's router reads."""

    config: OrderingConfig
    idle_timeout: float
    wall: Wall = wall_clock
    monotonic: Callable[[], float] = time.monotonic
    seen: dict[InputPartition, InputWatermark] = field(default_factory=dict)
    next_offset: dict[InputPartition, int] = field(default_factory=dict)
    last_record: dict[InputPartition, float] = field(default_factory=dict)
    idle: dict[InputPartition, bool] = field(default_factory=dict)
    assigned: set[InputPartition] = field(default_factory=set)
    sent: dict[InputPartition, Mark] = field(default_factory=dict)
    """The marks of the last watermark bundle."""
    sent_at: float = 0.0
    changed_at: float = 0.0
    """When records last came or an idle flag last changed (monotonic)."""

    def arrival(self, event: Event, partition: int, offset: int, pending: Pending) -> Arrival:
        """The event as the engine side gets it; its partition's watermark advances (pending)."""
        where = (event.topic, partition)
        pending.next_offset[where] = offset + 1
        if is_skewed(event.occurred_at, self.wall(), self.config.max_clock_skew):
            return Arrival(event, partition, offset, skewed=True)
        seen = pending.seen.get(where) or self.seen.get(where) or InputWatermark()
        pending.seen[where] = seen.advanced(event.occurred_at)
        return Arrival(event, partition, offset)

    def commit(self, pending: Pending) -> None:
        """After the batch's bundles were sent: its watermarks may now be claimed."""
        now = self.monotonic()
        self.seen.update(pending.seen)
        self.next_offset.update(pending.next_offset)
        for where in pending.next_offset:
            self.last_record[where] = now
            self.idle[where] = False
        if pending.next_offset:
            self.changed_at = now

    def marks(self, pending: Pending | None = None) -> dict[InputPartition, Mark]:
        """Marks of every assigned input partition (with a batch's pending advance)."""
        wall = self.wall()
        marks = {}
        for where in sorted(self.assigned | set(pending.seen if pending else ())):
            seen = (pending.seen.get(where) if pending else None) or self.seen.get(where)
            marks[where] = (seen or InputWatermark()).mark(
                idle=self.idle.get(where, False), wall=wall, lateness=self.config.lateness
            )
        return marks

    def reassigned(self, assigned: Iterable[InputPartition]) -> None:
        """A rebalance: forget partitions given up; quiet time of new ones starts now."""
        self.assigned = set(assigned)
        now = self.monotonic()
        for mapping in (self.seen, self.next_offset, self.last_record, self.idle, self.sent):
            for where in set(mapping) - self.assigned:
                del mapping[where]
        for where in self.assigned:
            self.last_record.setdefault(where, now)

    def update_idle(self, ends: dict[InputPartition, tuple[int | None, int | None]]) -> None:
        """``ends``: per assigned partition, (end offset, committed offset), None if unknown."""
        now = self.monotonic()
        for where, (end, committed) in ends.items():
            done = max(self.next_offset.get(where, 0), committed or 0)
            caught_up = end is not None and done >= end
            quiet = now - self.last_record.get(where, now) >= self.idle_timeout
            if self.idle.get(where) != (caught_up and quiet):
                self.changed_at = now
            self.idle[where] = caught_up and quiet

    def due(self) -> dict[InputPartition, Mark] | None:
        """The marks to broadcast, if they changed since the last broadcast.

        On a quiet system only the idle marks' wall-clock watermarks move; they go out
        every HEARTBEAT instead of every MARK_INTERVAL, so an idle processor does not
        write a record per partition four times a second."""
        marks = self.marks()
        if marks == self.sent or not marks:
            return None
        now = self.monotonic()
        quiet = now - self.changed_at >= QUIET_AFTER
        if quiet and now - self.sent_at < HEARTBEAT:
            return None
        self.sent = marks
        self.sent_at = now
        return marks


# --------------------------------------------------------------------------- engine side


class OrderTable(Protocol):
    def get(self, key: bytes, /) -> bytes | None: ...
    def items(self) -> Iterable[tuple[bytes, bytes]]: ...
    async def put(self, key: bytes, value: bytes, partition: int) -> None: ...
    async def delete(self, key: bytes, partition: int) -> None: ...


def clock_key(partition: int) -> bytes:
    return b"clock:%d" % partition


def held_key(partition: int, origin: int) -> bytes:
    return b"held:%d:%d" % (partition, origin)


def order_version(raw: bytes) -> int:
    """Version of a stored value (for the monotonic table): the clock record's write count."""
    if not raw.startswith(b'{"n"'):
        return 0
    n: int = orjson.loads(raw)["n"]
    return n


@dataclass
class PartitionOrder:
    """Orders each customer partition's events by event time before the engine applies them."""

    table: OrderTable
    config: OrderingConfig
    inputs: Callable[[], frozenset[InputPartition] | None]
    """Every input partition (from topic metadata); None while not known."""
    metrics: Metrics
    wall: Wall = wall_clock
    settle: Settle | None = None
    """Waits for the broker to confirm every send so far; None: writes are delivered at once."""
    replay_bound: int = REPLAY_BOUND
    committed: Callable[[int], int | None] | None = None
    """The partition's committed offset (Faust's consumer); None: not known."""
    states: dict[int, Ordering] = field(default_factory=dict)
    remaining: dict[int, Counter[int]] = field(default_factory=dict)
    """Per partition: events still held per stored message (its offset)."""
    writes: dict[int, int] = field(default_factory=dict)
    through: dict[int, Marker] = field(default_factory=dict)
    """Per partition: the replay marker (see the module's docstring)."""
    floor: dict[int, Floor] = field(default_factory=dict)
    """Per partition: the reach from offset 0 of an earlier marker that a later one, not
    starting at 0, would otherwise have replaced (see :data:`Floor`)."""
    since: dict[int, int] = field(default_factory=dict)
    """Per partition: events released since the last replay marker was written."""
    run: dict[int, tuple[int, int]] = field(default_factory=dict)
    """Per partition: the first and last offset of the messages this owner processed in a row,
    each after the one before (a seek back, or one skipped, starts a new run)."""
    replaying: set[int] = field(default_factory=set)
    """Partitions whose replay below the marker was logged since they were loaded."""
    cleanup: dict[int, dict[int, bytes | None]] = field(default_factory=dict)
    """Per partition: held records emptied (None) or shrunk (their new value) by releases,
    written only with the next marker, once what those releases applied is delivered."""
    touched: set[int] = field(default_factory=set)
    """Origins whose clean-up the message being accepted noted (not ready before it applies)."""
    durable: dict[int, Key | None] = field(default_factory=dict)
    """Per partition: the frontier the clock record carries, as of the last marker."""

    async def release(
        self, envelope: Envelope, partition: int, offset: int, created: float | None = None
    ) -> list[tuple[Event, InputPosition | None]]:
        """The events to apply now, in application order, for one bundle of the internal topic,
        each with its input position (None for a v1 bundle, which carries none).

        ``created`` is the message's create time (epoch seconds), if known: a replayed
        message in the range of the partition's replay marker applies nothing again.
        A v1 bundle (from a worker before event-time ordering) is applied at once."""
        if not envelope.ordered:
            return [(a.event, None) for a in envelope.arrivals]
        if self.replayed(partition, offset, created):
            for a in envelope.arrivals:  # counted again as duplicates, as any replay is
                self.metrics.outcome(a.event.topic, a.partition, "duplicate")
            self.metrics.replay_skipped.inc(len(envelope.arrivals))
            return []
        # Every earlier release is applied by now: its clean-up and frontier may be written
        # with a marker; what this message changes, only once it is applied in turn.
        applied = self.state(partition).frontier
        ready = set(self.cleanup.get(partition, ()))
        self.touched.clear()
        released = await self.accept(partition, offset, envelope.arrivals, envelope.marks)
        await self._bound_replay(partition, offset, len(released), applied, ready - self.touched)
        return [
            (replace(r.event, late=True) if r.why == "late" else r.event, r.position)
            for r in released
        ]

    def replayed(self, partition: int, offset: int, created: float | None) -> bool:
        """Whether the message is in the replay marker's range: its effects are out already."""
        self.state(partition)  # loads the marker with the rest
        if created is None:
            return False
        marker = self.through.get(partition)
        floor = self.floor.get(partition)
        if (
            marker is not None
            and marker[2] <= offset <= marker[0]
            and created <= marker[1] + MARKER_CLOCK_SLACK
        ):
            through = marker[0]
        elif floor is not None and offset <= floor[0] and created <= floor[1] + MARKER_CLOCK_SLACK:
            through = floor[0]
        else:
            return False
        if partition not in self.replaying:  # the first replayed record since it loaded
            self.replaying.add(partition)
            log.info(
                "partition %d: replaying from offset %d; the events of records up to %d were "
                "applied and delivered before (replay marker): not applied again",
                partition,
                offset,
                through,
            )
            self.since[partition] = 0
        self.processed(partition, offset)  # its effects are out: part of the run
        return True

    def processed(self, partition: int, offset: int) -> None:
        """Note a message of the partition as processed (any kind, once its sends are out).

        A marker only ever names a run of messages processed one after the other: a
        message processed out of order (buffered before a seek back to the committed
        offset, then the seek) must not let a marker vouch for the ones below it that
        were not processed yet.
        """
        run = self.run.get(partition)
        if run is not None and offset == run[1] + 1:
            self.run[partition] = (run[0], offset)
        elif run is None or not run[0] <= offset <= run[1]:
            self.run[partition] = (offset, offset)

    async def _bound_replay(
        self, partition: int, offset: int, released: int, applied: Key | None, ready: set[int]
    ) -> None:
        """Write a replay marker before this message's events would pass the bound.

        Called after :meth:`accept`, before the engine applies what it released:
        the marker names the previous message, every effect of which is then
        confirmed by the broker; the marker's own write is confirmed too before
        anything of this message is applied. With it go the clean-up of the
        earlier releases and ``applied``, the frontier as of the previous message.
        """
        since = self.since.get(partition, 0)
        run = self.run.get(partition)
        if since and run is not None and since + released > self.replay_bound:
            await self._settled(partition)
            await self._clean_up(partition, ready)
            self.durable[partition] = applied
            low, high = run
            old = self.through.get(partition)
            start = self.committed(partition) if self.committed is not None else None
            if start is not None and low <= start:
                low = 0  # below the commit everything was processed: the range reaches down
            elif old is not None and old[2] <= low <= old[0] + 1:
                low = old[2]  # the old marker's messages and this run: one unbroken range
            self._keep_floor(partition, old, low, high)
            self.through[partition] = (high, self.wall().timestamp(), low)
            self.since[partition] = since = 0  # the clock record says so too
            await self._write_clock(partition, self.state(partition))
            await self._settled(partition)
        self.since[partition] = since + released
        self.processed(partition, offset)

    def _keep_floor(self, partition: int, old: Marker | None, low: int, high: int) -> None:
        """Keep what the old marker vouched for from 0 when the new one will not reach 0.

        A session whose start is not known to be committed (the commit lost, or not
        read yet) marks only from where it started; replacing a marker from 0 with that
        range left a replay from 0 (the commit lost again) applying everything below it
        again: a hot customer's whole history, far beyond the dedupe window (chaos seed
        2, 1,615 events applied twice). A processed message stays processed, so the old
        reach is kept beside the new range until a marker from 0 covers it again.
        """
        floor = self.floor.get(partition)
        if old is not None and old[2] == 0 and low > 0 and (floor is None or old[0] > floor[0]):
            self.floor[partition] = floor = (old[0], old[1])
        if floor is not None and low == 0 and high >= floor[0]:
            del self.floor[partition]

    async def checkpoint(self, partition: int) -> None:
        """Every release so far is applied: once delivered, write its clean-up and frontier."""
        await self._settled(partition)
        await self._clean_up(partition)
        self.durable[partition] = self.state(partition).frontier
        await self._write_clock(partition, self.state(partition))

    async def _clean_up(self, partition: int, ready: set[int] | None = None) -> None:
        """Write the held records' clean-up (of ``ready`` origins, or all), after a settle."""
        pending = self.cleanup.get(partition, {})
        for origin in sorted(pending if ready is None else ready & pending.keys()):
            value = pending.pop(origin)
            if value is None:
                await self.table.delete(held_key(partition, origin), partition)
            else:
                await self.table.put(held_key(partition, origin), value, partition)

    async def _settled(self, partition: int) -> None:
        if self.settle is not None and not await self.settle():
            raise RuntimeError(f"partition {partition}: a send failed before its replay marker")

    async def accept(
        self,
        partition: int,
        offset: int,
        arrivals: list[Arrival],
        marks: dict[InputPartition, Mark],
    ) -> tuple[Released, ...]:
        before = self.state(partition)
        inputs = self.inputs()
        after, released = accept(
            before,
            arrivals,
            marks,
            inputs=inputs if inputs is not None else (),
            now=self.wall(),
            config=self.config,
            origin=offset,
        )
        self.states[partition] = after
        await self._persist(partition, offset, before, after, released, arrivals)
        self._count(partition, after, released)
        return released

    def state(self, partition: int) -> Ordering:
        state = self.states.get(partition)
        if state is None:
            state = self._load(partition)
            self.states[partition] = state
        return state

    def clock(self, partition: int) -> datetime | None:
        return self.state(partition).clock

    def timer_clock(self, partition: int, wall: datetime) -> datetime | None:
        fresh = timedelta(seconds=HEARTBEAT + 2.0)  # idle marks come at least this often
        return timer_clock(self.state(partition), wall, self.config.lateness, fresh)

    async def drop_customer(
        self, partition: int, customer_id: str, also: Callable[[Event], bool] | None = None
    ) -> list[Held]:
        """Erasure: drop a customer's held events (they arrived before the request).

        Each stored message that held any of them is rewritten with the events it
        still holds for others, or deleted, so neither memory nor the changelog's
        live keys keep the customer. Returns what was dropped, for its accounting.

        ``also`` names other events to drop: an anonymous id's identify events, which
        are held on its partition under the customer's id.

        Not repeated on a replay: if a rewrite's delivery fails (the worker stops),
        the local table is already rewritten and the changelog keeps the old
        record. Another worker recovering the partition from the changelog before
        the frontier passes those events would apply them (a short-lived gap;
        once the frontier is past them, recovery drops them).
        """
        if self.cleanup.get(partition):  # older values of records rewritten below must not win
            await self.checkpoint(partition)
        state = self.state(partition)

        def mine(event: Event) -> bool:
            return event.customer_id == customer_id or (also is not None and also(event))

        dropped = [h for h in state.held if mine(h.event)]
        if not dropped:
            return []
        kept = tuple(h for h in state.held if not mine(h.event))
        self.states[partition] = Ordering(state.marks, state.clock, state.frontier, kept)
        remaining = self.remaining.setdefault(partition, Counter())
        for origin in sorted({h.origin for h in dropped}):
            rest = [h for h in kept if h.origin == origin]
            if rest:
                remaining[origin] = len(rest)
                await self.table.put(held_key(partition, origin), _encode_held(rest), partition)
            else:
                remaining.pop(origin, None)
                await self.table.delete(held_key(partition, origin), partition)
        self.metrics.events_held.labels(str(partition)).set(len(kept))
        return dropped

    def forget(self) -> None:
        """After a rebalance: reload from the table on next use (the partition may have moved)."""
        self.states.clear()
        self.remaining.clear()
        self.through.clear()
        self.floor.clear()
        self.since.clear()
        self.run.clear()
        self.replaying.clear()
        self.cleanup.clear()  # the table keeps those events: held again, then duplicates
        self.durable.clear()

    async def _persist(
        self,
        partition: int,
        offset: int,
        before: Ordering,
        after: Ordering,
        released: tuple[Released, ...],
        arrivals: list[Arrival],
    ) -> None:
        remaining = self.remaining.setdefault(partition, Counter())
        # This message's record holds what ``after`` still holds of it, counted afresh;
        # events it held and released in this same call (its own marks moved the clock)
        # must not count it down as well, or it is deleted while some are still held.
        # A record's events leave it only once what released them is applied and
        # delivered: the clean-up waits for the next marker (see the module's docstring).
        cleanup = self.cleanup.setdefault(partition, {})
        fresh = held_from(after, offset, arrivals) if arrivals else []
        if fresh:
            stored = remaining.get(offset)
            if stored is None or len(fresh) > stored:  # new events held: stored before commit
                remaining[offset] = len(fresh)
                cleanup.pop(offset, None)
                self.touched.add(offset)
                await self.table.put(held_key(partition, offset), _encode_held(fresh), partition)
            elif len(fresh) < stored:  # a redelivered message keeps fewer
                remaining[offset] = len(fresh)
                cleanup[offset] = _encode_held(fresh)
                self.touched.add(offset)
        elif offset in remaining:  # a redelivered message whose held events all went now
            del remaining[offset]
            cleanup[offset] = None
            self.touched.add(offset)
        for r in released:
            origin = r.origin
            if origin is None or origin == offset or origin not in remaining:
                continue
            left = remaining[origin] - 1
            if left > 0:
                remaining[origin] = left
            else:
                del remaining[origin]
                cleanup[origin] = None
                self.touched.add(origin)
        if (after.marks, after.clock) != (before.marks, before.clock):
            await self._write_clock(partition, after)

    async def _write_clock(self, partition: int, state: Ordering) -> None:
        n = self.writes.get(partition, 0) + 1
        self.writes[partition] = n
        durable = Ordering(state.marks, state.clock, self.durable.get(partition), ())
        value = _encode_clock(
            n,
            durable,
            self.through.get(partition),
            self.since.get(partition, 0),
            self.floor.get(partition),
        )
        await self.table.put(clock_key(partition), value, partition)

    def _load(self, partition: int) -> Ordering:
        raw = self.table.get(clock_key(partition))
        state = Ordering()
        if raw is not None:
            n, state, marker, since, floor = _decode_clock(raw)
            self.writes[partition] = n
            if marker is not None:
                self.through[partition] = marker
            if floor is not None:
                self.floor[partition] = floor
            # The count toward the next marker goes on from where the last owner left it:
            # a partition that changes hands more often than it releases the bound's worth
            # of events would otherwise never get a marker (chaos seed 3: none in 1,200
            # events of a hot customer, then a replay from an old commit applied them all
            # again).
            self.since[partition] = since
        self.durable[partition] = state.frontier
        prefix = b"held:%d:" % partition
        held: list[Held] = []
        for key, value in self.table.items():
            if key.startswith(prefix) and value:
                held.extend(_decode_held(value, int(key[len(prefix) :])))
        restored = restore(state, held)
        self.remaining[partition] = Counter(h.origin for h in restored.held)
        if restored.held:
            log.info("partition %d: %d held events restored", partition, len(restored.held))
        return restored

    def _count(self, partition: int, state: Ordering, released: tuple[Released, ...]) -> None:
        m = self.metrics
        m.hold_seconds.observe_each(
            [r.held_seconds for r in released if r.why == "clock" or r.why == "overflow"]
        )
        for r in released:
            why = r.why
            if why == "clock":  # most are: counted above
                continue
            if why == "late":
                m.late_events.labels(r.event.topic).inc()
            elif why == "skewed":
                m.clock_skew_events.inc()
            else:
                m.released_early.inc()
        m.events_held.labels(str(partition)).set(len(state.held))


def _encode_held(held: list[Held]) -> bytes:
    return orjson.dumps(
        [
            [
                h.event.event_id,
                h.event.customer_id,
                h.event.source,
                h.event.topic,
                h.event.type,
                h.event.occurred_at,
                h.event.properties,
                h.key[2],
                h.key[3],
                h.arrived_at,
                # An anonymous id is appended only when there is one: records of events
                # without one stay as they were (and readable by the previous release).
                *(() if h.event.anonymous_id is None else (h.event.anonymous_id,)),
            ]
            for h in held
        ]
    )


def _decode_held(raw: bytes, origin: int) -> list[Held]:
    held = []
    for row in orjson.loads(raw):
        event_id, customer, source, topic, type_, at, props, part, off, arrived, *rest = row
        occurred = datetime.fromisoformat(at)
        anonymous_id = rest[0] if rest else None
        event = Event(
            event_id, customer, source, topic, type_, occurred, props, anonymous_id=anonymous_id
        )
        key: Key = (occurred, topic, part, off)
        held.append(Held(key, event, datetime.fromisoformat(arrived), origin))
    return held


def _encode_clock(
    n: int,
    state: Ordering,
    through: Marker | None = None,
    since: int = 0,
    floor: Floor | None = None,
) -> bytes:
    doc: dict[str, Any] = {
        "n": n,  # first: order_version reads it
        "clock": state.clock,
        "frontier": None if state.frontier is None else list(state.frontier),
        "marks": [[t, p, m.watermark, m.idle] for (t, p), m in sorted(state.marks.items())],
    }
    if through is not None:  # a record without one reads as before (and by the last release)
        doc["through"] = [through[0], through[1], through[2]]
    if since:  # events released since the marker (older records: none counted)
        doc["since"] = since
    if floor is not None:  # an older release reads as before: the marker alone
        doc["floor"] = [floor[0], floor[1]]
    return orjson.dumps(doc)


def _decode_clock(raw: bytes) -> tuple[int, Ordering, Marker | None, int, Floor | None]:
    doc = orjson.loads(raw)
    through = doc.get("through")
    marker: Marker | None = (
        None
        if through is None  # a marker of before the runs vouched from offset 0
        else (int(through[0]), float(through[1]), int(through[2]) if len(through) > 2 else 0)
    )
    frontier = doc["frontier"]
    key: Key | None = (
        None
        if frontier is None
        else (datetime.fromisoformat(frontier[0]), frontier[1], frontier[2], frontier[3])
    )
    marks = {
        (t, p): Mark(None if w is None else datetime.fromisoformat(w), idle)
        for t, p, w, idle in doc["marks"]
    }
    clock = None if doc["clock"] is None else datetime.fromisoformat(doc["clock"])
    reach = doc.get("floor")
    floor = None if reach is None else (int(reach[0]), float(reach[1]))
    return doc["n"], Ordering(marks, clock, key, ()), marker, int(doc.get("since", 0)), floor


# --------------------------------------------------------------------------- wiring


Send = Callable[[bytes, int], Awaitable[None]]


@dataclass
class MarkBroadcaster:
    """Every MARK_INTERVAL: refresh idleness from the consumer, send changed marks everywhere."""

    app: Any
    settings: Settings
    clock: RouterClock
    send: Send
    encode: Callable[[dict[InputPartition, Mark]], bytes]
    consumers: Any = None
    """The worker's consumers (processor.app.consumers.Consumers); Faust's when None."""

    def install(self) -> None:
        self.app.timer(interval=MARK_INTERVAL)(self.broadcast)

    async def broadcast(self) -> None:
        consumer = self.consumers if self.consumers is not None else self.app.consumer
        sources = self.settings.source_topics
        assigned = {(tp.topic, tp.partition) for tp in consumer.assignment() if tp.topic in sources}
        if assigned != self.clock.assigned:
            self.clock.reassigned(assigned)
        committed = (
            self.consumers.committed
            if self.consumers is not None
            else getattr(consumer, "_committed_offset", {})
        )
        ends: dict[InputPartition, tuple[int | None, int | None]] = {}
        for tp in consumer.assignment():
            if tp.topic not in sources:
                continue
            try:
                end = consumer.highwater(tp)
            except Exception:  # no fetch response yet: not known to be caught up
                end = None
            ends[(tp.topic, tp.partition)] = (end, committed.get(tp))
        self.clock.update_idle(ends)
        marks = self.clock.due()
        if marks is None:
            return
        value = self.encode(marks)
        for partition in range(self.settings.partitions):
            await self.send(value, partition)


def input_partitions(
    app: Any, settings: Settings, reader: Any = None
) -> Callable[[], frozenset[InputPartition] | None]:
    """Every partition of every input topic, from the consumer's cluster metadata.

    ``reader`` is the consumer of the input topics (the intake), if not Faust's. Faust's
    ``topic_partitions`` reads the group leader's snapshot, which is empty on every
    other member; the cluster metadata of the consumer itself is not.
    """
    known: dict[str, int] = {}

    def count(topic: str) -> int:
        if reader is not None:
            return len(reader.partitions_for_topic(topic) or ())
        consumer = app.consumer
        thread = getattr(consumer, "_thread", None)
        client = thread._ensure_consumer() if thread is not None else None
        partitions = client.partitions_for_topic(topic) if client is not None else None
        if partitions:
            return len(partitions)
        return int(consumer.topic_partitions(topic) or 0)

    def inputs() -> frozenset[InputPartition] | None:
        for topic in settings.source_topics:
            if topic not in known:
                try:
                    n = count(topic)
                except Exception:  # the consumer is not started yet
                    n = 0
                if not n:
                    return None
                known[topic] = n
        return frozenset((t, p) for t, n in known.items() for p in range(n))

    return inputs
