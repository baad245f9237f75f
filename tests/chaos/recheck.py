"""``python -m tests.chaos.recheck WORKDIR [--order partition|event-time]``: check a run again.

Loads the history a chaos run dumped in ``WORKDIR/history`` and runs the
checker on it, so the checker (or the reference order) can change without
running the faults again.
"""

from __future__ import annotations

import argparse
import base64
import sys
from pathlib import Path
from typing import Any

import orjson

from processor.engine import load_model
from processor.settings import Settings
from tests.chaos.checker import Observed, Produced, check
from tests.chaos.observe import Out
from tests.chaos.workload import Planned


def _rows(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line]


def _raw(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def load(history: Path) -> tuple[Settings, list[Produced], Observed]:
    settings = Settings.from_env(orjson.loads((history / "settings.json").read_bytes()))
    sources = settings.source_topics
    produced = [
        Produced(
            Planned(
                sources[r["topic"]],
                _raw(r["key"]),
                _raw(r["value"]),
                r["kind"],
                r["reason"],
                r["customer_id"],
                r["event_id"],
            ),
            r["topic"],
            r["partition"],
            r["offset"],
            r.get("timestamp", -1),
        )
        for r in _rows(history / "produced.jsonl")
    ]

    def outs(name: str) -> list[Out]:
        return [
            Out(name, r["partition"], r["offset"], _raw(r["key"]), _raw(r["value"]), ())
            for r in _rows(history / f"{name}.jsonl")
        ]

    observed = Observed(
        stage_changes=outs("stage-changes"),
        triggers=outs("triggers"),
        dead_letters=outs("dead-letters"),
        changelog=outs("changelog"),
        api=orjson.loads((history / "api.json").read_bytes()),
        bundles=outs("events-by-customer"),
    )
    return settings, produced, observed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.recheck", description=__doc__)
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--order", choices=["partition", "event-time"], default="partition")
    args = parser.parse_args(argv)
    settings, produced, observed = load(args.workdir / "history")
    report = check(produced, observed, settings, load_model(), order=args.order)
    print(report.render())
    print("(headers are not in the dump: the header check is not repeated)")
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
