"""Child processes of a run (workers, agents, peers): started in their own session, stopped
together, never left behind."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from bench.harness.config import REPO
from processor.processes import Child, Worker, start_worker
from processor.settings import Settings

_children: list[Child] = []


def spawn(name: str, argv: list[str], env: dict[str, str], log_path: Path) -> Child:
    """Start a child in the repository (``bench.*`` modules import from there); stopped on exit."""
    child = Child.spawn(name, argv, env, log_path, cwd=REPO)
    _children.append(child)
    return child


def spawn_worker(
    name: str, settings: Settings, log_path: Path, extra: dict[str, str] | None = None
) -> Worker:
    """A ``journey worker`` as the demo and the tests start one; stopped on exit."""
    worker = start_worker(settings, log_path, extra_env=extra, name=name, cwd=REPO)
    _children.append(worker)
    return worker


def indented_tail(child: Child, lines: int = 40) -> str:
    """The last lines of a child's log, indented under the report."""
    return "\n".join(f"    | {line}" for line in child.log_tail(lines).splitlines())


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
    """This environment without inherited ``JOURNEY_*`` variables, plus this run's settings
    (for the peers; a worker is started with :func:`spawn_worker`)."""
    env = settings.environment()
    env.update(extra or {})
    return env
