"""Which partition a key belongs to: Kafka's default partitioner, remembered per key.

Every event is routed by its customer id (the router), and every stage change
and trigger is sent keyed by it (the producer picks the partition). Both use
murmur2, as Kafka's Java client does, so keyed data lines up across topics.
aiokafka's murmur2 is pure Python, about 4 us a key, and the same few thousand
customers recur: a memo makes it a dictionary lookup. The memo is cleared when
full, so its memory stays bounded whatever the number of customers.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from aiokafka.partitioner import murmur2

MEMO_SIZE = 65_536
"""Keys remembered before the memo is cleared."""

_hashes: dict[bytes, int] = {}


def key_hash(key: bytes) -> int:
    """murmur2 of the key, positive: what Kafka's default partitioner takes modulo."""
    found = _hashes.get(key)
    if found is None:
        if len(_hashes) >= MEMO_SIZE:
            _hashes.clear()
        found = _hashes[key] = murmur2(key) & 0x7FFFFFFF
    return found


def partition_for(customer_id: str, partitions: int) -> int:
    """The partition that owns a customer; Kafka's default partitioner, so keyed data aligns."""
    return key_hash(customer_id.encode()) % partitions


def default_partitioner(
    key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]
) -> int:
    """aiokafka's ``DefaultPartitioner`` with the memo: the worker's producer uses it.

    Faust's ``producer_partitioner`` setting hands it to aiokafka's producer. A
    record without a key goes to a random partition, as before.
    """
    if key is None:
        return random.choice(available or all_partitions)
    return all_partitions[key_hash(key) % len(all_partitions)]
