"""Every package imports on its own, first, in a fresh interpreter (no import cycles)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module",
    [
        "processor.api",
        "processor.api.routes",
        "processor.app.funnel",
        "processor.app",
        "processor.kafka_security",
    ],
)
def test_module_imports_first(module: str) -> None:
    run = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stderr
