"""A service says on /healthz when Kafka does not answer, and stops saying so when it does."""

from __future__ import annotations

import asyncio

import aiohttp

from sendrail.bus.reachability import watch_reachability
from sendrail.sandbox.ports import free_port
from sendrail.service import ServiceState, start_http
from sendrail.settings import HttpSettings, KafkaSettings
from support.waiting import wait_until


async def _reports(settings: KafkaSettings) -> list[str | None]:
    reports: list[str | None] = []
    stop = asyncio.Event()
    task = asyncio.create_task(watch_reachability(settings, reports.append, stop, client_id="test",
                                                  interval_s=0.1, timeout_s=5))
    await wait_until(lambda: reports, timeout_s=15, what="a reachability report")
    stop.set()
    await task
    return reports


async def test_an_unreachable_cluster_is_reported_and_a_reachable_one_is_not(kafka: KafkaSettings) -> None:
    nowhere = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}")
    [trouble, *_] = await _reports(nowhere)
    assert trouble is not None and "has not answered since" in trouble
    assert (await _reports(kafka))[0] is None


async def test_healthz_is_503_with_the_reason_while_the_bus_is_away() -> None:
    port = free_port()
    state = ServiceState("test-service", ready=True, bus_trouble="Kafka at x has not answered")
    runner = await start_http(HttpSettings(port=port), state)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                body = await response.json()
                assert response.status == 503 and not body["ready"]
                assert "has not answered" in body["trouble"]
            state.bus_trouble = None
            async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 200
    finally:
        await runner.cleanup()
