"""The intake: the router reads the input topics with a plain aiokafka ``getmany`` loop.

Why not a Faust agent. Faust hands an agent one record at a time, and each one
costs mode's ``wait_first`` (four tasks and an ``asyncio.wait``) plus Faust's
ack bookkeeping: about 40-100 µs a record, which made a no-op Faust agent
thirty times slower than the plain consumer in the benchmark, and the router
(a stateless decode-and-bundle step) the worker's floor. Faust's commit logic
also needed three patches here (``processor.app.redelivery``) to stop it
committing over records it had fetched but never delivered. The router needs
none of what Faust adds: it has no table, and its only state (the input
watermarks) is rebuilt from what it reads.

So the intake is the loop every Kafka client documents, and nothing more:

1. ``getmany`` (up to ``JOURNEY_BATCH_MAX`` records, waiting at most
   ``JOURNEY_BATCH_WINDOW``), and route the whole fetch as one batch;
2. every ``commit_interval`` (and before a rebalance takes partitions away,
   and at stop), wait until the broker confirmed every record sent so far
   (:class:`processor.app.failstop.Deliveries`), then commit the offsets
   routed. A failed send or a failed route stops the worker (fail-stop) with
   nothing committed past it, so the records are read again after the restart.

It joins its own consumer group, ``{app_id}-router``: Faust's group speaks
Faust's own assignor protocol, which a plain member cannot join. A partition
that group never committed starts at the offset Faust's group committed for
it (a worker upgraded from the Faust router carries on where it was), and at
the log start otherwise.

The view methods (``assignment``, ``highwater``, ``committed``, ``position``)
let the operations side (lag, the stall check, idleness for the event-time
clock) look at the inputs as it looks at Faust's consumer for the internal topic.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import TopicPartition
from mode import Service

from processor.app.failstop import Deliveries, FailStop
from processor.app.pipeline import InputRecord
from processor.kafka_security import client_kwargs
from processor.settings import Settings

log = logging.getLogger(__name__)

Route = Callable[[list[InputRecord]], Awaitable[None]]


def router_group(settings: Settings) -> str:
    """The intake's consumer group (Faust's own group is ``app_id``)."""
    return f"{settings.app_id}-router"


class Intake(Service):
    """Reads the input topics and hands each fetch to the router; commits what was routed."""

    def __init__(
        self,
        settings: Settings,
        route: Route,
        deliveries: Deliveries,
        failstop: FailStop,
        *,
        commit_interval: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.route_batch = route
        self.deliveries = deliveries
        self.failstop = failstop
        self.commit_interval = commit_interval
        self.group = router_group(settings)
        self.consumer: AIOKafkaConsumer | None = None
        self.committed: dict[TopicPartition, int] = {}
        """Offsets this worker committed (or found committed), per assigned partition."""
        self.routed: dict[TopicPartition, int] = {}
        """The next offset to route, per partition: everything below it was routed."""
        self.floor: dict[TopicPartition, int] = {}
        """Per assigned partition, where this owner starts: records below it are done."""
        self.lock = asyncio.Lock()
        """Held while a batch is routed or offsets are committed; a rebalance waits for it."""
        self._last_commit = time.monotonic()

    # ------------------------------------------------------------------ lifecycle

    async def on_start(self) -> None:
        self.consumer = AIOKafkaConsumer(
            **client_kwargs(self.settings),
            group_id=self.group,
            client_id=f"{self.settings.app_id}-intake",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(self.settings.session_timeout * 1000),
            heartbeat_interval_ms=int(max(self.settings.session_timeout / 5, 0.5) * 1000),
            rebalance_timeout_ms=int(max(self.settings.session_timeout * 3, 30.0) * 1000),
            max_partition_fetch_bytes=4 * 1024 * 1024,  # Faust's consumer_max_fetch_size
        )
        self.consumer.subscribe(list(self.settings.source_topics), listener=_Listener(self))
        await self.consumer.start()
        log.info(
            "intake: reading %s as group %s", ", ".join(self.settings.source_topics), self.group
        )

    async def on_stop(self) -> None:
        consumer = self.consumer
        if consumer is None:
            return
        if not self.failstop.failed:
            try:
                async with self.lock:
                    await self._commit()
            except Exception:
                log.exception("intake: the last commit failed (the records will be read again)")
        await consumer.stop()

    @Service.task
    async def _run(self) -> None:
        consumer = self.consumer  # made by on_start, which mode runs before the tasks
        assert consumer is not None
        wait_ms = max(1, int(self.settings.batch_window * 1000))
        while not self.should_stop:
            try:
                fetched = await consumer.getmany(
                    timeout_ms=wait_ms, max_records=self.settings.batch_max
                )
            except (IllegalStateError, asyncio.CancelledError):
                return  # stopping
            except KafkaError as exc:
                self.failstop.fail(f"the intake could not fetch: {exc!r}", exc)
                await self.failstop.halt()
            if fetched:
                await self.take(fetched)
            if time.monotonic() - self._last_commit >= self.commit_interval:
                async with self.lock:
                    await self._commit()

    # ------------------------------------------------------------------ the loop's steps

    async def take(self, fetched: Mapping[TopicPartition, Iterable[Any]]) -> None:
        """Route one fetch as one batch; a failure stops the worker with nothing committed."""
        async with self.lock:
            records: list[InputRecord] = []
            ends: dict[TopicPartition, int] = {}
            assigned = self.assignment()
            for tp, messages in fetched.items():
                if tp not in assigned:
                    continue  # revoked while this fetch waited for the lock
                floor = self.floor.get(tp, 0)
                for m in messages:
                    if m.offset < floor:
                        continue  # fetched before the seek to where the last owner left it
                    records.append(InputRecord(m.topic, m.partition, m.offset, m.key, m.value))
                    ends[tp] = m.offset + 1
            if not records:
                return
            try:
                await self.route_batch(records)
            except Exception as exc:
                self.failstop.fail(f"the router failed: {exc!r}", exc)
                await self.failstop.halt()
            self.routed.update(ends)

    async def _commit(self, only: Collection[TopicPartition] | None = None) -> None:
        """Commit what was routed, once every send so far is confirmed (call with the lock)."""
        self._last_commit = time.monotonic()
        consumer = self.consumer
        if consumer is None:
            return
        due = {
            tp: offset
            for tp, offset in self.routed.items()
            if offset > self.committed.get(tp, -1) and (only is None or tp in only)
        }
        if not due:
            return
        if not await self.deliveries.settle():
            log.error("intake: not committing %d offsets after a failure", len(due))
            await self.failstop.halt()
        try:
            await consumer.commit(due)
        except CommitFailedError as exc:
            # The group moved on (this member was too slow, or paused): the new owner
            # reads from the last commit, so these records are routed again there.
            log.warning("intake: the group refused the commit (%s); records will be re-read", exc)
            return
        self.committed.update(due)

    # ------------------------------------------------------------------ rebalances

    async def revoked(self, partitions: Collection[TopicPartition]) -> None:
        """Before partitions go: commit what was routed of them, then forget them."""
        async with self.lock:
            if not self.failstop.failed:
                try:
                    await self._commit(partitions)
                except KafkaError as exc:
                    log.warning("intake: commit before revocation failed (%s)", exc)
            for tp in partitions:
                self.routed.pop(tp, None)
                self.committed.pop(tp, None)
                self.floor.pop(tp, None)

    async def assigned(self, partitions: Collection[TopicPartition]) -> None:
        """New partitions: note their committed offsets; adopt Faust's group's where none.

        Holds the lock: aiokafka's fetcher may already have reset a partition without a
        commit to its log start and fetched from there. Those records are below the
        floor set here, and :meth:`take` drops them.
        """
        consumer = self.consumer
        if consumer is None or not partitions:
            return
        async with self.lock:
            missing: list[TopicPartition] = []
            for tp in partitions:
                offset = await consumer.committed(tp)
                if offset is None:
                    missing.append(tp)
                else:
                    self.committed[tp] = self.floor[tp] = offset
            if missing:
                for tp, offset in (await self._legacy_offsets(missing)).items():
                    log.info(
                        "intake: %s[%d] starts at %d, where the Faust router left it",
                        tp.topic,
                        tp.partition,
                        offset,
                    )
                    consumer.seek(tp, offset)
                    self.floor[tp] = offset

    async def _legacy_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Offsets the Faust router (group ``app_id``) committed for ``partitions``."""
        admin = AIOKafkaAdminClient(**client_kwargs(self.settings))
        try:
            await admin.start()
            found = await admin.list_consumer_group_offsets(
                self.settings.app_id, partitions=partitions
            )
        except KafkaError as exc:
            log.warning("intake: could not read the Faust group's offsets (%s)", exc)
            return {}
        finally:
            await admin.close()
        return {tp: meta.offset for tp, meta in found.items() if meta.offset >= 0}

    # ------------------------------------------------------------------ view

    def assignment(self) -> set[TopicPartition]:
        consumer = self.consumer
        if consumer is None:
            return set()
        try:
            return set(consumer.assignment())
        except IllegalStateError:
            return set()

    def highwater(self, tp: Any) -> int | None:
        if self.consumer is None:
            return None
        end = self.consumer.highwater(TopicPartition(tp.topic, tp.partition))
        return None if end is None else int(end)

    async def position(self, tp: Any) -> int:
        assert self.consumer is not None
        return int(await self.consumer.position(TopicPartition(tp.topic, tp.partition)))

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        if self.consumer is None:
            return None
        found = self.consumer.partitions_for_topic(topic)
        return None if found is None else set(found)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, intake: Intake) -> None:
        self.intake = intake

    async def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        await self.intake.revoked(revoked)

    async def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        await self.intake.assigned(assigned)


async def records_behind(settings: Settings) -> int | None:
    """Records of the inputs and the internal topic a worker group has not committed yet.

    The inputs are committed by the intake's group, the internal topic by Faust's.
    Each probe carries one group's id but never subscribes, so it reads committed
    offsets without joining (or disturbing) the group; the admin client's
    all-partitions OffsetFetch does not work with the embedded broker. None while a
    topic has no metadata yet.
    """
    behind = 0
    for group, topics in (
        (router_group(settings), list(settings.source_topics)),
        (settings.app_id, [settings.events_topic]),
    ):
        probe = AIOKafkaConsumer(
            **client_kwargs(settings), group_id=group, enable_auto_commit=False
        )
        await probe.start()
        try:
            partitions = []
            for topic in topics:
                found = probe.partitions_for_topic(topic)
                if not found:
                    return None
                partitions += [TopicPartition(topic, p) for p in found]
            for tp, end in (await probe.end_offsets(partitions)).items():
                behind += max(0, end - (await probe.committed(tp) or 0))
        finally:
            await probe.stop()
    return behind
