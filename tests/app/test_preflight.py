"""Preflight: how long a worker waits for the broker, and what auto means for the check."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time

import pytest

from processor.app.preflight import BrokerFacts, BrokerUnavailable, connect, consistency_check
from processor.broker import free_port
from processor.settings import Settings


@pytest.mark.parametrize(
    ("setting", "cluster_id", "expected"),
    [
        ("auto", "tansu_cluster", False),
        ("auto", "MkU3OEVBNTcwNTJENDM2Qk", True),
        ("auto", None, True),
        ("true", "tansu_cluster", True),
        ("false", "MkU3OEVBNTcwNTJENDM2Qk", False),
    ],
)
def test_auto_turns_the_check_off_only_for_the_embedded_broker(
    setting: str, cluster_id: str | None, expected: bool
) -> None:
    settings = Settings(recovery_consistency_check=setting)
    facts = BrokerFacts(cluster_id=cluster_id, max_message_bytes=1_000_000)
    assert consistency_check(settings, facts) is expected


async def test_waiting_for_a_missing_broker_says_so_then_gives_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()  # nothing listens here
    settings = Settings(broker_url=f"kafka://127.0.0.1:{port}", broker_wait=6.0)
    caplog.set_level(logging.WARNING, "processor.kafka_security")
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match=rf"127.0.0.1:{port} within 6s"):
        await asyncio.wait_for(connect(settings), 30)
    assert 6.0 <= time.monotonic() - started < 20
    waiting = [r for r in caplog.records if "waiting for the broker" in r.getMessage()]
    assert len(waiting) >= 1


def test_the_worker_exits_with_one_line_when_no_broker_answers() -> None:
    port = free_port()
    env = Settings(broker_url=f"kafka://127.0.0.1:{port}", broker_wait=2.0).environment()
    done = subprocess.run(
        [sys.executable, "-m", "processor", "worker"],
        env=env,
        capture_output=True,
        timeout=60,
        text=True,
    )
    assert done.returncode == 69
    last = done.stderr.strip().splitlines()[-1]
    assert last == f"journey worker: no broker answered at 127.0.0.1:{port} within 2s " + (
        "(JOURNEY_BROKER_WAIT)"
    )
    assert "Traceback" not in done.stderr
