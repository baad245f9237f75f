"""Child processes of a run (workers, agents, peers): started in their own session, stopped
together, never left behind."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from bench.harness.config import REPO
from processor.settings import Settings


@dataclass
class Child:
    """A subprocess in its own session, so that it and its children stop together."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    signalled: bool = False

    def terminate(self) -> None:
        """SIGTERM once (a clean Faust shutdown), without waiting for the exit."""
        if self.process.poll() is None and not self.signalled:
            self.signalled = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM (a clean Faust shutdown), SIGKILL after ``grace`` seconds."""
        if self.process.poll() is not None:
            return
        self.terminate()
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(f"    | {line}" for line in text[-lines:])


_children: list[Child] = []


def spawn(name: str, argv: list[str], env: dict[str, str], log_path: Path) -> Child:
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            argv,
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    child = Child(name, process, log_path)
    _children.append(child)
    return child


def stop_children() -> None:
    """Stop every subprocess this run started; safe to call more than once."""
    for child in _children:
        child.terminate()
    while _children:
        _children.pop().stop()


def stop_together(children: Sequence[Child]) -> None:
    """SIGTERM all first, then wait for each: members of one group leave together, so
    no survivor takes over the others' partitions and recovers their tables on the way out."""
    for child in children:
        child.terminate()
    for child in children:
        stop_one(child)


def stop_one(child: Child) -> None:
    """Stop one child (SIGTERM, SIGKILL after a grace) and forget it."""
    child.stop()
    if child in _children:
        _children.remove(child)


def interrupt_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """A SIGTERM handler: unwind like Ctrl-C, so every child is stopped on the way out."""
    raise KeyboardInterrupt(f"signal {signum}")


def worker_env(settings: Settings, extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without inherited ``JOURNEY_*`` variables, plus this run's settings."""
    env = settings.environment()
    env.update(extra or {})
    return env
