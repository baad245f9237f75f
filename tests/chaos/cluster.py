"""A group of real ``journey worker`` processes that faults can be done to.

Builds on :class:`processor.processes.Worker` (one process, its own
web port and data directory) and adds what a chaos schedule needs: SIGTERM and
wait, SIGKILL, SIGSTOP/SIGCONT, a wiped data directory, and waiting on
``/readyz``. Every wait is on a condition with a timeout.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import aiohttp

from processor.broker import free_port
from processor.processes import Worker, start_worker
from processor.settings import Settings


@dataclass
class Slot:
    """A named worker: a process that comes and goes, and the data directory it keeps."""

    name: str
    settings: Settings
    log_path: Path
    worker: Worker | None = None
    starts: int = 0
    paused: bool = False

    @property
    def running(self) -> bool:
        return self.worker is not None and self.worker.alive()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.web_port}"

    def start(self) -> None:
        assert not self.running, f"{self.name} is already running"
        self.starts += 1
        with self.log_path.open("a") as log:
            log.write(f"\n===== chaos: start #{self.starts} at {time.strftime('%H:%M:%S')}\n")
        self.worker = start_worker(self.settings, self.log_path, name=self.name)

    def kill(self) -> None:
        assert self.worker is not None
        self.resume()  # a stopped process dies of SIGKILL too, but keep the flag honest
        self.worker.kill()
        self.worker = None

    def terminate(self, grace: float = 30.0) -> int | None:
        """SIGTERM and wait for the exit (SIGKILL after ``grace``); the exit code."""
        assert self.worker is not None
        self.resume()
        code = self.worker.stop(grace=grace)
        self.worker = None
        return code

    def pause(self) -> None:
        assert self.worker is not None
        self.worker.pause()
        self.paused = True

    def resume(self) -> None:
        if self.paused and self.worker is not None:
            self.worker.resume()
        self.paused = False

    def wipe(self) -> None:
        shutil.rmtree(self.settings.data_dir, ignore_errors=True)

    def exit_code(self) -> int | None:
        return None if self.worker is None else self.worker.poll()

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Cluster:
    """The chaos group: slots by name, started and stopped by the schedule."""

    settings: Settings
    workdir: Path
    slots: dict[str, Slot] = field(default_factory=dict)
    unexpected_exits: list[tuple[str, int, str]] = field(default_factory=list)
    """(worker, exit code, log tail) of workers that exited without being told to."""

    def slot(self, name: str) -> Slot:
        if name not in self.slots:
            own = replace(
                self.settings, web_port=free_port(), data_dir=self.workdir / f"data-{name}"
            )
            self.slots[name] = Slot(name, own, self.workdir / f"worker-{name}.log")
        return self.slots[name]

    def running(self) -> list[Slot]:
        return [s for s in self.slots.values() if s.running]

    def reap(self) -> list[Slot]:
        """Slots whose process exited on its own since the last look; recorded."""
        dead = []
        for slot in self.slots.values():
            code = slot.exit_code()
            if code is not None and slot.worker is not None:
                # 200 lines: a worker that wakes in a recovery prints Faust's offset tables
                # (about 150 lines) between its reason and its exit (chaos seed 1, w11).
                self.unexpected_exits.append((slot.name, code, slot.log_tail(200)))
                slot.worker = None
                dead.append(slot)
        return dead

    def stop_all(self) -> None:
        for slot in self.slots.values():
            if slot.running:
                slot.terminate(grace=20.0)

    async def wait_ready(self, slots: list[Slot], seconds: float) -> None:
        """Every slot's ``/readyz`` answers 200 at the same moment; fail with the reasons."""
        deadline = time.monotonic() + seconds
        reasons: dict[str, str] = {}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0)) as http:
            while True:
                reasons = {}
                for slot in slots:
                    if not slot.running:
                        reasons[slot.name] = f"not running (exit {slot.exit_code()})"
                        continue
                    try:
                        async with http.get(slot.url + "/readyz") as response:
                            if response.status != 200:
                                reasons[slot.name] = (await response.text())[:200]
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        reasons[slot.name] = repr(exc)[:200]
                if not reasons:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"workers not ready after {seconds}s: {reasons}")
                await asyncio.sleep(0.5)
