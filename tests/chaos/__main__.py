"""``python -m tests.chaos [--seed N] [--duration S] ...``: one chaos run and its report.

Exits 1 when the checker found violations."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tests.chaos.runner import ChaosConfig, run, seed_from
from tests.chaos.schedule import DESCRIPTIONS
from tests.chaos.workload import WorkloadShape


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--seed", help="seed of workload and schedule (default: random, printed)")
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of faults")
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--hot-customers", type=int, default=3)
    parser.add_argument("--hot-events", type=int, default=3000)
    parser.add_argument(
        "--order",
        choices=["partition", "event-time"],
        default="partition",
        help="the order the reference engine applies events in (see tests/chaos/checker.py)",
    )
    parser.add_argument("--settle-timeout", type=float, default=300.0)
    parser.add_argument(
        "--broker-safe",
        action="store_true",
        help="only faults the embedded broker's coordinator survives (as the short run)",
    )
    parser.add_argument("--broker-url", help="use this broker instead of starting one")
    parser.add_argument("--workdir", type=Path, help="logs and data dirs (default: a temp dir)")
    args = parser.parse_args(argv)
    config = ChaosConfig(
        seed=seed_from(args.seed),
        duration=args.duration,
        shape=WorkloadShape(
            customers=args.customers, hot_customers=args.hot_customers, hot_events=args.hot_events
        ),
        order=args.order,
        settle_timeout=args.settle_timeout,
        broker_safe=args.broker_safe,
        broker_url=args.broker_url,
        workdir=args.workdir,
    )
    result = run(config)
    print()
    print("faults (kinds: " + "; ".join(f"{k}: {v}" for k, v in DESCRIPTIONS.items()) + "):")
    for fault in result.faults:
        print(f"  {fault}")
    print(result.report.render())
    print(f"seed {config.seed}; logs and data in {result.workdir}")
    return 1 if result.report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
