"""A service whose main fails is started again after a backoff, never in a tight loop."""

from __future__ import annotations

import asyncio

from aiokafka.errors import KafkaConnectionError

from sendrail.service import ServiceState, serve
from sendrail.settings import HttpSettings
from support.waiting import wait_until


async def test_a_failing_service_says_why_and_starts_again_after_a_wait() -> None:
    runs: list[float] = []
    troubles: list[str | None] = []
    loop = asyncio.get_running_loop()

    async def main(stop: asyncio.Event, state: ServiceState) -> None:
        runs.append(loop.time())
        troubles.append(state.trouble)
        if len(runs) < 3:
            raise KafkaConnectionError("no broker at 127.0.0.1:1")
        state.ready = True

    await asyncio.wait_for(serve("test-service", main, HttpSettings(port=0), restart_base_s=0.05,
                                 restart_max_s=0.2), timeout=10)

    assert len(runs) == 3
    # Waits grow: at least half the capped exponential step (equal jitter), never zero.
    assert runs[1] - runs[0] >= 0.025 and runs[2] - runs[1] >= 0.05
    assert troubles == [None, None, None]  # cleared when the next run starts


async def test_a_service_waiting_to_start_again_is_not_ready_and_says_why() -> None:
    runs = 0
    seen: list[ServiceState] = []

    async def main(stop: asyncio.Event, state: ServiceState) -> None:
        nonlocal runs
        runs += 1
        seen.append(state)
        raise KafkaConnectionError("no broker")

    task = asyncio.create_task(serve("test-service", main, HttpSettings(port=0), restart_base_s=30))
    await wait_until(lambda: seen and seen[0].trouble, timeout_s=10, what="the service's trouble")
    assert "KafkaConnectionError" in (seen[0].trouble or "") and not seen[0].ready
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    assert runs == 1
