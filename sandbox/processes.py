"""Stopping a child process of the local stack: ask, wait, then insist."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal


async def stop_process(process: asyncio.subprocess.Process, *, timeout_s: float,
                       whole_group: bool = False) -> None:
    """SIGTERM, and SIGKILL if it has not exited within `timeout_s` (its whole process group
    where it started its own session and has children, as the broker's JVM does)."""
    if process.returncode is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), timeout_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            if whole_group:
                os.killpg(process.pid, signal.SIGKILL)
            else:
                process.kill()
        await process.wait()
