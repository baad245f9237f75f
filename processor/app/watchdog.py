"""The progress checks' clock: a service that runs from the worker's start.

Faust starts an app's timers (``@app.timer``) only after the first table
recovery has completed. A recovery that never completes is one of the things
the stall checks watch (:meth:`processor.app.operations.Operations.check_progress`),
so they cannot run on such a timer: this service is a dependency of the app,
started with its producer and consumer, before recovery begins.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from mode import Service

from processor.app.failstop import FailStop

CHECK_EVERY = 5.0
"""Seconds between progress checks."""


class Watchdog(Service):
    """Calls ``check(now)`` every :data:`CHECK_EVERY` seconds until the worker stops."""

    def __init__(
        self,
        check: Callable[[float], None],
        failstop: FailStop,
        *,
        interval: float = CHECK_EVERY,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.check = check
        self.failstop = failstop
        self.interval = interval

    @Service.task
    async def _watch(self) -> None:
        while not self.should_stop and not self.failstop.failed:
            await self.sleep(self.interval)
            try:
                self.check(time.monotonic())
            except Exception as exc:  # a check that cannot run watches nothing: stop
                self.failstop.fail(f"the progress check failed: {exc!r}", exc)
