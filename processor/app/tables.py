"""Faust tables whose changelog replay never moves a key back to an older value.

Faust recovers a table by writing every changelog record from the last
persisted offset up to the topic's end offset into the local store, blindly.
When the broker under-reports that end offset (the embedded broker can be one
batch short), the replay stops early. A key whose newest value lies in the
unreported tail is then left at an older value, and the offsets of the events
that produced the newer one are already committed, so those events would
never be applied again. Comparing versions keeps the newer local value: a
replayed record only lands if it is at least as new as what the store holds.
With an exact end offset (Apache Kafka) the newest changelog value wins as
before, so this changes nothing there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

import faust
from faust.types import TP

from processor.app.outbox import Outbox

log = logging.getLogger(__name__)

Version = Callable[[bytes], int]
"""The version of a stored value; a later write of a key always has a higher one."""

MARKER_KEY = b"\x00journey:handover"
"""Key of the record written to a changelog partition when its worker gives it up.

The embedded broker reports a partition's end offset as the first record of the
last batch, so a worker recovering a moved partition could stop short of the
final writes. A lone marker written after a flush is that last batch: every
real write lies before it. Recovery skips the marker itself."""


class MonotonicTable(faust.Table[bytes, bytes]):
    """A bytes-to-bytes table whose recovery keeps a key's newest value."""

    def __init__(self, app: faust.App, *, version: Version, outbox: Outbox, **kwargs: Any) -> None:
        super().__init__(app, key_type=bytes, value_type=bytes, **kwargs)
        self._version = version
        self._outbox = outbox
        self.written: set[int] = set()
        """Partitions this worker wrote changelog records to: the only ones it must mark."""
        self.generation: int | None = None
        """The consumer-group generation of this worker's last assignment."""
        self.replayed_whole: int = 0
        """Changelog partitions whose recovery was restarted from the beginning (see below)."""
        self._persist: dict[int, int] = {}
        """Per changelog partition, the highest offset delivered since it was last stored."""
        self._persist_scheduled = False

    async def on_rebalance(
        self,
        assigned: set[Any],
        revoked: set[Any],
        newly_assigned: set[Any],
        generation_id: int = 0,
    ) -> None:
        """After missing a generation, recover every assigned partition from its beginning.

        Faust resumes a partition's recovery after the *persisted offset*: the
        last changelog offset this worker wrote. That is right as long as no one
        else wrote after it. A worker that was paused past its session (a long
        GC, SIGSTOP, a frozen VM) is dropped from the group while its partitions
        move on; when it wakes it still writes (a bundle in hand, the handover
        markers of its revocation) after the new owner's records, and its
        persisted offset jumps past them. Recovering from there would skip the
        new owner's writes for good. A worker that missed at least one
        generation (its new one is not its last plus one) therefore forgets its
        persisted offsets and replays those changelog partitions whole; the
        table's version check keeps each key's newest state. In ordinary
        rebalances (consecutive generations) nothing changes.
        """
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)
        changelog = self.changelog_topic.get_topic_name()
        await self._seal_tails(sorted(tp for tp in newly_assigned if tp.topic == changelog))
        missed = self.generation is not None and generation_id > self.generation + 1
        self.generation = generation_id
        if not missed:
            return
        mine = {
            tp.partition for tp in assigned if tp.topic == self.changelog_topic.get_topic_name()
        }
        forget = getattr(self.data, "forget_persisted_offset", None)
        for partition in sorted(mine):
            if forget is not None:
                forget(partition)
            else:
                _forget_rocksdb_offset(self.data, partition)
            self.replayed_whole += 1

    async def _seal_tails(self, partitions: list[Any]) -> None:
        """Before recovering partitions new to this worker, end each with a marker of our own.

        The handover marker (:data:`MARKER_KEY`) protects a partition whose last
        writer gave it up; one killed (SIGKILL, a lost host) wrote none, and
        the embedded broker's short end offset then hides its last batch of
        writes from the next owner's recovery. The chaos suite saw that owner
        recover customers at an older applied count than the changelog's last
        record and write it again (``changelog.never_goes_back``). So the new
        owner writes the marker itself, before Faust reads the end offsets:
        every real record then lies before it. Not on an empty changelog (a
        marker alone has been seen to stall recovery, see :meth:`mark_handover`),
        and not recorded as persisted (this worker has read none of it yet).
        With Apache Kafka it is one skipped record per partition moved.
        """
        if not partitions:
            return
        try:
            ends = await asyncio.wait_for(self.app.consumer.highwaters(*partitions), 10.0)
        except Exception as exc:  # unknown ends: recover as before, unsealed
            log.warning("changelog ends unknown, not sealing %s: %r", partitions, exc)
            return
        sealed = [tp for tp in partitions if (ends.get(tp) or 0) > 0]
        for tp in sealed:
            delivery = await self.changelog_topic.send(
                key=MARKER_KEY,
                value=b"{}",
                partition=tp.partition,
                key_serializer="raw",
                value_serializer="raw",
                force=True,
            )
            self._outbox.track(delivery)  # around the outbox: not a persisted offset
        if sealed:
            await self.app.producer.flush()

    def distrust(self) -> None:
        """Forget every persisted changelog offset: the next start recovers each partition whole.

        For a worker that was stopped past its session (inflight.Finished.frozen):
        what it wrote since may lie after the new owners' writes in the changelog.
        """
        partitions = list(getattr(self.data, "_dbs", {}))
        forget = getattr(self.data, "forget_persisted_offset", None)
        for partition in partitions:
            if forget is not None:
                forget(partition)
            else:
                _forget_rocksdb_offset(self.data, partition)

    def on_key_set(self, key: bytes, value: bytes) -> None:
        super().on_key_set(key, value)
        self.written.add(self.partition_for_key(key))  # type: ignore[arg-type]

    def apply_changelog_batch(self, batch: Iterable[Any]) -> None:
        super().apply_changelog_batch(
            [e for e in batch if e.message.key != MARKER_KEY and not self._is_stale(e.message)]
        )

    async def put(self, key: bytes, value: bytes, partition: int) -> None:
        """Write a key, and hand its changelog record to the outbox (app/outbox.py).

        ``table[key] = value`` queues the changelog record in Faust's ProducerBuffer,
        which drains one record per event-loop turn: a bundle's worth of writes
        then stalls the agent until it drains (the benchmark saw this take a third
        of a run). The outbox batches the records instead. Offsets are
        still committed only after the producer is flushed, and the persisted
        offset is recorded once the record is delivered (:meth:`delivered`).
        """
        self.data[key] = value
        await self._send(key, value, partition)

    async def delete(self, key: bytes, partition: int) -> None:
        """Remove a key, and write its tombstone to the changelog the same way."""
        self.data.pop(key, None)
        await self._send(key, None, partition)

    async def _send(self, key: bytes, value: bytes | None, partition: int) -> None:
        """Into the outbox (app/outbox.py), as every record of ours goes, not ``Topic.send``.

        ``Topic.send`` adds a FutureMessage, its callbacks and sensors to every
        record, and Faust's callback then writes the persisted offset to RocksDB
        once per record: together about 4 % of a worker's CPU under a backlog.
        Here the record joins its partition's record batch, whose delivery is
        tracked as every send is, and the persisted offset goes to the store
        once per partition per event-loop turn (:meth:`delivered`).
        """
        self.written.add(partition)
        await self._outbox.send(self.changelog_topic.get_topic_name(), key, value, partition)

    def delivered(self, partition: int, offset: int) -> None:
        """Note the changelog offset a batch of ours ended at; stored on the next loop turn.

        The persisted offset tells the next recovery where the local store's data
        ends. Storing it a turn late is safe (recovery then reads a few records
        again); storing it ahead of a record never happens, since only delivered
        offsets are noted. A failed delivery stops the worker (failstop.Deliveries).
        """
        if offset > self._persist.get(partition, -1):
            self._persist[partition] = offset
        if not self._persist_scheduled:
            self._persist_scheduled = True
            asyncio.get_running_loop().call_soon(self._write_persisted)

    def _write_persisted(self) -> None:
        self._persist_scheduled = False
        noted, self._persist = self._persist, {}
        name = self.changelog_topic.get_topic_name()
        for partition, offset in noted.items():
            self.data.set_persisted_offset(TP(name, partition), offset)

    def mark_handover(self, partitions: Iterable[int]) -> None:
        """Queue a marker on each given partition this worker wrote to; the caller flushes.

        A partition this worker never wrote to has no tail of its own to protect,
        and a changelog that held nothing but markers has been seen to stall
        Faust's recovery. The marker's offset is recorded as persisted, so this
        worker's own next recovery of the partition starts after it.
        """
        for partition in sorted(set(partitions) & self.written):
            self.changelog_topic.send_soon(
                key=MARKER_KEY,
                value=b"{}",
                partition=partition,
                key_serializer="raw",
                value_serializer="raw",
                callback=self._on_changelog_sent,
            )
        self.written.difference_update(partitions)

    def _is_stale(self, message: Any) -> bool:
        if message.value is None:
            return False
        current = self.data.get(message.key)
        return current is not None and self._version(message.value) < self._version(current)


def monotonic_table(
    app: faust.App,
    name: str,
    *,
    version: Version,
    partitions: int,
    help: str,
    outbox: Outbox,
) -> MonotonicTable:
    """Declare the table on the app, as ``app.Table`` would; its records go through the outbox."""
    table = MonotonicTable(
        app,
        version=version,
        outbox=outbox,
        name=name,
        beacon=app.tables.beacon,
        partitions=partitions,
        help=help,
    )
    app.tables.add(table)
    outbox.watch(table.changelog_topic.get_topic_name(), table.delivered)
    return table


def _forget_rocksdb_offset(store: Any, partition: int) -> None:
    """Delete Faust's persisted-offset key of one partition (memory stores keep none)."""
    db_for = getattr(store, "_db_for_partition", None)
    offset_key = getattr(store, "offset_key", None)
    if db_for is None or offset_key is None:
        return
    db = db_for(partition)
    if db.get(offset_key) is not None:
        del db[offset_key]
