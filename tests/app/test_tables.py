"""The state tables' persisted changelog offsets: noted on delivery, stored once per loop turn."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from processor.app.tables import MonotonicTable


class _Store:
    def __init__(self) -> None:
        self.stored: list[tuple[TP, int]] = []

    def set_persisted_offset(self, tp: TP, offset: int) -> None:
        self.stored.append((tp, offset))


def _table() -> tuple[Any, _Store]:
    """The table's delivery bookkeeping alone: no Faust app is needed for it."""
    table: Any = MonotonicTable.__new__(MonotonicTable)
    store = _Store()
    table._data = store  # what the `data` property returns
    table.changelog_topic = SimpleNamespace(get_topic_name=lambda: "app-customer-state-changelog")
    table._persist = {}
    table._persist_scheduled = False
    return table, store


def _delivered(partition: int, offset: int) -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_result(SimpleNamespace(partition=partition, offset=offset))
    return future


async def test_each_partition_stores_its_highest_delivered_offset_once_per_turn() -> None:
    table, store = _table()
    for partition, offset in [(1, 5), (1, 9), (2, 3), (1, 7)]:
        table._delivered(_delivered(partition, offset))
    assert store.stored == []  # not yet: on the next turn of the loop
    await asyncio.sleep(0)
    name = "app-customer-state-changelog"
    assert sorted(store.stored) == [(TP(name, 1), 9), (TP(name, 2), 3)]

    table._delivered(_delivered(2, 4))
    await asyncio.sleep(0)
    assert store.stored[-1] == (TP(name, 2), 4) and len(store.stored) == 3


async def test_a_failed_delivery_stores_no_offset() -> None:
    table, store = _table()
    failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    failed.set_exception(RuntimeError("broker gone"))
    table._delivered(failed)
    cancelled: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    cancelled.cancel()
    table._delivered(cancelled)
    await asyncio.sleep(0)
    assert store.stored == []
