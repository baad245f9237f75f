"""The app factory: Faust settings come from ours, never from Faust's own variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from processor.app import create_app
from processor.app.partitioning import partition_for
from processor.settings import Settings


def test_faust_environment_variables_do_not_collide(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BROKER_URL", "kafka://elsewhere:1")
    monkeypatch.setenv("APP_STORE", "memory://")
    monkeypatch.setenv("WEB_PORT", "1")
    settings = Settings(
        broker_url="kafka://127.0.0.1:9999",
        store_url="rocksdb://",
        web_port=7777,
        data_dir=tmp_path,
        partitions=5,
    )
    conf = create_app(settings).faust.conf
    assert [str(u) for u in conf.broker] == ["kafka://127.0.0.1:9999"]
    assert str(conf.store) == "rocksdb:"
    assert conf.web_port == 7777
    assert conf.topic_partitions == 5
    assert conf.processing_guarantee.value == "at_least_once"


def test_partition_for_matches_kafkas_default_partitioner() -> None:
    from aiokafka.partitioner import DefaultPartitioner

    partitioner = DefaultPartitioner()
    for customer in ["alice", "bob", "cust-000123", "ünïcode"]:
        expected = partitioner(customer.encode(), list(range(8)), list(range(8)))
        assert partition_for(customer, 8) == expected


def test_the_consumer_takes_acks_only_of_what_an_agent_finished(tmp_path: Path) -> None:
    """processor/app/inflight.py is wired in: a skipped input record is never committable."""
    from faust.types.tuples import TP, ConsumerMessage

    settings = Settings(broker_url="kafka://127.0.0.1:9999", data_dir=tmp_path, partitions=2)
    app = create_app(settings).faust
    consumer = app.consumer
    topic = settings.events_topic
    app.topics.acking_topics.add(topic)  # as once the engine agent subscribed
    skipped = ConsumerMessage(topic, 0, 0, 0.0, 0, [], None, b"{}", None, tp=TP(topic, 0))
    assert consumer.ack(skipped) is False
    assert skipped.acked
    assert not consumer._acked[TP(topic, 0)]
