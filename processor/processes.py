"""Stopping child processes that run in their own session (broker, workers)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


def stop_group(process: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """SIGTERM the process group, wait up to ``grace`` seconds, then SIGKILL it.

    Children are started with ``start_new_session=True``, so the group holds the
    child and anything it spawned, and a terminal's Ctrl-C never reaches them
    before the parent has decided to stop them.
    """
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
