"""Reading the broker from outside: committed offsets of a group, end offsets, a changelog's
last value per key."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from bench.harness.config import PARTITIONS
from processor.contracts.state import decode_state
from processor.engine import (
    CustomerState,
)


class Offsets:
    """Committed offsets of a group and end offsets of topics, over one broker connection."""

    def __init__(self, bootstrap: str, known: dict[TopicPartition, int]) -> None:
        self.bootstrap = bootstrap
        self.known = known
        self.admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        self.reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)

    async def __aenter__(self) -> Offsets:
        await self.admin.start()
        await self.reader.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.reader.stop()
        await self.admin.close()

    async def existing(self, topics: Sequence[str]) -> list[str]:
        names = set(await self.admin.list_topics())
        return [t for t in topics if t in names]

    async def committed(self, group: str, topics: Sequence[str]) -> dict[TopicPartition, int]:
        """Partitions are named: Tansu 0.6 answers an all-partitions OffsetFetch with a
        response aiokafka cannot decode (and the connection drops)."""
        parts = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
        offsets = await self.admin.list_consumer_group_offsets(group, partitions=parts)
        return {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}

    async def ends(self, topics: Sequence[str]) -> dict[TopicPartition, int]:
        """End offsets of the topics that exist (a missing topic has none).

        The input topics' ends are known exactly from producing them; only the
        topics the workers write are asked of the broker.
        """
        asked = [t for t in topics if not any(tp.topic == t for tp in self.known)]
        present = await self.existing(asked) if asked else []
        result: dict[TopicPartition, int] = {
            tp: end for tp, end in self.known.items() if tp.topic in topics
        }
        if present:
            parts = [TopicPartition(t, p) for t in present for p in range(PARTITIONS)]
            result.update(await self.reader.end_offsets(parts))
        return result


async def latest_values(
    bootstrap: str, topic: str, ends: dict[TopicPartition, int], limit: float
) -> dict[bytes, bytes | None]:
    """Read a changelog to its end: the last value per key (None for a tombstone)."""
    return dict(await every_record(bootstrap, topic, ends, limit))


async def every_record(
    bootstrap: str, topic: str, ends: dict[TopicPartition, int], limit: float
) -> list[tuple[bytes, bytes | None]]:
    """Every (key, value) of a topic up to its end, in each partition's order."""
    parts = [tp for tp, end in ends.items() if tp.topic == topic and end > 0]
    if not parts:
        return []
    reader = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await reader.start()
    try:
        reader.assign(parts)
        await reader.seek_to_beginning(*parts)
        records: list[tuple[bytes, bytes | None]] = []
        waiting = set(parts)
        quiet = False
        deadline = time.monotonic() + limit
        while waiting or not quiet:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: not read to its end after {limit:.0f} s")
            # Past the reported end, one more quiet second: Tansu's end can be a batch short.
            wait_ms = 500 if waiting else 1000
            batch = await reader.getmany(timeout_ms=wait_ms, max_records=10_000)
            quiet = not waiting and not batch
            for messages in batch.values():
                for message in messages:
                    records.append((message.key, message.value))
            for tp in list(waiting):
                if await reader.position(tp) >= ends[tp]:
                    waiting.discard(tp)
        return records
    finally:
        await reader.stop()


@dataclass
class FinalStates:
    """Each customer's last state in a customer-state changelog, and its encoded size."""

    states: dict[str, CustomerState] = field(default_factory=dict)
    sizes: list[int] = field(default_factory=list)
    """Bytes of each customer's last encoded state value (the table's value, as stored)."""

    def size_summary(self) -> str:
        if not self.sizes:
            return "no states"
        ordered = sorted(self.sizes)
        return (
            f"mean {statistics.fmean(ordered):,.0f} B, median {statistics.median(ordered):,.0f} B, "
            f"p99 {ordered[int(len(ordered) * 0.99) - 1 if len(ordered) > 1 else 0]:,} B, "
            f"max {ordered[-1]:,} B over {len(ordered):,} customers "
            f"({sum(ordered) / 1e6:,.1f} MB in all)"
        )


def decode_states(latest: dict[bytes, bytes | None]) -> FinalStates:
    """The values that are customer states (the worker also writes handover markers)."""
    final = FinalStates()
    for key, value in latest.items():
        if key is None or value is None:
            continue
        try:
            final.states[key.decode()] = decode_state(value)
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            continue
        final.sizes.append(len(value))
    return final


async def latest_states(
    bootstrap: str, topic: str, ends: dict[TopicPartition, int], limit: float
) -> FinalStates:
    """Read a state changelog to its end; the last record per key is the customer's state.

    Summing ``applied_count`` over these shows whether every event was applied
    exactly once, whatever order the worker saw them in.
    """
    return decode_states(await latest_values(bootstrap, topic, ends, limit))


def total(offsets: dict[TopicPartition, int], topics: Sequence[str]) -> int:
    return sum(offset for tp, offset in offsets.items() if tp.topic in topics)


def complete(
    committed: dict[TopicPartition, int], ends: dict[TopicPartition, int], topics: Sequence[str]
) -> bool:
    """Every partition of ``topics`` is committed up to its end."""
    return all(committed.get(tp, 0) >= end for tp, end in ends.items() if tp.topic in topics)
