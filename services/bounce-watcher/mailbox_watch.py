"""Watching one sender's inbox: read new messages read-only, publish bounces, remember the UID.

IMAP IDLE (RFC 2177) wakes the watcher within moments of a bounce landing; servers
without IDLE are polled. A dropped connection is re-opened with backoff and reading
resumes after the last checkpointed UID, so nothing is missed in between; a changed
UIDVALIDITY (RFC 3501 §2.3.1.1) means the old UIDs are void, and the mailbox is read
from its current end.

Failures are kept apart by what they touch. A message that cannot be handled is logged,
counted and passed over: it never costs the mailbox its session. A bus that cannot be
reached pauses this mailbox's work with backoff and keeps the session. A lost session,
a refused token or a server error backs off (`mailbox_health`) before logging in again.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError, ProducerClosed
from pydantic import BaseModel

from sendrail.backoff import backoff_s
from sendrail.bounces.notice import Notice, NoticeKind
from sendrail.bounces.parser import MAX_MESSAGE_BYTES
from sendrail.bus.publisher import Publisher
from sendrail.errors import ConnectionBroken, SendrailError, TransientError
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
from sendrail.mail.imap import FetchedMessage, ImapAuthFailed, ImapError, ImapMailbox
from sendrail.mail.oauth import AccessTokenSource
from sendrail.metrics import (
    bounces_detected,
    mailbox_message_failures,
    mailbox_messages_read,
    mailbox_retries,
)
from sendrail.services.bounce_watcher.bounce_events import mailbox_findings
from sendrail.services.bounce_watcher.correlation import SendIndex
from sendrail.services.bounce_watcher.mailbox_health import MailboxHealth, RetryPolicy
from sendrail.services.bounce_watcher.parsing import NoticeParser
from sendrail.services.bounce_watcher.suppression import SoftBounceHistory, SoftBounceRule, decide
from sendrail.settings import WatcherSettings
from sendrail.topics import (
    BOUNCES,
    REGISTRY,
    SUPPRESSION,
    WATCHER_CHECKPOINTS,
    Topic,
    connection_key,
    suppression_key,
)

log = structlog.get_logger(__name__)

FINDING_KINDS = frozenset({NoticeKind.BOUNCE, NoticeKind.AUTO_REPLY, NoticeKind.COMPLAINT})

PROVIDER_IMAP = {
    ChannelKind.GMAIL: ImapServer(host="imap.gmail.com", port=993),
    ChannelKind.EXCHANGE_ONLINE: ImapServer(host="outlook.office365.com", port=993),
}

MAX_ERROR_CHARS = 300
"""Of an error's text in logs and /healthz: enough to act on, never a whole server reply."""


class BusUnavailable(SendrailError):
    """Kafka did not take, or did not confirm, what the watcher published: wait and retry."""


def is_bus_outage(error: BaseException) -> bool:
    """Whether a publishing error says the bus is unreachable for now, rather than that this
    event can never be stored (too large, refused): only the first is worth retrying."""
    if isinstance(error, (TimeoutError, OSError, KafkaTimeoutError, ProducerClosed)):
        return True
    return isinstance(error, KafkaError) and bool(getattr(error, "retriable", False))


def _outcome_ignored(future: asyncio.Future[object]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved, so it is not reported as never retrieved


def describe(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return text[:MAX_ERROR_CHARS]


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
    parser: NoticeParser
    retry_policy: RetryPolicy
    jitter: Callable[[], float]
    """A number in [0, 1), spreading the retries of many mailboxes apart."""


class MailboxWatcher:
    def __init__(self, connection: ConnectionConfigured, tokens: AccessTokenSource,
                 context: WatchContext, health: MailboxHealth) -> None:
        self._connection = connection
        self._tokens = tokens
        self._context = context
        self._health = health
        self._key = (connection.tenant_id, connection.connection_id)
        self._publisher = Publisher(context.producer)  # its own, so its confirms are its own

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop`, or until the connection is found broken (a reconnect starts a new one).

        Every failure is backed off here; only cancellation ends it otherwise."""
        policy = self._context.retry_policy
        while not stop.is_set():
            wait_until = self._health.login_wait_until(policy, self._context.clock())
            if wait_until is not None:
                await self._sleep_until(wait_until, stop)
                continue
            try:
                await self._watch(stop)
                return
            except ConnectionBroken as error:
                await self._mark_broken(error.reason, stop)
                return
            except (ImapError, TransientError, OSError, TimeoutError, BusUnavailable) as error:
                self._failed(error, "bus" if isinstance(error, BusUnavailable) else "mailbox")
            except Exception as error:  # a fault of the watcher itself: back off all the same
                log.exception("mailbox watcher failed", tenant=self._key[0], connection=self._key[1])
                self._failed(error, "crash")

    def _failed(self, error: BaseException, cause: str) -> None:
        retry_at = self._health.failed(describe(error), self._context.retry_policy,
                                       now=self._context.clock(), jitter=self._context.jitter(),
                                       logs_in_again=True)
        mailbox_retries.labels(self._connection.kind.value, cause).inc()
        log.warning("mailbox watcher backing off", tenant=self._key[0], connection=self._key[1],
                    cause=cause, error=type(error).__name__, failures=self._health.failures,
                    until=retry_at.isoformat())

    async def _sleep_until(self, until: datetime, stop: asyncio.Event) -> None:
        wait_s = (until - self._context.clock()).total_seconds()
        if wait_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait_s)

    async def _open(self) -> ImapMailbox:
        server = self._connection.imap or PROVIDER_IMAP[self._connection.kind]
        assert self._connection.address is not None
        self._health.logging_in(self._context.clock())
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
        try:
            uidvalidity = mailbox.state.uidvalidity
            last_uid = await self._starting_uid(mailbox)
            batch = self._context.settings.fetch_batch
            while not stop.is_set():
                # The parser reads no more than MAX_MESSAGE_BYTES of a message: neither does the fetch.
                messages = await mailbox.fetch_since(last_uid, limit=batch, max_bytes=MAX_MESSAGE_BYTES)
                if messages:
                    try:
                        for message in messages:
                            await self._read(message, uidvalidity)
                        await self._checkpoint(uidvalidity, messages[-1].uid)
                    except BusUnavailable as error:
                        await self._pause(error, stop)
                        continue  # the same batch again: its events keep their ids, repeats are dropped
                    last_uid = messages[-1].uid
                    if len(messages) == batch:
                        continue
                self._health.caught_up(self._context.clock())
                await self._wait_for_mail(mailbox, stop)
        finally:
            with contextlib.suppress(ImapError, OSError):
                await mailbox.close()

    async def _wait_for_mail(self, mailbox: ImapMailbox, stop: asyncio.Event) -> None:
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

    async def _pause(self, error: BusUnavailable, stop: asyncio.Event) -> None:
        """The bus is down: this mailbox's work waits, its session stays open (no new login)."""
        retry_at = self._health.failed(describe(error.__cause__ or error), self._context.retry_policy,
                                       now=self._context.clock(), jitter=self._context.jitter(),
                                       logs_in_again=False)
        mailbox_retries.labels(self._connection.kind.value, "bus").inc()
        log.warning("bus unavailable; mailbox paused", tenant=self._key[0], connection=self._key[1],
                    error=type(error.__cause__ or error).__name__, failures=self._health.failures,
                    until=retry_at.isoformat())
        # What was sent but not confirmed is published again with its batch; its outcome no
        # longer matters.
        for pending in await self._publisher.take_acknowledgements():
            pending.add_done_callback(_outcome_ignored)
        await self._sleep_until(retry_at, stop)

    async def _starting_uid(self, mailbox: ImapMailbox) -> int:
        saved = self._context.checkpoints.get(self._key)
        if saved is not None and saved.uidvalidity == mailbox.state.uidvalidity:
            return saved.last_uid
        # First watch (or the server renumbered the mailbox): start at its current end.
        start = mailbox.state.uidnext - 1
        await self._checkpoint(mailbox.state.uidvalidity, start)
        return start

    async def _read(self, message: FetchedMessage, uidvalidity: int) -> None:
        """Handle one message. Whatever goes wrong with it stays with it: it is logged,
        counted and passed over (the checkpoint moves past it). Only the bus being
        unreachable stops the batch, since what it could not take must be published again."""
        try:
            notice = await self._context.parser.parse(message.raw)
            await self._handle(message, notice, uidvalidity)
        except BusUnavailable:
            raise
        except Exception as error:
            self._health.message_failures += 1
            mailbox_message_failures.labels(self._connection.kind.value).inc()
            log.error("mailbox message passed over", tenant=self._key[0], connection=self._key[1],
                      uidvalidity=uidvalidity, uid=message.uid, error=describe(error))

    async def _handle(self, message: FetchedMessage, notice: Notice, uidvalidity: int) -> None:
        mailbox_messages_read.labels(notice.kind.value).inc()
        if notice.kind not in FINDING_KINDS:
            return
        tenant_id, connection_id = self._key
        sends = self._context.sends
        now = self._context.clock()
        arrived_at = message.received_at or now
        if sends.find(notice, tenant_id=tenant_id, connection_id=connection_id,
                      arrived_at=arrived_at) is None:
            await self._catch_up_sends()  # a notice can overtake its `sent` event

        def sent_for(address: str | None) -> DeliveryEvent | None:
            return sends.find(notice, tenant_id=tenant_id, connection_id=connection_id,
                              recipient=address, arrived_at=arrived_at)

        for finding in mailbox_findings(notice, self._connection, uidvalidity=uidvalidity,
                                        uid=message.uid, sent_for=sent_for, now=now):
            await self._publish(BOUNCES, finding, key=tenant_id.encode())
            if not isinstance(finding, BounceDetected):
                continue
            bounces_detected.labels(finding.channel.value, "hard" if finding.hard else "soft",
                                    str(finding.correlated).lower()).inc()
            sent = sends.by_send_id.get(finding.send_id) if finding.send_id else None
            decision = decide(finding, sent, arrived_at=arrived_at, history=self._context.soft_bounces,
                              rule=self._context.soft_bounce_rule, now=now)
            log.info("bounce", tenant=tenant_id, connection=connection_id, uid=message.uid,
                     reason=finding.reason, hard=finding.hard, correlated=finding.correlated,
                     send_id=str(finding.send_id) if finding.send_id else None,
                     suppresses=decision.suppression is not None, why=decision.why.value)
            if decision.suppression is not None:
                entry = decision.suppression
                await self._publish(SUPPRESSION, entry, key=suppression_key(entry.tenant_id, entry.address))

    async def _catch_up_sends(self) -> None:
        try:
            await self._context.catch_up_sends()
        except Exception as error:
            if is_bus_outage(error):
                raise BusUnavailable("the delivery topic could not be read") from error
            raise

    async def _publish(self, topic: Topic, event: BaseModel, *, key: bytes) -> None:
        try:
            await self._publisher.publish(topic, event, key=key)
        except Exception as error:
            if is_bus_outage(error):
                raise BusUnavailable(f"publishing to {topic.name} failed") from error
            raise

    async def _checkpoint(self, uidvalidity: int, last_uid: int) -> None:
        """Written only after the bounces before it are acknowledged: a crash repeats, never skips."""
        checkpoint = WatcherCheckpoint(tenant_id=self._key[0], connection_id=self._key[1],
                                       uidvalidity=uidvalidity, last_uid=last_uid)
        publisher = self._publisher
        try:
            await publisher.confirm()
            await publisher.publish(WATCHER_CHECKPOINTS, checkpoint, key=connection_key(*self._key))
            await publisher.confirm()
        except Exception as error:
            # Whatever was not stored is published again with the batch it came from.
            raise BusUnavailable("the bus did not confirm this mailbox's events") from error
        self._context.checkpoints[self._key] = checkpoint

    async def _mark_broken(self, reason: str, stop: asyncio.Event) -> None:
        """Tell the registry, retrying while the bus is down: never by logging in again."""
        self._health.broken(reason, self._context.clock())
        health = ConnectionHealthChanged(tenant_id=self._key[0], connection_id=self._key[1],
                                         healthy=False, reason=reason, changed_at=self._context.clock())
        attempt = 0
        while not stop.is_set():
            try:
                await self._publisher.publish(REGISTRY, health, key=registry_key(health).encode())
                await self._publisher.confirm()
                break
            except Exception as error:
                attempt += 1
                policy = self._context.retry_policy
                wait_s = backoff_s(attempt, base_s=policy.base_s, max_s=policy.max_s,
                                   jitter=self._context.jitter())
                log.warning("could not publish the broken connection; retrying",
                            connection=self._key[1], error=type(error).__name__, wait_s=round(wait_s, 2))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait_s)
        log.warning("mailbox connection broken", connection=self._key[1], reason=reason)
