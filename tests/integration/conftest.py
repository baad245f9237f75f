"""Integration fixtures: one real embedded broker per session, real worker processes.

Each test gets its own app id and topic names, so tests share the broker without
seeing each other's records.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from processor import processes
from processor.broker import EmbeddedBroker, free_port
from processor.processes import Worker
from processor.settings import Settings

_names = itertools.count(1)

API_TOKEN = "integration-token-1f0c"
"""The workers' API token; tests send it as ``Authorization: Bearer``."""
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_path=log) as running:
        yield running


@pytest.fixture
def settings(broker: EmbeddedBroker, tmp_path: Path) -> Settings:
    return isolated_settings(broker, tmp_path)


def isolated_settings(broker: EmbeddedBroker, tmp_path: Path) -> Settings:
    """Settings of one test: its own app id, topics, data directory and API token file."""
    n = next(_names)
    prefix = f"t{n}-{os.getpid()}"
    token_file = tmp_path / "api-token"
    token_file.write_text(API_TOKEN + "\n")
    return Settings(
        api_token_file=token_file,
        broker_url=broker.url,
        app_id=f"{prefix}-app",
        partitions=4,
        data_dir=tmp_path / "data",
        clickstream_topic=f"{prefix}.clickstream",
        research_topic=f"{prefix}.research",
        support_topic=f"{prefix}.support",
        stage_changes_topic=f"{prefix}.stage-changes",
        dead_letter_topic=f"{prefix}.dead-letter",
        triggers_topic=f"{prefix}.triggers",
        erasure_requests_topic=f"{prefix}.erasure-requests",
        erasures_topic=f"{prefix}.erasures",
        identities_topic=f"{prefix}.identities",
        session_timeout=6.0,
        batch_window=0.02,
    )


WorkerProcess = Worker
"""A worker's process, as every test starts it (processor/processes.py, as the demo and bench)."""


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    """Started workers are stopped after the test; their logs are shown if it failed."""
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.stop()


def start_worker(
    started: list[WorkerProcess], settings: Settings, tmp_path: Path, name: str
) -> WorkerProcess:
    from dataclasses import replace

    own = replace(settings, web_port=free_port(), data_dir=tmp_path / f"data-{name}")
    worker = processes.start_worker(own, tmp_path / f"worker-{name}.log", name=name)
    started.append(worker)
    return worker


async def run_forget(settings: Settings, *ids: str) -> str:
    """`journey forget IDS...` as an operator runs it: its stdout (request ids), exit 0 asserted."""
    forget = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "processor", "forget", *ids,
        env=settings.environment(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(forget.communicate(), 60)
    assert forget.returncode == 0, err.decode()
    return out.decode()
