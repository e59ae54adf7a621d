"""The router service: send requests in, routed emails out; held mail released on reconnect."""

from __future__ import annotations

import asyncio
import contextlib

from sendrail.bus.clients import ensure_topics, make_consumer, make_producer
from sendrail.bus.lag import position_of, report_lag
from sendrail.bus.publisher import Publisher
from sendrail.bus.worker import consume_batches
from sendrail.clock import system_clock
from sendrail.registry.store import RegistryStore
from sendrail.service import ServiceState
from sendrail.services.router.held import TABLE_RETENTION_MS, HeldMailReleaser
from sendrail.services.router.routing import Router
from sendrail.settings import Settings
from sendrail.store.changelog import ChangelogWriter, KafkaChangelogReader
from sendrail.store.rocks import RocksTable
from sendrail.suppression.store import SuppressionList
from sendrail.topics import HELD, HELD_WAITING, REQUESTS

SERVICE = "sendrail-router"


async def run(settings: Settings, stop: asyncio.Event, state: ServiceState) -> None:
    await ensure_topics(settings.kafka)
    async with contextlib.AsyncExitStack() as stack:
        registry = RegistryStore(settings.kafka, client_id=SERVICE)
        suppression = SuppressionList(settings.kafka, client_id=SERVICE)
        for table in (registry, suppression):
            await table.start()
            stack.push_async_callback(table.stop)
        producer = make_producer(settings.kafka, client_id=SERVICE)
        await producer.start()
        stack.push_async_callback(producer.stop)
        # Held mail waits in a table co-partitioned with the held topic (see held.py).
        waiting = RocksTable(
            changelog_topic=HELD_WAITING.name, retention_ms=TABLE_RETENTION_MS,
            reader=KafkaChangelogReader(settings.kafka, HELD_WAITING.name,
                                        client_id=f"{SERVICE}-held-waiting"),
            state_dir=settings.store.state_dir)
        await waiting.start()
        stack.push_async_callback(waiting.stop)
        requests = make_consumer(settings.kafka, REQUESTS.name, group_id=SERVICE, client_id=SERVICE)
        held = make_consumer(settings.kafka, group_id=f"{SERVICE}-held", client_id=f"{SERVICE}-held")
        router_out = Publisher(producer)
        router = Router(registry, suppression, router_out, system_clock,
                        max_request_bytes=settings.router.max_request_bytes, consumer=SERVICE)
        releaser = HeldMailReleaser(registry, held, waiting, Publisher(producer),
                                    ChangelogWriter(producer), system_clock,
                                    expiry_s=settings.sender.held_expiry_s,
                                    recheck_s=settings.sender.held_recheck_s)
        registry.on_change(releaser.registry_changed)
        held.subscribe([HELD.name], listener=releaser)
        for consumer in (requests, held):
            await consumer.start()
            stack.push_async_callback(consumer.stop)
        state.ready = True
        await asyncio.gather(
            consume_batches(requests, router_out, router.handle_batch, stop),
            releaser.run(stop),
            report_lag(requests, SERVICE, [REQUESTS.name], position_of(requests), stop),
            report_lag(held, f"{SERVICE}-held", [HELD.name], position_of(held), stop),
        )
