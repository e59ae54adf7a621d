"""The sending loop: routed emails in, SMTP out, a delivery event for every outcome.

Each batch is split by connection: connections are sent concurrently, and each
connection's mail goes out in its partition order.
"""

from __future__ import annotations

import asyncio
import random
import ssl
from collections.abc import Callable
from datetime import datetime, timedelta

import structlog
from aiokafka import ConsumerRecord
from pydantic import ValidationError

from sendrail.backoff import backoff_s
from sendrail.bus.codec import decode
from sendrail.bus.publisher import Publisher
from sendrail.delivery.credentials import smtp_auth_for
from sendrail.delivery.policy import ChannelPolicy
from sendrail.errors import ConnectionBroken, DeliveryError, PermanentError, TransientError
from sendrail.events import (
    ConnectionConfigured,
    ConnectionHealthChanged,
    DeliveryEvent,
    DeliveryStatus,
    EmailRouted,
    OAuthGrant,
    registry_key,
)
from sendrail.mail.message import build_message, message_id_for
from sendrail.mail.oauth import TokenEndpoint
from sendrail.mail.smtp import SmtpTransport
from sendrail.metrics import emails_delivered, smtp_send_duration
from sendrail.registry.store import RegistryStore
from sendrail.secrets import SecretBox
from sendrail.settings import SenderSettings
from sendrail.topics import DELIVERY, HELD, REGISTRY, connection_key

log = structlog.get_logger(__name__)

ConnectionVersion = tuple[str, str, datetime]
"""(tenant_id, connection_id, connected_at): new credentials mean new sessions."""


class Sender:
    def __init__(self, policy: ChannelPolicy, registry: RegistryStore, publisher: Publisher,
                 secrets: SecretBox, tokens: TokenEndpoint, tls_context: ssl.SSLContext,
                 settings: SenderSettings, clock: Callable[[], datetime]) -> None:
        self._policy = policy
        self._registry = registry
        self._publisher = publisher
        self._secrets = secrets
        self._tokens = tokens
        self._tls_context = tls_context
        self._settings = settings
        self._clock = clock
        self._transports: dict[ConnectionVersion, SmtpTransport] = {}

    async def close(self) -> None:
        transports, self._transports = self._transports, {}
        for transport in transports.values():
            await transport.close()

    async def handle_batch(self, batch: list[ConsumerRecord[bytes, bytes]]) -> None:
        by_connection: dict[bytes | None, list[EmailRouted]] = {}
        for record in batch:
            try:
                routed = decode(EmailRouted, record.value or b"")
            except ValidationError as error:
                log.error("unreadable routed email skipped", topic=record.topic,
                          offset=record.offset, errors=error.error_count())
                continue
            by_connection.setdefault(record.key, []).append(routed)
        await asyncio.gather(*(self._send_in_order(emails) for emails in by_connection.values()))

    async def _send_in_order(self, emails: list[EmailRouted]) -> None:
        for routed in emails:
            await self._deliver(routed)

    async def _deliver(self, routed: EmailRouted) -> None:
        tenant_id, connection_id = routed.request.tenant_id, routed.connection_id
        connection = self._registry.view.connection(tenant_id, connection_id)
        if connection is None:
            await self._registry.refresh()
            connection = self._registry.view.connection(tenant_id, connection_id)
        if connection is None or connection.kind not in self._policy.kinds:
            await self._fail(routed, f"connection {connection_id} no longer exists for this "
                                     "channel; nothing was sent")
            return
        broken = self._registry.view.broken_reason(tenant_id, connection_id)
        if broken is not None:
            await self._hold(routed, broken)
            return
        recipients = routed.request.recipients
        limit = self._policy.max_recipients
        if limit is not None and len(recipients) > limit:
            await self._fail(routed, f"{len(recipients)} recipients, and {connection.kind.value} "
                                     f"accepts at most {limit} per message over SMTP")
            return
        try:
            max_bytes = min(self._policy.max_message_bytes,
                            connection.max_message_bytes or self._policy.max_message_bytes)
            raw = build_message(routed, date=self._clock(), max_bytes=max_bytes)
            await self._send_with_retries(routed, connection, raw)
        except ConnectionBroken as error:
            await self._mark_broken(connection, error.reason)
            await self._hold(routed, error.reason, error)
        except PermanentError as error:
            await self._fail(routed, error.reason, error)
        except TransientError as error:
            await self._defer(routed, error)

    async def _send_with_retries(self, routed: EmailRouted, connection: ConnectionConfigured,
                                 raw: bytes) -> None:
        transport = self._transport(connection)
        attempt = 0
        while True:
            attempt += 1
            started_s = asyncio.get_running_loop().time()
            try:
                reply = await transport.send(routed.request.identity, routed.request.recipients, raw)
            except TransientError:
                if attempt > self._settings.transient_retries:
                    raise
                await asyncio.sleep(backoff_s(attempt, base_s=self._settings.retry_backoff_base_s,
                                              max_s=self._settings.retry_backoff_max_s,
                                              jitter=random.random()))
                continue
            smtp_send_duration.labels(routed.channel.value).observe(
                asyncio.get_running_loop().time() - started_s)
            refused = "; ".join(f"{a}: {c} {t}" for a, (c, t) in reply.refused.items())
            await self._emit(routed, DeliveryStatus.SENT, message_id=message_id_for(routed),
                             reply_code=reply.code, reply_text=reply.text,
                             reason=f"refused recipients: {refused}" if refused else None)
            return

    def _transport(self, connection: ConnectionConfigured) -> SmtpTransport:
        version = (connection.tenant_id, connection.connection_id, connection.connected_at)
        transport = self._transports.get(version)
        if transport is None:
            auth = smtp_auth_for(connection, self._tokens, self._secrets, self._store_rotated)
            transport = SmtpTransport(
                connection.smtp, auth, self._tls_context,
                provider_rules=self._policy.provider_rules,
                max_sessions=min(self._policy.max_sessions_per_connection,
                                 self._settings.connections_per_server),
                timeout_s=self._settings.smtp_timeout_s,
                session_idle_s=self._settings.session_idle_s,
            )
            self._transports[version] = transport
        return transport

    async def _store_rotated(self, connection: ConnectionConfigured, refresh_token: str) -> None:
        """Microsoft hands out a new refresh token on each use: keep the newest, sealed."""
        assert connection.oauth is not None
        current = self._registry.view.connection(connection.tenant_id, connection.connection_id)
        base = current if current is not None else connection
        updated = base.model_copy(update={
            "oauth": OAuthGrant(refresh_token=self._secrets.seal(refresh_token),
                                microsoft_tenant=connection.oauth.microsoft_tenant),
            "updated_at": self._clock(),
        })
        await self._publisher.publish(REGISTRY, updated, key=registry_key(updated).encode())

    async def _mark_broken(self, connection: ConnectionConfigured, reason: str) -> None:
        health = ConnectionHealthChanged(
            tenant_id=connection.tenant_id, connection_id=connection.connection_id,
            healthy=False, reason=reason, changed_at=self._clock(),
        )
        self._registry.view.apply(registry_key(health), health)  # later mail in this batch waits too
        await self._publisher.publish(REGISTRY, health, key=registry_key(health).encode())
        log.warning("connection broken", tenant=connection.tenant_id,
                    connection=connection.connection_id, reason=reason)

    async def _hold(self, routed: EmailRouted, reason: str, error: DeliveryError | None = None) -> None:
        await self._publisher.publish(
            HELD, routed, key=connection_key(routed.request.tenant_id, routed.connection_id))
        await self._emit(routed, DeliveryStatus.DEFERRED, error=error,
                         reason=f"held until the user reconnects {routed.connection_id}: {reason}")

    async def _defer(self, routed: EmailRouted, error: TransientError) -> None:
        """Still failing after the in-place retries: back to the end of the channel's queue."""
        next_attempt = self._clock() + timedelta(seconds=self._settings.retry_backoff_max_s)
        await self._publisher.publish(
            self._policy.topic, routed,
            key=connection_key(routed.request.tenant_id, routed.connection_id))
        await self._emit(routed, DeliveryStatus.DEFERRED, error=error, reason=error.reason,
                         next_attempt_at=next_attempt)

    async def _fail(self, routed: EmailRouted, reason: str, error: DeliveryError | None = None) -> None:
        await self._emit(routed, DeliveryStatus.FAILED, error=error, reason=reason)

    async def _emit(self, routed: EmailRouted, status: DeliveryStatus, *,
                    error: DeliveryError | None = None, **outcome: object) -> None:
        if error is not None:
            outcome.setdefault("reply_code", error.reply_code)
            outcome.setdefault("reply_text", error.reply_text)
        event = DeliveryEvent.for_routed(routed, status, self._clock(), **outcome)
        await self._publisher.publish(DELIVERY, event, key=str(routed.send_id).encode())
        emails_delivered.labels(routed.channel.value, status.value).inc()
        log.info("delivery", send_id=str(routed.send_id), connection=routed.connection_id,
                 status=status.value, reply_code=event.reply_code)
