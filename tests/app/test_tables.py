"""The state tables' persisted changelog offsets: noted on delivery, stored once per loop turn."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from processor.app.outbox import Outbox
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


async def test_each_partition_stores_its_highest_delivered_offset_once_per_turn() -> None:
    table, store = _table()
    for partition, offset in [(1, 5), (1, 9), (2, 3), (1, 7)]:
        table.delivered(partition, offset)
    assert store.stored == []  # not yet: on the next turn of the loop
    await asyncio.sleep(0)
    name = "app-customer-state-changelog"
    assert sorted(store.stored) == [(TP(name, 1), 9), (TP(name, 2), 3)]

    table.delivered(2, 4)
    await asyncio.sleep(0)
    assert store.stored[-1] == (TP(name, 2), 4) and len(store.stored) == 3


async def test_a_failed_or_cancelled_batch_stores_no_offset() -> None:
    """The outbox tells the table only of delivered batches (processor/app/outbox.py)."""
    table, store = _table()
    failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    failed.set_exception(RuntimeError("broker gone"))
    cancelled: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    cancelled.cancel()
    delivered: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    delivered.set_result(SimpleNamespace(partition=0, offset=40))
    futures = iter([failed, cancelled, delivered])

    async def send_batch(batch: Any, topic: str, *, partition: int) -> asyncio.Future[Any]:
        return next(futures)

    producer = SimpleNamespace(send_batch=send_batch)
    tracked: list[Any] = []
    outbox = Outbox(lambda: producer, tracked.append, lambda reason, exc: None)
    outbox.watch("app-customer-state-changelog", table.delivered)
    batch = SimpleNamespace(record_count=lambda: 3)
    for partition in (0, 1, 2):
        await outbox._submit("app-customer-state-changelog", partition, batch)
    await asyncio.sleep(0)  # the done callbacks
    await asyncio.sleep(0)  # the store write they schedule
    assert len(tracked) == 3  # each batch's delivery is watched by the fail-stop
    name = "app-customer-state-changelog"
    assert store.stored == [(TP(name, 2), 42)]  # the delivered batch's last record: 40 + 3 - 1
