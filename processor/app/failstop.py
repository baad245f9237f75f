"""Fail-stop: a failure of our own stops the worker before it can commit past it.

Left to itself, Faust is fail-silent in the places that matter here: an agent
that raises has its batch acked and skipped and is restarted (faust-streaming
#315, #527), a failed delivery is logged by a callback while the commit goes
ahead, and a consumer can stop after an agent crash (#175, #640). For a worker
whose promise is "nothing lost", each of these is data loss.

So every failure of our own (a store that cannot be read or written, a record
the broker refused, an agent that raised) goes through :class:`FailStop`:

1. its reason is recorded, so ``/readyz`` answers 503 and says why;
2. no offset is committed from then on (:func:`guard_commits`), and the agent
   that failed stops taking records (:meth:`FailStop.halt`);
3. the process exits with :data:`EXIT_CODE` a moment later (long enough for a
   probe or a log shipper to see it), without Faust's graceful shutdown, which
   would ack and commit the batch in hand.

On restart the uncommitted records are read again, and the engine re-emits
their outputs with the same ids and bytes.

:class:`Deliveries` holds every record handed to the producer until the broker
confirmed it. A commit first waits for all of them, and a single failed one
stops the worker instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

log = logging.getLogger(__name__)

EXIT_CODE = 70
"""EX_SOFTWARE: the worker stopped itself after a failure of its own."""

EXIT_AFTER_SECONDS = 2.0
"""Between the failure and the exit: /readyz answers 503 with the reason meanwhile."""


class FailStop:
    """The worker's one switch from running to stopped-because-something-failed."""

    def __init__(
        self,
        *,
        exit: Callable[[int], Any] = os._exit,
        exit_after: float = EXIT_AFTER_SECONDS,
    ) -> None:
        self._exit = exit
        self._exit_after = exit_after
        self.reason: str | None = None

    @property
    def failed(self) -> bool:
        return self.reason is not None

    def fail(self, reason: str, exc: BaseException | None = None) -> None:
        """Record the first failure, log it once, and schedule the exit."""
        if self.reason is not None:
            return
        self.reason = reason
        log.critical("stopping the worker: %s", reason, exc_info=exc)
        print(f"journey worker: stopping: {reason}", file=sys.stderr, flush=True)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._terminate()
        else:
            loop.call_later(self._exit_after, self._terminate)

    def stop_now(self, reason: str) -> NoReturn:
        """Exit at once, without the moment :meth:`fail` leaves: nothing more may go out.

        For a worker that must not send what it holds (a zombie, processor/app/fence.py).
        """
        self.reason = self.reason or reason
        log.critical("stopping the worker now: %s", reason)
        print(f"journey worker: stopping now: {reason}", file=sys.stderr, flush=True)
        self._terminate()
        raise SystemExit(EXIT_CODE)  # an exit stand-in (tests) returned

    def _terminate(self) -> None:
        logging.shutdown()
        self._exit(EXIT_CODE)

    async def halt(self) -> NoReturn:
        """Never return: the caller makes no further progress until the process exits."""
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


class Deliveries:
    """Records handed to the producer whose delivery the broker has not confirmed yet."""

    def __init__(self, failstop: FailStop) -> None:
        self.failstop = failstop
        self.pending: set[asyncio.Future[Any]] = set()
        self._since: dict[asyncio.Future[Any], float] = {}
        self.flush: Callable[[], Awaitable[None]] | None = None
        """Hands over what is still buffered (the outbox, app/outbox.py) before a settle waits."""

    def track(self, delivery: Any) -> None:
        """Watch a send's future; a failed delivery stops the worker."""
        if not isinstance(delivery, asyncio.Future):
            return  # already delivered (or a test sink): nothing to wait for
        if delivery.done():
            self._done(delivery)
            return
        self.pending.add(delivery)
        self._since[delivery] = time.monotonic()
        delivery.add_done_callback(self._done)

    def describe(self) -> str:
        """How many sends wait for the broker, and for how long the oldest (a stall's log line)."""
        if not self._since:
            return "no send waiting for the broker"
        oldest = time.monotonic() - min(self._since.values())
        return f"{len(self._since)} sends waiting for the broker, the oldest for {oldest:.0f}s"

    def _done(self, delivery: asyncio.Future[Any]) -> None:
        self.pending.discard(delivery)
        self._since.pop(delivery, None)
        if delivery.cancelled():
            self.failstop.fail("a send was cancelled before the broker confirmed it")
            return
        exc = delivery.exception()
        if exc is not None:
            self.failstop.fail(f"the broker refused a record: {exc!r}", exc)

    async def settle(self) -> bool:
        """Wait for every delivery so far; True if all succeeded and nothing else failed.

        "So far" includes records still buffered: they are flushed first.
        """
        if self.flush is not None:
            try:
                await self.flush()
            except Exception as exc:
                self.failstop.fail(f"the producer did not take a record batch: {exc!r}", exc)
                return False
        if self.pending:
            await asyncio.wait(list(self.pending))
        return not self.failstop.failed


def guard_commits(consumer: Any, deliveries: Deliveries) -> None:
    """Make Faust's consumer commit only after every delivery so far succeeded.

    Faust computes the offsets to commit from the records its agents acked, and
    flushes the producer before committing, but it never looks at the outcome
    of a send. Wrapping ``_commit_offsets`` (the one place all commits go
    through: the periodic commit, rebalances and shutdown) closes that gap.
    """
    original = consumer._commit_offsets

    async def _commit_offsets(offsets: Any, start_new_transaction: bool = True) -> bool:
        if not await deliveries.settle():
            log.error(
                "not committing %d offsets after a failure: %s",
                len(offsets),
                deliveries.failstop.reason,
            )
            return False
        committed: bool = await original(offsets, start_new_transaction=start_new_transaction)
        return committed

    consumer._commit_offsets = _commit_offsets
