"""A tick on the internal topic cannot move a clock past the wall clock plus the skew."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

from processor.app.timers import TimerIndex, clamp_tick
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


async def test_the_engine_fires_nothing_early_for_a_forged_tick() -> None:
    """A checkout a day ahead arms cart_abandoned; a tick from 2099 must not fire it."""
    from processor.app.pipeline import InputRecord
    from processor.contracts.bundle import encode_bundle, encode_tick
    from tests.app.shell import make_shell
    from tests.engine.events import ev

    at = InputRecord("t-events", 0, 0, None, None)
    checkout = ev("checkout_started", datetime.now(UTC) + timedelta(days=1))
    forged = encode_tick(Tick("tick:forged", datetime(2099, 1, 1, tzinfo=UTC)))

    def fired(records: list[bytes]) -> list[str]:
        return [orjson.loads(value)["trigger"] for value in records]

    guarded = make_shell(timers=TimerIndex(max_clock_skew=300.0))
    await guarded.applier.apply_bundle(encode_bundle([checkout]), at)
    await guarded.applier.apply_bundle(forged, at)
    # entering evaluation; no absence timer fired
    assert fired([r.value for r, _ in guarded.triggers.records]) == ["sales_assist"]
    # Without the clamp (an unbounded skew) the same tick fires the timer: the test can fail.
    unguarded = make_shell(timers=TimerIndex(max_clock_skew=float(10**10)))
    await unguarded.applier.apply_bundle(encode_bundle([checkout]), at)
    await unguarded.applier.apply_bundle(forged, at)
    assert "cart_abandoned" in fired([r.value for r, _ in unguarded.triggers.records])


def test_a_future_event_cannot_drag_the_watermark_along() -> None:
    timers = TimerIndex(max_clock_skew=60.0)
    before = datetime.now(UTC)
    timers.observe(3, datetime(2099, 1, 1, tzinfo=UTC))
    assert before <= timers.watermarks[3] <= datetime.now(UTC) + timedelta(seconds=60)
    past = datetime(2026, 1, 1, tzinfo=UTC)
    timers.observe(4, past)
    assert timers.watermarks[4] == past
