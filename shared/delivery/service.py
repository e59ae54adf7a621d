"""A sender service: its policy wired to Kafka, the registry and SMTP."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp

from sendrail.bus.clients import ensure_topics, make_consumer, make_producer
from sendrail.bus.publisher import Publisher
from sendrail.bus.worker import consume_batches
from sendrail.clock import system_clock
from sendrail.delivery.policy import ChannelPolicy
from sendrail.delivery.sender import Sender
from sendrail.mail.oauth import TokenEndpoint
from sendrail.mail.tls import client_tls_context
from sendrail.registry.store import RegistryStore
from sendrail.secrets import SecretBox
from sendrail.service import ServiceState
from sendrail.settings import Settings


async def run_sender(policy: ChannelPolicy, settings: Settings, stop: asyncio.Event,
                     state: ServiceState) -> None:
    secrets = SecretBox.from_settings(settings.secrets)
    await ensure_topics(settings.kafka)
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(aiohttp.ClientSession())
        registry = RegistryStore(settings.kafka, client_id=policy.service)
        await registry.start()
        stack.push_async_callback(registry.stop)
        producer = make_producer(settings.kafka, client_id=policy.service)
        await producer.start()
        stack.push_async_callback(producer.stop)
        consumer = make_consumer(settings.kafka, policy.topic.name, group_id=policy.service,
                                 client_id=policy.service)
        await consumer.start()
        stack.push_async_callback(consumer.stop)
        publisher = Publisher(producer)
        sender = Sender(policy, registry, publisher, secrets, TokenEndpoint(settings.oauth, http),
                        client_tls_context(settings.tls), settings.sender, system_clock)
        stack.push_async_callback(sender.close)
        state.ready = True
        await consume_batches(consumer, publisher, sender.handle_batch, stop)
