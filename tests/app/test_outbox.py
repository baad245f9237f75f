"""The outbox's flushes, with a producer that makes them wait (the broker's side is in
tests/integration/test_outbox.py).

aiokafka's ``send_batch`` waits until the partition's previous batch is taken by
its sender. Meanwhile the agent goes on appending. A flush must not chase those
new records for as long as they come: a commit's settle waits for it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from processor.app.outbox import Outbox


class _Batch:
    def __init__(self) -> None:
        self.records: list[bytes] = []

    def append(self, *, timestamp: Any, key: Any, value: bytes, headers: Any) -> object:
        self.records.append(value)
        return object()

    def record_count(self) -> int:
        return len(self.records)


class _Producer:
    """Takes a batch only when the test lets it: each ``send_batch`` waits for a permit."""

    def __init__(self) -> None:
        self.client = self
        self.permits = asyncio.Semaphore(0)
        self.submitted: list[list[bytes]] = []

    async def _wait_on_metadata(self, topic: str) -> None:
        return None

    def create_batch(self) -> _Batch:
        return _Batch()

    async def send_batch(self, batch: _Batch, topic: str, *, partition: int) -> None:
        await self.permits.acquire()
        self.submitted.append(batch.records)


async def test_a_flush_submits_what_was_there_and_leaves_the_rest_to_the_next() -> None:
    producer = _Producer()
    outbox = Outbox(lambda: producer, lambda delivery: None, lambda reason, exc: None)
    await outbox.send("t", b"k", b"first", 0)
    flushing = asyncio.ensure_future(outbox.flush())
    await asyncio.sleep(0)  # the flush took its batch and waits for the producer
    await outbox.send("t", b"k", b"second", 0)  # appended meanwhile: a new batch
    producer.permits.release()  # one batch taken
    # The flush returns with the one batch it found. Had it gone after the second
    # record too, it would wait for a permit that is not given: the timeout fails it.
    await asyncio.wait_for(flushing, 5)
    assert producer.submitted == [[b"first"]]
    # The second record went to the flush its batch scheduled, which now waits for
    # the producer holding the lock; a settle's flush waits for that one.
    producer.permits.release()
    await asyncio.wait_for(outbox.flush(), 5)
    assert producer.submitted == [[b"first"], [b"second"]]  # in order, nothing lost
    assert outbox.empty
