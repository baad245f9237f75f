"""The benchmark runs end to end on a tiny population and prints its table (a smoke test).

Not a timed test: it asserts that every row finished and that the processor's
correctness check holds, never how fast anything was. The Quix Streams row is
left out to keep this under a minute (it needs the ``bench`` extra, which CI does
not install): ``make bench-smoke`` runs the same with it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.rows import quix

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def run_module(*args: str, timeout: float) -> str:
    """``python -m ARGS`` from the repository: its output, once it exited 0."""
    done = subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_the_benchmark_prints_a_full_table_on_3000_records() -> None:
    out = run_module("bench.run", "--events", "3000", "--quick", "--no-quix-row", timeout=280)
    assert "vs aiokafka" in out and "vs no-op" in out
    for name in (
        "engine: decode_event + apply",
        "shell: router + applier in-process",
        "A aiokafka consumer + orjson",
        "B Faust no-op agent",
        "processor end to end",
    ):
        line = next(line for line in out.splitlines() if line.startswith(name))
        assert "DNF" not in line, line
        assert re.search(r"\d\.\d{3}x", line), line
    assert not any(line.startswith(quix.NAME) for line in out.splitlines())
    check = re.search(
        r"check: events applied per the changelog's final states ([\d,]+) "
        r"\(in-process ([\d,]+)\)",
        out,
    )
    assert check is not None, out[-3000:]
    applied, expected = (int(group.replace(",", "")) for group in check.groups())
    # Equal in almost every run; the harness may declare completion up to one bundle
    # early on Tansu (its end offsets can be a batch short), so allow one bundle.
    assert expected - 60 <= applied <= expected, check.group(0)
    # Every customer whose events all arrived within the lateness has, chain for chain, the
    # stage changes of the same events applied in process in event-time order.
    timed = re.search(r"within the lateness: ([\d,]+), chains equal for ([\d,]+) \((\w+)\)", out)
    assert timed is not None, out[-3000:]
    assert timed.group(3) == "equal" and timed.group(1) == timed.group(2), timed.group(0)
    assert int(timed.group(1).replace(",", "")) > 100, timed.group(0)
    assert re.search(r"state per customer .*: mean [\d,]+ B, median [\d,]+ B", out)
    assert re.search(r"every record that led to an output committed [\d.]+ s after Ready", out)
    assert re.search(r"worker CPU from Ready to its last output [\d.]+ s, \d+ us/event", out)


def test_the_ceiling_experiment_runs_on_2000_records() -> None:
    """``bench.ceiling`` (the shell on plain aiokafka and RocksDB) finishes and sends outputs."""
    out = run_module("bench.ceiling", "--events", "2000", timeout=200)
    ceiling = re.search(
        r"no second hop: [\d,]+/s \(\d\.\d{3}x of A\), [\d.]+ us CPU/event, ([\d,]+) stage changes",
        out,
    )
    in_process = re.search(r"dict tables; ([\d,]+) stage changes", out)
    assert ceiling is not None and in_process is not None, out
    assert int(ceiling.group(1).replace(",", "")) > 100, ceiling.group(0)
