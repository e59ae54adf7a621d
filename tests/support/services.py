"""The five services, run in the test's own event loop so a test can stop and restart one."""

from __future__ import annotations

import asyncio
import importlib
from dataclasses import dataclass

from sendrail.cli.local import SERVICES
from sendrail.service import ServiceState
from sendrail.settings import Settings
from support.waiting import wait_until


@dataclass
class _Running:
    task: asyncio.Task[None]
    stop: asyncio.Event
    state: ServiceState


class InProcessServices:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._running: dict[str, _Running] = {}

    async def start(self, name: str) -> None:
        module = importlib.import_module(SERVICES[name])
        stop, state = asyncio.Event(), ServiceState(name)
        task = asyncio.create_task(module.run(self._settings, stop, state), name=name)
        self._running[name] = _Running(task, stop, state)
        await wait_until(lambda: state.ready or task.done(), timeout_s=30, what=f"{name} ready")
        if task.done():
            task.result()  # raises what stopped it

    async def stop(self, name: str) -> None:
        """A clean stop, as on SIGTERM: the batch in hand is finished and committed."""
        running = self._running.pop(name)
        running.stop.set()
        await asyncio.wait_for(running.task, 30)

    async def start_all(self) -> None:
        for name in SERVICES:
            await self.start(name)

    async def stop_all(self) -> None:
        for name in list(self._running):
            await self.stop(name)
