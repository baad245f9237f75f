"""``journey worker`` whose table recovery never receives one changelog partition.

Faust's recovery sometimes waits on a changelog partition that delivers
nothing (seen in a chaos run: "No event received for active tp ... since
recovery start" for minutes). It cannot be caused on purpose through the
broker, so this launcher makes it: the records of ``DEAF_TOPIC`` partition
``DEAF_PARTITION`` are dropped before Faust's recovery sees them. Everything
else (the broker, the worker, our code) is real.

Usage: ``DEAF_TOPIC=... DEAF_PARTITION=N python -m tests.integration.deaf_recovery``
"""

from __future__ import annotations

import os
import sys
from typing import Any

from faust.tables.manager import TableManager

from processor.cli import main

_queue = TableManager.changelog_queue


def _deaf_queue(self: TableManager) -> Any:
    queue = _queue.fget(self)  # type: ignore[attr-defined]
    if not getattr(queue, "deaf", False):
        topic, partition = os.environ["DEAF_TOPIC"], int(os.environ["DEAF_PARTITION"])
        get = queue.get

        async def deaf_get() -> Any:
            while True:
                event = await get()
                tp = event.message.tp
                if (tp.topic, tp.partition) != (topic, partition):
                    return event

        queue.get = deaf_get
        queue.deaf = True
    return queue


TableManager.changelog_queue = property(_deaf_queue)  # type: ignore[assignment,method-assign]

if __name__ == "__main__":
    sys.argv = [sys.argv[0], "worker"]
    sys.exit(main())
