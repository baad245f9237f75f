"""The commit guard for partitions without a commit (processor/app/redelivery.py).

Faust's own ``Consumer._new_offset`` runs underneath; only the broker is left out.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Any

import pytest
from faust.transport.consumer import Consumer
from faust.types import TP

from processor.app.redelivery import guard_uncommitted_heads

TP0 = TP("clicks", 5)


class _Consumer:
    """The parts of Faust's consumer the guard touches, with Faust's own _new_offset."""

    def __init__(self, earliest: int) -> None:
        self._acked: defaultdict[TP, list[int]] = defaultdict(list)
        self._acked_index: defaultdict[TP, set[int]] = defaultdict(set)
        self._committed_offset: defaultdict[TP, int | None] = defaultdict(lambda: None)
        self._gap: defaultdict[TP, Any] = defaultdict(lambda: None)
        self.earliest = earliest
        self.sought: dict[TP, int] = {}

    def _new_offset(self, tp: TP) -> int | None:
        result: int | None = Consumer._new_offset(self, tp)  # type: ignore[arg-type]
        return result

    async def perform_seek(self) -> None:
        return None

    def assignment(self) -> set[TP]:
        return {TP0}

    def _is_changelog_tp(self, tp: TP) -> bool:
        return False

    async def seek(self, tp: TP, offset: int) -> None:
        self.sought[tp] = offset

    async def earliest_offsets(self, *tps: TP) -> dict[TP, int]:
        return {tp: self.earliest for tp in tps}

    def ack(self, *offsets: int) -> None:
        self._acked[TP0].extend(offsets)
        self._acked_index[TP0].update(offsets)


def _guarded(earliest: int) -> Any:
    consumer = _Consumer(earliest)
    guard_uncommitted_heads(consumer)
    asyncio.run(consumer.perform_seek())
    return consumer


def test_faust_alone_commits_over_a_hole_when_nothing_was_committed() -> None:
    consumer = _Consumer(0)
    consumer.ack(*range(49, 57))
    assert consumer._new_offset(TP0) == 57  # records 0..48 were never routed


def test_a_hole_at_the_head_of_an_uncommitted_partition_is_not_committed() -> None:
    consumer = _guarded(0)
    consumer.ack(*range(49, 57))
    assert consumer._new_offset(TP0) is None


def test_offset_zero_onwards_commits() -> None:
    consumer = _guarded(0)
    consumer.ack(*range(0, 8))
    assert consumer._new_offset(TP0) == 8


def test_a_truncated_log_starts_at_its_earliest_offset() -> None:
    consumer = _guarded(100)
    consumer.ack(*range(100, 110))
    assert consumer._new_offset(TP0) == 110


def test_before_any_seek_nothing_uncommitted_is_committed() -> None:
    consumer = _Consumer(0)
    guard_uncommitted_heads(consumer)
    consumer.ack(0, 1)
    assert consumer._new_offset(TP0) is None


def test_a_committed_partition_keeps_faust_s_rule() -> None:
    consumer = _guarded(0)
    consumer._committed_offset[TP0] = 40
    consumer.ack(*range(40, 45))
    assert consumer._new_offset(TP0) == 45


def test_a_partition_without_a_commit_is_read_again_from_its_log_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="processor.app.redelivery"):
        assert _guarded(7).sought == {TP0: 7}
    said = [r.message for r in caplog.records if "no commit found" in r.message]
    assert said == [
        f"{TP0.topic}[{TP0.partition}]: no commit found, reading it from its log start, offset 7"
    ]


def test_a_committed_partition_is_left_where_faust_sought_it() -> None:
    consumer = _Consumer(0)
    consumer._committed_offset[TP0] = 40
    guard_uncommitted_heads(consumer)
    asyncio.run(consumer.perform_seek())
    assert consumer.sought == {}
