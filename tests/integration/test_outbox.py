"""The outbox against the real broker: what ``send`` would have written, in the same order.

processor/app/outbox.py replaces the per-record send of every record the
worker produces. A consumer that reads a topic back must not tell the
difference: each record on the partition the producer's own partitioner picks
for its key, with its headers, a key's records in the order they were added.
A settle hands over whatever is still buffered before it waits, a delivered
batch reports the offset of its last record, and a producer that takes no
batch stops the worker.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from processor.app.failstop import Deliveries, FailStop
from processor.app.outbox import Outbox
from processor.broker import EmbeddedBroker
from processor.contracts.outputs import Record

pytestmark = pytest.mark.integration

PARTITIONS = 4


async def read_all(bootstrap: str, topic: str, expected: int) -> dict[int, list[tuple[bytes, ...]]]:
    """The topic's records per partition, (key, value, header values...), ``expected`` of them."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    got: dict[int, list[tuple[bytes, ...]]] = defaultdict(list)
    try:
        async with asyncio.timeout(30):
            while sum(len(v) for v in got.values()) < expected:
                for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                    for r in records:
                        assert r.key is not None and r.value is not None
                        extra = tuple(v for _, v in r.headers)
                        got[tp.partition].append((r.key, r.value, *extra))
    finally:
        await consumer.stop()
    return got


@asynccontextmanager
async def producing(bootstrap: str, *topics: str) -> AsyncIterator[AIOKafkaProducer]:
    """The topics created, and a started producer for them (stopped at the end)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in topics])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=-1)
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


def wiring(producer: AIOKafkaProducer) -> tuple[Outbox, Deliveries, FailStop, asyncio.Event]:
    """The outbox as factory.py wires it: deliveries tracked, a settle flushes it first."""
    exits = asyncio.Event()
    failstop = FailStop(exit=lambda code: exits.set() if code == 70 else None, exit_after=0)
    deliveries = Deliveries(failstop)
    outbox = Outbox(lambda: producer, deliveries.track, failstop.fail)
    deliveries.flush = outbox.flush
    return outbox, deliveries, failstop, exits


async def test_records_land_where_send_would_put_them_in_order(broker: EmbeddedBroker) -> None:
    batched, direct = "outbox-batched", "outbox-direct"
    # 30 keys, 40 records each, a few large enough to fill a 16 KB batch on their own.
    records = [
        Record(
            f"cust-{i % 30}".encode(),
            f"{i}:".encode() + b"x" * (9000 if i % 97 == 0 else 200),
            [("ce_id", str(i).encode())],
        )
        for i in range(1200)
    ]
    async with producing(broker.bootstrap, batched, direct) as producer:
        outbox, deliveries, failstop, _ = wiring(producer)
        send = outbox.sender(batched)
        for record in records:
            await send(record, None)
            await producer.send(direct, record.value, key=record.key, headers=record.headers)
        await producer.flush()
        assert await deliveries.settle()
        assert not deliveries.pending and not failstop.failed
    got = await read_all(broker.bootstrap, batched, len(records))
    want = await read_all(broker.bootstrap, direct, len(records))
    assert got == want  # per partition: the same records, in the same order
    assert sum(len(v) for v in got.values()) == len(records)
    assert len(got) > 1  # spread over partitions by key, as send spreads them
    assert outbox.batches < len(records) / 10  # batches, not a request per record


async def test_a_settle_hands_over_what_is_still_buffered(broker: EmbeddedBroker) -> None:
    """A commit settles first: records appended a moment ago are on the broker when it returns."""
    topic = "outbox-settle"
    delivered: list[tuple[int, int]] = []
    async with producing(broker.bootstrap, topic) as producer:
        outbox, deliveries, _, _ = wiring(producer)
        outbox.watch(topic, lambda partition, offset: delivered.append((partition, offset)))
        # No await that yields between the sends and the settle: the scheduled flush has
        # not run, so only the settle's own flush can have handed the records over.
        for i in range(500):
            await outbox.send(topic, b"k", b"v%d" % i, i % 2)
        assert not outbox.empty
        assert await deliveries.settle()
        assert outbox.empty and not deliveries.pending
    got = await read_all(broker.bootstrap, topic, 500)
    assert {p: [v for _, v, *_ in records] for p, records in got.items()} == {
        p: [b"v%d" % i for i in range(p, 500, 2)] for p in (0, 1)
    }
    # Each delivered batch told its partition and the offset of its last record.
    assert {p: max(o for q, o in delivered if q == p) for p, _ in delivered} == {0: 249, 1: 249}


async def test_records_go_out_without_a_settle(broker: EmbeddedBroker) -> None:
    """The outbox flushes itself on the next loop turn: a bundle's outputs do not wait for
    the next commit."""
    topic = "outbox-soon"
    last = asyncio.Event()
    async with producing(broker.bootstrap, topic) as producer:
        outbox, _, _, _ = wiring(producer)
        outbox.watch(topic, lambda partition, offset: last.set() if offset == 9 else None)
        for i in range(10):
            await outbox.send(topic, b"k", b"v%d" % i, 3)
        await asyncio.wait_for(last.wait(), 10)  # no settle, no flush of ours: it went itself
    got = await read_all(broker.bootstrap, topic, 10)
    assert got == {3: [(b"k", b"v%d" % i) for i in range(10)]}


async def test_a_producer_that_takes_no_batch_stops_the_worker(broker: EmbeddedBroker) -> None:
    topic = "outbox-closed"
    async with producing(broker.bootstrap, topic) as producer:
        outbox, deliveries, failstop, exits = wiring(producer)
        await outbox.send(topic, b"k", b"v", 0)
        assert await deliveries.settle()
    # The producer is stopped, its accumulator closed: send_batch raises.
    await outbox.send(topic, b"k", b"v", 0)
    assert not await deliveries.settle()  # nothing may be committed
    assert failstop.reason is not None and "did not take a record batch" in failstop.reason
    await asyncio.wait_for(exits.wait(), 5)  # the exit the fail-stop schedules
