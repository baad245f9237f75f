"""A tick on the internal topic cannot move a clock past the wall clock plus the skew."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from processor.app.timers import clamp_tick
from processor.contracts.bundle import Tick
from processor.settings import Settings

WALL = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def test_a_tick_from_the_future_is_clamped() -> None:
    forged = Tick("tick:forged", datetime(2099, 1, 1, tzinfo=UTC))
    clamped = clamp_tick(forged, 300.0, wall=WALL)
    assert clamped.now == WALL + timedelta(seconds=300)
    assert clamped.id == forged.id  # a replay of it is still recognised


def test_ticks_within_the_skew_are_unchanged() -> None:
    for now in (WALL - timedelta(days=3), WALL, WALL + timedelta(seconds=299)):
        tick = Tick("tick:x", now)
        assert clamp_tick(tick, 300.0, wall=WALL) is tick


def test_the_skew_is_a_setting() -> None:
    assert Settings().max_clock_skew == 300.0
    assert Settings.from_env({"JOURNEY_MAX_CLOCK_SKEW": "5"}).max_clock_skew == 5.0
    clamped = clamp_tick(Tick("tick:y", WALL + timedelta(hours=1)), 5.0, wall=WALL)
    assert clamped.now == WALL + timedelta(seconds=5)
