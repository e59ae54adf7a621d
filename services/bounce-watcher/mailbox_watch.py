"""Watching one sender's inbox: read new messages read-only, publish bounces, remember the UID.

IMAP IDLE (RFC 2177) wakes the watcher within moments of a bounce landing; servers
without IDLE are polled. A dropped connection is re-opened with backoff and reading
resumes after the last checkpointed UID, so nothing is missed in between; a changed
UIDVALIDITY (RFC 3501 §2.3.1.1) means the old UIDs are void, and the mailbox is read
from its current end.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import structlog
from aiokafka import AIOKafkaProducer

from sendrail.backoff import backoff_s
from sendrail.bounces.notice import NoticeKind
from sendrail.bounces.parser import parse_notice
from sendrail.bus.publisher import Publisher
from sendrail.errors import ConnectionBroken, TransientError
from sendrail.events import (
    BounceDetected,
    ChannelKind,
    ConnectionConfigured,
    ConnectionHealthChanged,
    DeliveryEvent,
    ImapServer,
    WatcherCheckpoint,
    registry_key,
)
from sendrail.mail.imap import ImapAuthFailed, ImapError, ImapMailbox
from sendrail.mail.oauth import AccessTokenSource
from sendrail.metrics import bounces_detected, mailbox_messages_read
from sendrail.services.bounce_watcher.bounce_events import mailbox_findings
from sendrail.services.bounce_watcher.correlation import SendIndex
from sendrail.services.bounce_watcher.suppression import (
    SoftBounceHistory,
    SoftBounceRule,
    suppression_for,
)
from sendrail.settings import WatcherSettings
from sendrail.topics import (
    BOUNCES,
    REGISTRY,
    SUPPRESSION,
    WATCHER_CHECKPOINTS,
    connection_key,
    suppression_key,
)

log = structlog.get_logger(__name__)

FINDING_KINDS = frozenset({NoticeKind.BOUNCE, NoticeKind.AUTO_REPLY, NoticeKind.COMPLAINT})

PROVIDER_IMAP = {
    ChannelKind.GMAIL: ImapServer(host="imap.gmail.com", port=993),
    ChannelKind.EXCHANGE_ONLINE: ImapServer(host="outlook.office365.com", port=993),
}


@dataclass
class WatchContext:
    """What every mailbox watcher of one process shares."""

    producer: AIOKafkaProducer
    checkpoints: dict[tuple[str, str], WatcherCheckpoint]
    sends: SendIndex
    catch_up_sends: Callable[[], Awaitable[None]]
    """Read the delivery topic up to now: a bounce can overtake its `sent` event."""
    tls_context: ssl.SSLContext
    settings: WatcherSettings
    clock: Callable[[], datetime]
    soft_bounce_rule: SoftBounceRule
    soft_bounces: SoftBounceHistory


class MailboxWatcher:
    def __init__(self, connection: ConnectionConfigured, tokens: AccessTokenSource,
                 context: WatchContext) -> None:
        self._connection = connection
        self._tokens = tokens
        self._context = context
        self._key = (connection.tenant_id, connection.connection_id)
        self._publisher = Publisher(context.producer)  # its own, so its confirms are its own
        self._failures = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop`, or until the connection is found broken (a reconnect starts a new one)."""
        self._failures = 0
        while not stop.is_set():
            try:
                await self._watch(stop)
                return
            except ConnectionBroken as error:
                await self._mark_broken(error.reason)
                return
            except (ImapError, TransientError, OSError) as error:
                self._failures += 1
                wait_s = backoff_s(self._failures, base_s=0.5,
                                   max_s=self._context.settings.reconnect_backoff_max_s,
                                   jitter=random.random())
                log.warning("mailbox connection lost; reconnecting", connection=self._key[1],
                            error=type(error).__name__, wait_s=round(wait_s, 2))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait_s)

    async def _open(self) -> ImapMailbox:
        server = self._connection.imap or PROVIDER_IMAP[self._connection.kind]
        assert self._connection.address is not None
        for _ in range(2):
            try:
                return await ImapMailbox.open(
                    host=server.host, port=server.port, ssl_context=self._context.tls_context,
                    user=self._connection.address, access_token=await self._tokens.get(),
                    timeout_s=self._context.settings.connect_timeout_s,
                )
            except ImapAuthFailed:
                if not self._tokens.invalidate():
                    break
                # The cached token may have expired early: try once with a fresh one.
        raise ConnectionBroken("the mail server refused a freshly issued access token")

    async def _watch(self, stop: asyncio.Event) -> None:
        mailbox = await self._open()
        self._failures = 0  # backoff grows only over failures in a row
        try:
            last_uid = await self._starting_uid(mailbox)
            while not stop.is_set():
                messages = await mailbox.fetch_since(last_uid, limit=self._context.settings.fetch_batch)
                if messages:
                    for message in messages:
                        await self._handle(message.uid, message.raw, mailbox.state.uidvalidity)
                        last_uid = message.uid
                    await self._checkpoint(mailbox.state.uidvalidity, last_uid)
                    if len(messages) == self._context.settings.fetch_batch:
                        continue
                timeout_s = (self._context.settings.idle_timeout_s if mailbox.supports_idle
                             else self._context.settings.poll_interval_s)
                waiter = asyncio.ensure_future(mailbox.wait_for_change(timeout_s))
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                if not waiter.done():
                    waiter.cancel()
                    with contextlib.suppress(asyncio.CancelledError, ImapError):
                        await waiter
                else:
                    waiter.result()  # re-raises a lost connection
        finally:
            with contextlib.suppress(ImapError, OSError):
                await mailbox.close()

    async def _starting_uid(self, mailbox: ImapMailbox) -> int:
        saved = self._context.checkpoints.get(self._key)
        if saved is not None and saved.uidvalidity == mailbox.state.uidvalidity:
            return saved.last_uid
        # First watch (or the server renumbered the mailbox): start at its current end.
        start = mailbox.state.uidnext - 1
        await self._checkpoint(mailbox.state.uidvalidity, start)
        return start

    async def _handle(self, uid: int, raw: bytes, uidvalidity: int) -> None:
        notice = parse_notice(raw)
        mailbox_messages_read.labels(notice.kind.value).inc()
        if notice.kind not in FINDING_KINDS:
            return
        tenant_id, connection_id = self._key
        sends = self._context.sends
        if sends.find(notice, tenant_id=tenant_id, connection_id=connection_id) is None:
            await self._context.catch_up_sends()  # a notice can overtake its `sent` event

        def sent_for(address: str | None) -> DeliveryEvent | None:
            return sends.find(notice, tenant_id=tenant_id, connection_id=connection_id,
                              recipient=address)

        now = self._context.clock()
        for finding in mailbox_findings(notice, self._connection, uidvalidity=uidvalidity, uid=uid,
                                        sent_for=sent_for, now=now):
            await self._publisher.publish(BOUNCES, finding, key=tenant_id.encode())
            if isinstance(finding, BounceDetected):
                bounces_detected.labels(finding.channel.value, "hard" if finding.hard else "soft",
                                        str(finding.correlated).lower()).inc()
                log.info("bounce", connection=connection_id, reason=finding.reason,
                         hard=finding.hard, send_id=str(finding.send_id) if finding.send_id else None)
                suppressed = suppression_for(finding, self._context.soft_bounces,
                                             self._context.soft_bounce_rule, now)
                if suppressed is not None:
                    await self._publisher.publish(
                        SUPPRESSION, suppressed,
                        key=suppression_key(suppressed.tenant_id, suppressed.address))

    async def _checkpoint(self, uidvalidity: int, last_uid: int) -> None:
        """Written only after the bounces before it are acknowledged: a crash repeats, never skips."""
        checkpoint = WatcherCheckpoint(tenant_id=self._key[0], connection_id=self._key[1],
                                       uidvalidity=uidvalidity, last_uid=last_uid)
        publisher = self._publisher
        await publisher.confirm()
        await publisher.publish(WATCHER_CHECKPOINTS, checkpoint, key=connection_key(*self._key))
        await publisher.confirm()
        self._context.checkpoints[self._key] = checkpoint

    async def _mark_broken(self, reason: str) -> None:
        health = ConnectionHealthChanged(tenant_id=self._key[0], connection_id=self._key[1],
                                         healthy=False, reason=reason, changed_at=self._context.clock())
        await self._publisher.publish(REGISTRY, health, key=registry_key(health).encode())
        await self._publisher.confirm()
        log.warning("mailbox connection broken", connection=self._key[1], reason=reason)
