"""The demo's event-to-output latency line."""

from __future__ import annotations

from processor.demo.run import latency_summary


def test_the_latency_line_gives_median_tail_and_maximum() -> None:
    line = latency_summary([float(n) / 10 for n in range(1, 101)])
    assert line.startswith("p50 5.10 s, p95 9.60 s, max 10.00 s over 100 stage changes")


def test_no_stage_changes_is_said() -> None:
    assert latency_summary([]) == "no stage changes seen"
