"""Timer tick cost against the number of customers holding armed timers (not a test).

``python -m bench.timers [--customers 1000000] [--due 50]``

For populations of 10k, 100k and the full size (default 1 million) customers,
each holding an armed absence timer far in the future, plus ``--due`` customers
whose timers are due: build the worker's timer index (as after a rebalance),
then time ticks as the engine runs them (pop what is due, fire each due
customer's timers through the pure engine, feed the new states back). A tick
should cost the same at every population size: the work follows the due
timers, not the customers. All sizes are measured in the same run, since these
machines are noisy.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from datetime import UTC, datetime, timedelta

from processor.app.timers import TICK_PREFIX, TimerIndex
from processor.engine import CustomerState, load_model
from processor.engine.core import fire_due
from processor.engine.triggers import Timer, TriggerState

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MODEL = load_model()


def customer(i: int, deadline: datetime) -> CustomerState:
    return CustomerState(
        customer_id=f"cust-{i:07d}",
        cycle=1,
        stage="evaluation",
        stage_entered_at=T0,
        sequence=2,
        purchase_at=None,
        last_event_at=T0,
        applied_count=3,
        triggers=TriggerState(timers=(Timer("cart_abandoned", deadline, f"ev-{i}"),)),
    )


def measure(customers: int, due: int, ticks: int) -> dict[str, float]:
    far = T0 + timedelta(days=365)
    states = {}
    for i in range(customers):
        deadline = T0 + timedelta(minutes=i % due) if i < due else far
        states[f"cust-{i:07d}"] = customer(i, deadline)
    index = TimerIndex()
    started = time.perf_counter()
    index.rebuild(0, list(states.values()))
    rebuild_s = time.perf_counter() - started

    per_tick: list[float] = []
    fired_total = 0
    for t in range(ticks):
        now = T0 + timedelta(minutes=t)
        gc.disable()
        started = time.perf_counter()
        for customer_id in index.pop_due(0, now):
            state = states[customer_id]
            step = fire_due(state, now, f"{TICK_PREFIX}{t}", MODEL)
            fired_total += len(step.outputs)
            if step.state is not None and step.state is not state:
                index.on_state_written(0, state, step.state)
                states[customer_id] = step.state
        per_tick.append(time.perf_counter() - started)
        gc.enable()
    # An idle tick: nothing due.
    started = time.perf_counter()
    index.pop_due(0, T0 - timedelta(days=1))
    idle = time.perf_counter() - started
    return {
        "rebuild_s": rebuild_s,
        "tick_median_us": statistics.median(per_tick) * 1e6,
        "tick_max_us": max(per_tick) * 1e6,
        "idle_tick_us": idle * 1e6,
        "fired": fired_total,
        "pending": index.pending_total(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--due", type=int, default=50, help="customers whose timers are due")
    parser.add_argument("--ticks", type=int, default=60, help="ticks, one minute apart")
    args = parser.parse_args()
    sizes = sorted({10_000, 100_000, args.customers})
    print(f"{args.due} due customers, {args.ticks} ticks a minute apart (event time)\n")
    header = (
        f"{'customers with timers':>22} {'index rebuild s':>16} {'tick median us':>15} "
        f"{'tick max us':>12} {'idle tick us':>13} {'fired':>6} {'still pending':>14}"
    )
    print(header)
    print("-" * len(header))
    rows = {}
    for size in sizes:
        row = measure(size, args.due, args.ticks)
        rows[size] = row
        print(
            f"{size:>22,} {row['rebuild_s']:>16.2f} {row['tick_median_us']:>15.1f} "
            f"{row['tick_max_us']:>12.1f} {row['idle_tick_us']:>13.2f} {row['fired']:>6,.0f} "
            f"{row['pending']:>14,.0f}"
        )
    small, large = rows[sizes[0]], rows[sizes[-1]]
    print(
        f"\ntick cost at {sizes[-1]:,} vs {sizes[0]:,} customers: "
        f"{large['tick_median_us'] / small['tick_median_us']:.2f}x (median)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
