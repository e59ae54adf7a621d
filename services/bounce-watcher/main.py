"""The bounce watcher service: every Gmail and Exchange Online inbox watched, bounces published."""

from __future__ import annotations

import asyncio
import contextlib
import random

import aiohttp
import structlog
from pydantic import ValidationError

from sendrail.bus.clients import ensure_topics, make_producer
from sendrail.bus.codec import decode, decode_analytics
from sendrail.bus.table import TopicFollower
from sendrail.clock import system_clock
from sendrail.delivery.credentials import access_tokens_for, rotated_token_store
from sendrail.events import BounceDetected, ConnectionConfigured, DeliveryEvent, WatcherCheckpoint
from sendrail.mail.oauth import AccessTokenSource, TokenEndpoint
from sendrail.mail.tls import client_tls_context, limit_tls_read_buffers
from sendrail.registry.store import RegistryStore
from sendrail.secrets import SecretBox
from sendrail.service import ServiceState
from sendrail.services.bounce_watcher.correlation import SendIndex
from sendrail.services.bounce_watcher.mailbox_health import RetryPolicy
from sendrail.services.bounce_watcher.mailbox_watch import WatchContext
from sendrail.services.bounce_watcher.parsing import NoticeParser
from sendrail.services.bounce_watcher.supervisor import WatcherSupervisor
from sendrail.services.bounce_watcher.suppression import SoftBounceHistory, SoftBounceRule, refusal
from sendrail.settings import Settings
from sendrail.topics import BOUNCES, DELIVERY, WATCHER_CHECKPOINTS, connection_key

SERVICE = "sendrail-bounce-watcher"
log = structlog.get_logger(__name__)


async def run(settings: Settings, stop: asyncio.Event, state: ServiceState) -> None:
    secrets = SecretBox.from_settings(settings.secrets)
    limit_tls_read_buffers()
    await ensure_topics(settings.kafka)
    checkpoints: dict[tuple[str, str], WatcherCheckpoint] = {}
    sends = SendIndex()

    # Each raises on a record it cannot use: its follower dead-letters it and goes on.
    def apply_checkpoint(key: bytes | None, value: bytes | None) -> None:
        if value is not None:
            checkpoint = decode(WatcherCheckpoint, value)
            if key != connection_key(checkpoint.tenant_id, checkpoint.connection_id):
                raise ValueError("the key does not name the checkpoint's tenant/connection")
            checkpoints[(checkpoint.tenant_id, checkpoint.connection_id)] = checkpoint

    def apply_delivery(_: bytes | None, value: bytes | None) -> None:
        if value is not None:
            sends.add(decode(DeliveryEvent, value))

    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(aiohttp.ClientSession())
        registry = RegistryStore(settings.kafka, client_id=SERVICE)
        checkpoint_follower = TopicFollower(settings.kafka, WATCHER_CHECKPOINTS.name,
                                            apply_checkpoint, client_id=f"{SERVICE}-checkpoints")
        delivery_follower = TopicFollower(settings.kafka, DELIVERY.name, apply_delivery,
                                          client_id=f"{SERVICE}-sends")
        producer = make_producer(settings.kafka, client_id=SERVICE)
        for client in (registry, checkpoint_follower, delivery_follower, producer):
            await client.start()
            stack.push_async_callback(client.stop)

        endpoint = TokenEndpoint(settings.oauth, http)

        store_rotated = rotated_token_store(registry, producer, secrets)

        def tokens_for(connection: ConnectionConfigured) -> AccessTokenSource:
            return access_tokens_for(connection, endpoint, secrets, store_rotated)

        # Soft bounces counted before a restart still count (the bounces topic has them).
        soft_bounces = SoftBounceHistory()
        soft_rule = SoftBounceRule(settings.watcher.soft_bounces_to_suppress,
                                   settings.watcher.soft_bounce_window_s)
        if soft_rule.limit > 0:
            await _recount_soft_bounces(settings, soft_bounces, soft_rule, sends)
        parser = NoticeParser(settings.watcher.parse_processes)
        stack.push_async_callback(parser.close)  # after the watchers below have stopped
        watcher = settings.watcher
        context = WatchContext(
            producer=producer, checkpoints=checkpoints, sends=sends,
            catch_up_sends=delivery_follower.caught_up, tls_context=client_tls_context(settings.tls),
            settings=watcher, clock=system_clock,
            soft_bounce_rule=soft_rule, soft_bounces=soft_bounces, parser=parser,
            retry_policy=RetryPolicy(base_s=watcher.reconnect_backoff_base_s,
                                     max_s=watcher.reconnect_backoff_max_s,
                                     login_interval_s=watcher.login_interval_s),
            jitter=random.random,
        )
        supervisor = WatcherSupervisor(registry.view, context, tokens_for)
        state.details = supervisor.details
        state.ready = True
        await supervisor.run(stop)


async def _recount_soft_bounces(settings: Settings, history: SoftBounceHistory,
                                rule: SoftBounceRule, sends: SendIndex) -> None:
    """Only the bounces that could count: tied to a send that went to the address (it
    arrived no later than it was read, and its send was checked against that)."""
    def apply(_: bytes | None, value: bytes | None) -> None:
        if value is None:
            return
        with contextlib.suppress(ValidationError):
            finding = decode_analytics(value)
            if not isinstance(finding, BounceDetected) or finding.hard or finding.send_id is None:
                return
            if refusal(finding, sends.by_send_id.get(finding.send_id), finding.detected_at) is None:
                history.record(finding.tenant_id, finding.recipient, finding.detected_at.timestamp(),
                               rule.window_s, finding.bounce_id)

    follower = TopicFollower(settings.kafka, BOUNCES.name, apply, client_id=f"{SERVICE}-recount")
    await follower.start()  # returns once it has read to the end
    await follower.stop()
