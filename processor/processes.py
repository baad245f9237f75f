"""Child processes in their own session (the broker, workers, benchmark peers).

One helper for everything that starts a ``journey worker``: the demo, the
integration and chaos tests, and the benchmark all go through
:func:`start_worker`, so a worker is started, signalled and stopped the same
way everywhere (its settings as ``JOURNEY_*`` variables, its output in a log
file, its own session).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from processor.settings import Settings

WORKER_ARGV = (sys.executable, "-m", "processor", "worker")
"""How a worker is started: this interpreter, so a virtualenv or a checkout is kept."""


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


@dataclass
class Child:
    """A subprocess in its own session: it and whatever it started are signalled together."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    signalled: bool = False
    """SIGTERM was sent (:meth:`terminate`): not sent twice."""

    @classmethod
    def spawn(
        cls,
        name: str,
        argv: list[str] | tuple[str, ...],
        env: Mapping[str, str],
        log_path: Path,
        cwd: Path | None = None,
    ) -> Child:
        """Start ``argv`` with exactly ``env``, stdout and stderr appended to ``log_path``."""
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return cls(name, process, log_path)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def poll(self) -> int | None:
        """The exit code, or None while it runs."""
        return self.process.poll()

    def terminate(self) -> None:
        """SIGTERM once (a clean shutdown), without waiting for the exit."""
        if self.process.poll() is None and not self.signalled:
            self.signalled = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)

    def stop(self, grace: float = 20.0) -> int | None:
        """SIGTERM, SIGKILL after ``grace`` seconds; the exit code."""
        if self.process.poll() is None:
            self.terminate()
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final commit, no flush."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def pause(self) -> None:
        """SIGSTOP: frozen, as by a long GC pause or a suspended VM."""
        os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGCONT)

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass(kw_only=True)
class Worker(Child):
    """A ``journey worker`` process and the settings it runs with (its web port, data dir)."""

    settings: Settings


def start_worker(
    settings: Settings,
    log_path: Path,
    *,
    extra_env: Mapping[str, str] | None = None,
    name: str = "worker",
    cwd: Path | None = None,
) -> Worker:
    """A ``journey worker`` with exactly these settings (inherited ``JOURNEY_*`` variables
    dropped, secrets passed as file paths; see ``Settings.environment``), plus ``extra_env``."""
    env = settings.environment()
    env.update(extra_env or {})
    child = Child.spawn(name, WORKER_ARGV, env, log_path, cwd)
    return Worker(child.name, child.process, child.log_path, settings=settings)
