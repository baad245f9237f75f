"""Talking to a running worker over HTTP: requests, waiting on a condition, metric samples."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import AUTH


async def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """GET with the workers' API token (unless ``headers`` says otherwise)."""
    sent = AUTH if headers is None else headers
    async with aiohttp.ClientSession() as http, http.get(url, headers=sent) as response:
        if response.content_type == "application/json":
            return response.status, await response.json()
        return response.status, await response.text()


async def wait_for(check: Callable[[], Any], seconds: float, what: str) -> Any:
    """Poll an async check until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        try:
            result = await check()
        except aiohttp.ClientError:
            result = None
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {seconds}s waiting for {what}")
        await asyncio.sleep(0.2)


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found.setdefault(s.name, []).append((s.labels, s.value))
    return found


def total(
    metrics: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str
) -> float:
    return sum(
        v for lbl, v in metrics.get(name, []) if all(lbl.get(k) == x for k, x in labels.items())
    )
