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

from collections.abc import Callable, Iterable
from typing import Any

import faust

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

    def __init__(self, app: faust.App, *, version: Version, **kwargs: Any) -> None:
        super().__init__(app, key_type=bytes, value_type=bytes, **kwargs)
        self._version = version
        self.written: set[int] = set()
        """Partitions this worker wrote changelog records to: the only ones it must mark."""

    def on_key_set(self, key: bytes, value: bytes) -> None:
        super().on_key_set(key, value)
        self.written.add(self.partition_for_key(key))  # type: ignore[arg-type]

    def apply_changelog_batch(self, batch: Iterable[Any]) -> None:
        super().apply_changelog_batch(
            [e for e in batch if e.message.key != MARKER_KEY and not self._is_stale(e.message)]
        )

    async def put(self, key: bytes, value: bytes, partition: int) -> None:
        """Write a key, and hand its changelog record straight to the producer.

        ``table[key] = value`` queues the changelog record in Faust's ProducerBuffer,
        which drains one record per event-loop turn: a bundle's worth of writes
        then stalls the agent until it drains (the benchmark saw this take a third
        of a run). Sending directly lets aiokafka batch the records. Offsets are
        still committed only after the producer is flushed, and the persisted
        offset is recorded by the same callback Faust uses.
        """
        self.data[key] = value
        self.written.add(partition)
        await self.changelog_topic.send(
            key=key,
            value=value,
            partition=partition,
            key_serializer="raw",
            value_serializer="raw",
            callback=self._on_changelog_sent,
            force=True,
        )

    async def delete(self, key: bytes, partition: int) -> None:
        """Delete a key: a tombstone on its changelog partition (sent as :meth:`put` does)."""
        self.data.pop(key, None)
        self.written.add(partition)
        await self.changelog_topic.send(
            key=key,
            value=None,
            partition=partition,
            key_serializer="raw",
            value_serializer="raw",
            callback=self._on_changelog_sent,
            force=True,
        )

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
    app: faust.App, name: str, *, version: Version, partitions: int, help: str
) -> MonotonicTable:
    """Declare the table on the app, as ``app.Table`` would."""
    table = MonotonicTable(
        app,
        version=version,
        name=name,
        beacon=app.tables.beacon,
        partitions=partitions,
        help=help,
    )
    app.tables.add(table)
    return table
