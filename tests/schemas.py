"""The project's JSON Schemas as validators, with their cross-file references resolved."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
ALL: dict[str, Any] = {
    path.name: json.loads(path.read_text(encoding="utf-8")) for path in SCHEMAS.glob("*.json")
}
REGISTRY = Registry().with_resources(
    (schema["$id"], Resource.from_contents(schema)) for schema in ALL.values()
)


def validator(name: str) -> Draft202012Validator:
    """A validator for ``schemas/<name>``; ``format`` is checked where a checker is installed."""
    return Draft202012Validator(
        ALL[name], registry=REGISTRY, format_checker=Draft202012Validator.FORMAT_CHECKER
    )
