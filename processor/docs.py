"""Regenerate the generated parts of README.md (``make docs``); a test keeps them current."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from processor.settings import settings_table

BEGIN = (
    "<!-- settings-table: generated from processor.settings.settings_table();"
    " a test keeps it current -->"
)
END = "<!-- end settings-table -->"


def render(readme: str) -> str:
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    return pattern.sub(lambda _: f"{BEGIN}\n{settings_table()}\n{END}", readme)


def main() -> int:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    path.write_text(render(path.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
