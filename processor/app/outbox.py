"""Every record the worker produces, appended to one record batch per topic partition.

aiokafka's ``send`` costs about 16-20 us of CPU per record (a coroutine, the
metadata check, the partitioner, a ``TopicPartition``, a future per record
resolved on delivery), and Faust's ``Producer.send`` wraps it in a signal and
type checks. Appending to an open ``BatchBuilder`` and handing the full batch
over with ``send_batch`` costs about 4 us per record, and the batch has one
future to track. A worker sends about a third of a record per input event
(stage changes, changelog records, bundles), so this is a tenth of its CPU.

The rules that keep every guarantee:

* **One way out.** Every record of ours to every topic goes through the one
  :class:`Outbox` (factory.py, tables.py), so records of one topic partition
  keep the order they were sent in: they are appended in order, full batches
  are queued in order, and :meth:`Outbox.flush` submits them one partition
  batch after another under a lock (aiokafka keeps a partition's batches in
  order).
* **Nothing committed past an unsent record.** A commit waits for every
  delivery so far (failstop.Deliveries.settle, on both the intake's commits and
  Faust's), and a settle flushes the outbox first; so does every flush of
  Faust's producer (the handover markers of a revocation wait for it). A batch
  is tracked by Deliveries as soon as it is submitted, so a refused batch stops
  the worker like a refused record.
* **Soon, not only at commit.** The first record appended to an empty outbox
  schedules a flush for the next turn of the event loop, so the batches of a
  bundle go out when the bundle is done, not seconds later at the commit.
* **Bounded.** When more than :data:`MAX_QUEUED` full batches wait, a send
  waits for a flush: a slow broker slows the agent down instead of growing
  the worker's memory.

A record lands where ``send`` would have put it: on the partition given, or
the producer's own partitioner picks one from its key.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from processor.contracts.outputs import Record

log = logging.getLogger(__name__)

MAX_QUEUED = 64
"""Full batches (about 16 KB each) that may wait for a flush before a send waits too."""

Track = Callable[[Any], None]
"""Watches a delivery future (failstop.Deliveries.track)."""

Delivered = Callable[[int, int], None]
"""Told (partition, offset of the batch's last record) once a batch is delivered."""

Fail = Callable[[str, BaseException], None]
"""Stops the worker (failstop.FailStop.fail): a batch the producer would not take."""


class Outbox:
    """Open record batches per (topic, partition), and the full ones waiting to be submitted."""

    def __init__(self, producer: Callable[[], Any], track: Track, fail: Fail) -> None:
        self._producer = producer
        """The aiokafka producer (Faust's, started with the app)."""
        self._track = track
        self._fail = fail
        self._open: dict[tuple[str, int], Any] = {}
        self._full: list[tuple[tuple[str, int], Any]] = []
        self._known: set[str] = set()
        """Topics whose metadata the producer has: their partitions are known."""
        self._watchers: dict[str, Delivered] = {}
        self._lock = asyncio.Lock()
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        """Flushes scheduled by :meth:`_flush_soon`, held until done (the loop keeps weak refs)."""
        self.batches = 0
        """Batches submitted so far (for tests and the benchmark)."""

    def sender(self, topic: str) -> Callable[[Record, int | None], Awaitable[None]]:
        """A send function for one topic, as the engine's shell takes it (pipeline.Send)."""

        async def send(record: Record, partition: int | None) -> None:
            await self.send(topic, record.key, record.value, partition, record.headers)

        return send

    def watch(self, topic: str, delivered: Delivered) -> None:
        """Call ``delivered`` with each delivered batch's partition and last offset."""
        self._watchers[topic] = delivered

    def track(self, delivery: Any) -> None:
        """Watch a delivery sent around the outbox (a changelog seal that must not count as
        persisted, tables.py): it holds up commits and stops the worker if refused."""
        self._track(delivery)

    @property
    def empty(self) -> bool:
        return not self._open and not self._full

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Append a record to its partition's open batch; it is submitted on the next flush."""
        producer = self._producer()
        if topic not in self._known:
            await producer.client._wait_on_metadata(topic)
            self._known.add(topic)
        if partition is None:
            partition = producer._partition(topic, None, key, value, key, value)
        slot = (topic, partition)
        batch = self._open.get(slot)
        if batch is None:
            batch = self._open[slot] = producer.create_batch()
            if not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._flush_soon)
        if batch.append(timestamp=None, key=key, value=value, headers=headers or []) is None:
            self._full.append((slot, batch))  # full: a new batch takes the record
            batch = self._open[slot] = producer.create_batch()
            # An empty batch takes any record (aiokafka); a None here would lose one.
            if batch.append(timestamp=None, key=key, value=value, headers=headers or []) is None:
                raise RuntimeError(f"an empty batch refused a {len(value or b'')}-byte record")
            if len(self._full) > MAX_QUEUED:
                await self.flush()

    async def flush(self) -> None:
        """Submit every batch appended before this flush began; their deliveries are tracked.

        One pass: records appended while it waits for the producer (``send_batch``
        waits until the partition's previous batch is taken) are left to the flush
        their first record scheduled. A flush that went on until nothing was left
        could hold the lock for a whole backlog, and a commit's settle waits for it.
        Raises what the producer raises (a closed producer, a full queue that did
        not drain in time): the caller stops the worker.
        """
        async with self._lock:
            ready, self._full = self._full, []
            ready.extend(self._open.items())
            self._open = {}
            for (topic, partition), batch in ready:
                await self._submit(topic, partition, batch)

    def _flush_soon(self) -> None:
        self._scheduled = False
        if not self.empty:
            task = asyncio.ensure_future(self._flush_or_fail())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _flush_or_fail(self) -> None:
        try:
            await self.flush()
        except Exception as exc:
            self._fail(f"the producer did not take a record batch: {exc!r}", exc)

    async def _submit(self, topic: str, partition: int, batch: Any) -> None:
        count = batch.record_count()
        delivery = await self._producer().send_batch(batch, topic, partition=partition)
        self.batches += 1
        self._track(delivery)
        delivered = self._watchers.get(topic)
        if delivered is not None and isinstance(delivery, asyncio.Future):

            def done(future: asyncio.Future[Any]) -> None:
                if not future.cancelled() and future.exception() is None:
                    delivered(partition, future.result().offset + count - 1)

            delivery.add_done_callback(done)
