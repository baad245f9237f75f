"""The memoised partitioner picks what Kafka's default partitioner picks."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import DefaultPartitioner, murmur2
from hypothesis import given
from hypothesis import strategies as st

from processor.app import partitioning
from processor.app.partitioning import default_partitioner, partition_for


@given(key=st.binary(max_size=64), count=st.integers(min_value=1, max_value=300))
def test_the_producer_partitioner_is_kafkas_default(key: bytes, count: int) -> None:
    partitions = list(range(count))
    expected = DefaultPartitioner()(key, partitions, partitions)
    assert default_partitioner(key, partitions, partitions) == expected
    assert default_partitioner(key, partitions, partitions) == expected  # from the memo


@given(customer_id=st.text(max_size=40), count=st.integers(min_value=1, max_value=300))
def test_a_customer_partition_is_murmur2_of_its_id(customer_id: str, count: int) -> None:
    assert partition_for(customer_id, count) == (murmur2(customer_id.encode()) & 0x7FFFFFFF) % count


def test_a_record_without_a_key_goes_to_an_available_partition() -> None:
    assert default_partitioner(None, [0, 1, 2, 3], [2]) == 2
    assert default_partitioner(None, [0, 1, 2, 3], []) in {0, 1, 2, 3}


def test_the_memo_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(partitioning, "MEMO_SIZE", 10)
    for n in range(100):
        partition_for(f"customer-{n}", 12)
    assert len(partitioning._hashes) <= 10
    assert partition_for("customer-99", 12) == (murmur2(b"customer-99") & 0x7FFFFFFF) % 12
