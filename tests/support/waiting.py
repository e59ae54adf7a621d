"""Waiting on a condition with a deadline, never on a guess of how long something takes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest


async def wait_until(condition: Callable[[], object], *, timeout_s: float, what: str) -> None:
    """Fail the test naming `what` if `condition` does not hold within `timeout_s`."""
    try:
        async with asyncio.timeout(timeout_s):
            while not condition():
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
