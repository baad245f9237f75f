"""Erasure on disk: after a forget, the deleted bytes leave the local RocksDB files too.

A RocksDB delete only writes a tombstone: the old values stay in older SST files
and the write-ahead log until compaction gets to them, and an SST file's first
and last keys are also recorded in the MANIFEST. So after an erasure the
compactor, for each table partition the customer had data in:

1. flushes the memtable (the WAL with the deletes becomes obsolete and is removed),
2. compacts the customer's key range (``customer_id`` up to ``customer_id\\x20``:
   the state key and every ``customer_id\\x1f<n>`` chunk key) in the state and
   chunk tables, and the whole partition of the small event-order table (its held
   records were rewritten without the customer), down to and including the last
   level (forced: by default RocksDB may move a file there untouched), where
   tombstones and the values under them are dropped;
3. remembers the partition's directory: the MANIFEST still names removed files'
   boundary keys until the store is opened again, so once the worker has stopped
   :meth:`Compactor.close_and_reopen` closes those stores (Faust never closes
   them itself) and opens and closes them once more (a store is reopened at every
   start anyway, so a killed worker's MANIFEST is rewritten on its next start).

It runs on a Faust timer (every ``INTERVAL`` seconds) and at shutdown, so a burst of
erasures costs one flush per partition, not one per customer. A memory store
holds nothing on disk: nothing to do.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

INTERVAL = 1.0
"""Seconds between compaction runs while erasures are pending."""

RANGE_END = b"\x20"
"""Appended to a customer id: the end of its key range (chunk keys continue with ``\\x1f``)."""


@dataclass
class Compactor:
    """Flushes and compacts what erasures left in the RocksDB stores of the tables."""

    by_customer: tuple[Any, ...]
    """Tables whose keys start with the customer id (state, dedupe chunks)."""
    whole: tuple[Any, ...] = ()
    """Small tables compacted whole (event order: held records are keyed by offset)."""
    pending: dict[int, set[str]] = field(default_factory=dict)
    touched: dict[Path, tuple[Any, int]] = field(default_factory=dict)
    """Store directories compacted since start, with their store and partition."""
    closing: list[Any] = field(default_factory=list)
    """Their open databases, taken at shutdown (:meth:`hold`) to close once Faust has stopped."""

    def erased(self, partition: int, customer_id: str) -> None:
        """Engine hook: a customer's keys were deleted on this partition."""
        self.pending.setdefault(partition, set()).add(customer_id)

    def run(self) -> int:
        """Compact every pending partition now; returns how many stores it compacted."""
        pending, self.pending = self.pending, {}
        done = 0
        for partition, customers in sorted(pending.items()):
            for table in self.by_customer:
                ranges = [(c.encode(), c.encode() + RANGE_END) for c in sorted(customers)]
                done += self._compact(table, partition, ranges)
            for table in self.whole:
                done += self._compact(table, partition, [(None, None)])
        return done

    async def tick(self) -> None:
        if self.pending:
            self.run()

    def _compact(
        self, table: Any, partition: int, ranges: Iterable[tuple[bytes | None, bytes | None]]
    ) -> int:
        store = getattr(table, "data", table)
        db_for = getattr(store, "_db_for_partition", None)
        if db_for is None:  # memory:// keeps nothing on disk
            return 0
        db = db_for(partition)
        flush = getattr(db, "flush", None)  # python-rocksdb has none; compaction flushes there
        if flush is not None:
            flush()
        options = _force_bottommost()
        for begin, end in ranges:
            if options is not None:
                db.compact_range(begin, end, options)
            else:
                db.compact_range(begin, end)
        path = getattr(store, "partition_path", None)
        if path is not None:
            self.touched[Path(path(partition))] = (store, partition)
        return 1

    def hold(self) -> None:
        """At shutdown: keep the compacted stores' databases, which Faust drops but never closes.

        Only from here to the end of the process, so no later assignment of the
        partition can find its database still locked by a reference of ours.
        """
        for store, partition in self.touched.values():
            db = getattr(store, "_dbs", {}).get(partition)
            if db is not None:
                self.closing.append(db)

    def close_and_reopen(self) -> None:
        """After the worker stopped: close what :meth:`hold` kept, then :func:`reopen` it."""
        for db in self.closing:
            try:
                db.close()
            except Exception as exc:  # already closed
                log.debug("closing a store: %s", exc)
        self.closing.clear()
        reopen(self.touched)


def _force_bottommost() -> Any:
    """Compact the last level too: by default RocksDB may move a file there untouched."""
    try:
        import rocksdict
    except ImportError:  # python-rocksdb: its default compaction of a range
        return None
    options = rocksdict.CompactOptions()
    options.set_bottommost_level_compaction(rocksdict.BottommostLevelCompaction.force())
    return options


def reopen(paths: Iterable[Path]) -> None:
    """Open and close each store once (after the worker closed it): a fresh MANIFEST.

    The old MANIFEST, which can still name an erased key as a removed file's
    boundary, is deleted when a new one is written on open.
    """
    from faust.stores.rocksdb import RocksDBOptions

    options = RocksDBOptions()
    for path in sorted(paths):
        if not path.exists():
            continue
        try:
            db = options.open(path)
            db.close()
        except Exception as exc:  # still open elsewhere: its next open rewrites it anyway
            log.warning("could not reopen %s to rewrite its MANIFEST: %s", path, exc)
