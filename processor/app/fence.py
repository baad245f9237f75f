"""A worker that wakes after its session expired sends and commits nothing more.

A worker frozen longer than its session (SIGSTOP, a stalled VM) was expelled
from its group and its partitions moved on; :meth:`inflight.Finished.frozen`
makes its agents apply nothing more once it wakes. That is not enough: the
producer still holds what the worker handed it *before* the freeze (state
writes to the changelogs, stage changes, batches waiting for their linger) and
its sender task sends them as soon as the event loop runs again, after the new
owner of the partitions wrote its own. The changelog then goes back (a
customer's applied count 2, then the zombie's 1), and one (customer, sequence)
carries two payloads, each from a different order of the same events. The
short chaos run found exactly that (seed 1, pause then restart: 17 sequences
with two payloads, 3 changelog regressions, 14 customers whose last changelog
record missed events). Kafka fences such a zombie with transactions; this
processor runs at-least-once (faust-streaming's exactly-once duplicates,
#517, #323), so it fences itself.

:func:`install` wraps the two places every write of the process goes through,
for every aiokafka client in it (Faust's producer and consumer and the
intake's): the sender's produce request and the group coordinator's offset
commit. Before either, the freeze check runs; a process stopped past its
session exits at once (``os._exit``, code 70, the fail-stop code) instead of
sending. The check measures the silence itself (the watch thread may not have
looked yet when the loop runs first), so nothing queued before the freeze goes
out after it. A request already written to the socket before the freeze went
out before the session expired, ahead of the new owner's writes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.producer.sender import Sender

log = logging.getLogger(__name__)

Check = Callable[[], None]
"""Returns if the process may write; never returns (the process exits) otherwise."""


class _Gate:
    check: Check | None = None


_gate = _Gate()
_originals: dict[str, Any] = {}


def install(check: Check) -> None:
    """Run ``check`` before every produce request and offset commit of this process.

    Patches aiokafka's classes once (every client, whenever created); a later
    call only replaces the check (a test building several apps in one process).
    """
    _gate.check = check
    if _originals:
        return
    _originals["send"] = send = Sender._send_produce_req
    _originals["commit"] = commit = GroupCoordinator._do_commit_offsets

    async def _send_produce_req(self: Any, node_id: Any, batches: Any) -> Any:
        if _gate.check is not None:
            _gate.check()
        return await send(self, node_id, batches)

    async def _do_commit_offsets(self: Any, assignment: Any, offsets: Any) -> Any:
        if _gate.check is not None:
            _gate.check()
        return await commit(self, assignment, offsets)

    Sender._send_produce_req = _send_produce_req
    GroupCoordinator._do_commit_offsets = _do_commit_offsets


def uninstall() -> None:
    """Put aiokafka back as it was (tests)."""
    _gate.check = None
    if _originals:
        Sender._send_produce_req = _originals.pop("send")
        GroupCoordinator._do_commit_offsets = _originals.pop("commit")
