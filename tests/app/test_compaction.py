"""The compactor on real RocksDB files: after an erasure no file of the store holds the id."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from faust.stores.rocksdb import RocksDBOptions

from processor.app.compaction import Compactor

SECRET = b"erased-customer-7f3a"


class _Store:
    """What the compactor uses of Faust's rocksdb store: one database per partition."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dbs: dict[int, Any] = {}

    def partition_path(self, partition: int) -> Path:
        return self.root / f"table-{partition}.db"

    @property
    def _dbs(self) -> dict[int, Any]:
        return self.dbs

    def _db_for_partition(self, partition: int) -> Any:
        if partition not in self.dbs:
            self.dbs[partition] = RocksDBOptions().open(self.partition_path(partition))
        return self.dbs[partition]


def files_holding(root: Path, needle: bytes) -> list[str]:
    return sorted(str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes())


def test_flush_compact_and_reopen_leave_no_byte_of_the_erased_keys(tmp_path: Path) -> None:
    states, order = _Store(tmp_path / "states"), _Store(tmp_path / "order")
    db, held = states._db_for_partition(3), order._db_for_partition(3)
    for i in range(3000):
        db.put(b"c-%05d" % i, b"x" * 100)
    db.put(SECRET, b"state of " + SECRET)
    db.flush()  # in an SST file, as a file boundary too
    db.put(SECRET, b"newer state of " + SECRET)
    db.put(SECRET + b"\x1f0", b'["e1","e2"]')
    held.put(b"held:3:41", b'[["e9","' + SECRET + b'"]]')
    held.flush()
    # the erasure: tombstones, and the held record rewritten without the customer
    db.delete(SECRET)
    db.delete(SECRET + b"\x1f0")
    held.put(b"held:3:41", b"[]")
    assert files_holding(tmp_path, SECRET)

    compactor = Compactor(by_customer=(states,), whole=(order,))
    compactor.erased(3, SECRET.decode())
    assert compactor.run() == 2 and compactor.pending == {}
    db.put(b"later", b"1")
    compactor.hold()
    states.dbs.clear()  # as Faust's store does at stop, without closing them
    order.dbs.clear()
    compactor.close_and_reopen()

    assert files_holding(tmp_path, SECRET) == []
    reopened = RocksDBOptions().open(states.partition_path(3))
    try:
        assert reopened.get(SECRET) is None and reopened.get(b"c-00042") == b"x" * 100
    finally:
        reopened.close()


def test_a_memory_store_needs_nothing() -> None:
    compactor = Compactor(by_customer=({},))
    compactor.erased(0, "alice")
    assert compactor.run() == 0 and compactor.touched == {}
