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


class DictStates(dict[bytes, bytes]):
    async def put(self, key: bytes, value: bytes, partition: int) -> None:
        self[key] = value


async def test_the_engine_fires_nothing_early_for_a_forged_tick() -> None:
    """A checkout a day ahead arms cart_abandoned; a tick from 2099 must not fire it."""
    from processor.app.metrics import Metrics
    from processor.app.pipeline import Engine, InputRecord
    from processor.app.timers import TimerIndex
    from processor.contracts.bundle import encode_bundle, encode_tick
    from processor.contracts.outputs import Record
    from processor.engine import load_model
    from tests.engine.events import ev

    triggers: list[Record] = []

    async def collect(record: Record, partition: int | None) -> None:
        triggers.append(record)

    async def ignore(record: Record, partition: int | None) -> None:
        return None

    def engine(skew: float) -> Engine:
        return Engine(
            model=load_model(),
            states=DictStates(),
            chunks={},
            send_change=ignore,
            send_trigger=collect,
            send_dead_letter=ignore,
            ce_source="/test",
            metrics=Metrics(),
            timers=TimerIndex(max_clock_skew=skew),
        )

    at = InputRecord("t-events", 0, 0, None, None)
    checkout = ev("checkout_started", datetime.now(UTC) + timedelta(days=1))
    forged = encode_tick(Tick("tick:forged", datetime(2099, 1, 1, tzinfo=UTC)))
    guarded = engine(300.0)
    await guarded.apply_bundle(encode_bundle([checkout]), at)
    await guarded.apply_bundle(forged, at)

    def fired() -> list[str]:
        return [orjson.loads(r.value)["trigger"] for r in triggers]

    assert fired() == ["sales_assist"]  # entering evaluation; no absence timer fired
    triggers.clear()
    # Without the clamp (an unbounded skew) the same tick fires the timer: the test can fail.
    unguarded = engine(float(10**10))
    await unguarded.apply_bundle(encode_bundle([checkout]), at)
    await unguarded.apply_bundle(forged, at)
    assert "cart_abandoned" in fired()


def test_a_future_event_cannot_drag_the_watermark_along() -> None:
    timers = TimerIndex(max_clock_skew=60.0)
    before = datetime.now(UTC)
    timers.observe(3, datetime(2099, 1, 1, tzinfo=UTC))
    assert before <= timers.watermarks[3] <= datetime.now(UTC) + timedelta(seconds=60)
    past = datetime(2026, 1, 1, tzinfo=UTC)
    timers.observe(4, past)
    assert timers.watermarks[4] == past
