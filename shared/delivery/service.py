"""A sender service: its channel policy wired to Kafka, the registry, the throttle state and SMTP."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp

from sendrail.bus.clients import ensure_topics, make_consumer, make_producer
from sendrail.bus.lag import report_lag
from sendrail.bus.publisher import Publisher
from sendrail.bus.refetch import Refetcher
from sendrail.clock import system_clock
from sendrail.delivery.credentials import rotated_token_store
from sendrail.delivery.kafka_adapter import KafkaSendingLoop
from sendrail.delivery.policy import ChannelPolicy
from sendrail.delivery.repeats import RepeatedSends
from sendrail.delivery.smtp_transports import SmtpTransports
from sendrail.delivery.throttle_state import ThrottleStateStore
from sendrail.events import (
    ConnectionConfigured,
    ConnectionHealthChanged,
    TenantConfigured,
    ThrottleConfigured,
)
from sendrail.mail.oauth import TokenEndpoint
from sendrail.mail.tls import client_tls_context, limit_tls_read_buffers
from sendrail.registry.store import RegistryStore
from sendrail.secrets import SecretBox
from sendrail.service import ServiceState
from sendrail.settings import Settings
from sendrail.store.changelog import KafkaChangelogReader
from sendrail.store.rocks import RocksTable
from sendrail.topics import SEND_ID_RETENTION_MS, SEND_IDS_BY_OUTBOUND

SENDER_LOOKUPS = (ConnectionConfigured, ConnectionHealthChanged, TenantConfigured, ThrottleConfigured)
"""What a sender reads of the registry: not identities, assignments or analytics tokens."""


async def run_sender(policy: ChannelPolicy, settings: Settings, stop: asyncio.Event,
                     state: ServiceState) -> None:
    secrets = SecretBox.from_settings(settings.secrets)
    limit_tls_read_buffers()
    await ensure_topics(settings.kafka)
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(aiohttp.ClientSession())
        producer = make_producer(settings.kafka, client_id=policy.service)
        registry = RegistryStore(settings.kafka, client_id=policy.service, kept=SENDER_LOOKUPS)
        states = ThrottleStateStore(settings.kafka, producer, settings.sender, client_id=policy.service)
        refetcher = Refetcher(settings.kafka, policy.topic.name, client_id=f"{policy.service}-refetch")
        for client in (producer, registry, states, refetcher):
            await client.start()
            stack.push_async_callback(client.stop)

        store_rotated = rotated_token_store(registry, producer, secrets)

        transports = SmtpTransports(policy, secrets, TokenEndpoint(settings.oauth, http),
                                    client_tls_context(settings.tls), settings.sender, store_rotated)
        stack.push_async_callback(transports.close)
        changelog = SEND_IDS_BY_OUTBOUND[policy.topic.name]
        finished_sends = RocksTable(
            changelog_topic=changelog.name, retention_ms=SEND_ID_RETENTION_MS,
            reader=KafkaChangelogReader(settings.kafka, changelog.name,
                                        client_id=f"{policy.service}-send-ids"),
            state_dir=settings.store.state_dir)
        await finished_sends.start()
        stack.push_async_callback(finished_sends.stop)
        consumer = make_consumer(settings.kafka, group_id=policy.service, client_id=policy.service)
        sending = KafkaSendingLoop(policy, consumer, refetcher, registry, states, transports,
                                   lambda: Publisher(producer), settings.sender, system_clock,
                                   RepeatedSends(finished_sends))
        registry.on_change(sending.registry_changed)
        consumer.subscribe([policy.topic.name], listener=sending)
        await consumer.start()
        stack.push_async_callback(consumer.stop)
        state.details = lambda: {"queued": sending.queue_depths()}
        state.ready = True
        await asyncio.gather(
            sending.run(stop),
            report_lag(consumer, policy.service, [policy.topic.name], sending.committed_offset, stop),
        )
