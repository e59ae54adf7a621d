"""One mailbox's watcher, on fakes: a bad message stays with that message, a bus outage
pauses the work without logging in again, and only a send's own bounce suppresses."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    ProducerClosed,
)

from sendrail.bounces import parse_notice
from sendrail.bounces.notice import Notice
from sendrail.bus.codec import decode, decode_analytics
from sendrail.clock import system_clock
from sendrail.events import (
    AddressSuppressed,
    BounceDetected,
    ChannelKind,
    ConnectionConfigured,
    DeliveryEvent,
    DeliveryStatus,
    OAuthGrant,
    SmtpServer,
    WatcherCheckpoint,
    send_id_for,
)
from sendrail.mail.imap import FetchedMessage, MailboxState
from sendrail.services.bounce_watcher import mailbox_watch
from sendrail.services.bounce_watcher.correlation import SendIndex
from sendrail.services.bounce_watcher.mailbox_health import MailboxHealth, RetryPolicy
from sendrail.services.bounce_watcher.mailbox_health import MailboxState as Health
from sendrail.services.bounce_watcher.mailbox_watch import MailboxWatcher, WatchContext, is_bus_outage
from sendrail.services.bounce_watcher.suppression import SoftBounceHistory, SoftBounceRule
from sendrail.settings import WatcherSettings
from sendrail.topics import BOUNCES, SUPPRESSION, WATCHER_CHECKPOINTS
from support.notices import gmail_plain_notice
from support.waiting import wait_until

SEND = send_id_for("acme", "order-1")
MESSAGE_ID = f"<{SEND}@acme.example>"
CONNECTION = ConnectionConfigured(
    tenant_id="acme", connection_id="ann-gmail", kind=ChannelKind.GMAIL, owner_user_id="ann",
    address="ann@acme.example", smtp=SmtpServer(host="smtp.gmail.com", port=587),
    oauth=OAuthGrant(refresh_token="sealed"), connected_at=datetime(2026, 1, 1, tzinfo=UTC),
    updated_at=datetime(2026, 1, 1, tzinfo=UTC))
POISON = b"this message makes the parser fail"


class FakeProducer:
    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, bytes]] = []
        self.failing_sends = 0

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> asyncio.Future[None]:
        if self.failing_sends > 0:
            self.failing_sends -= 1
            raise KafkaTimeoutError()
        self.records.append((topic, key, value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def values(self, topic: str) -> list[bytes]:
        return [value for name, _, value in self.records if name == topic]


class FakeMailbox:
    """A read-only INBOX holding `messages`; logins are counted on the class."""

    opened: ClassVar[int] = 0
    messages: ClassVar[list[FetchedMessage]] = []
    fetches: ClassVar[int] = 0

    def __init__(self) -> None:
        self.state = MailboxState(uidvalidity=7, uidnext=5)
        self.supports_idle = True

    @classmethod
    async def open(cls, **_: Any) -> FakeMailbox:
        cls.opened += 1
        return cls()

    async def fetch_since(self, last_uid: int, *, limit: int,
                          max_bytes: int | None = None) -> list[FetchedMessage]:
        type(self).fetches += 1
        return [dataclasses.replace(m, raw=m.raw[:max_bytes]) for m in self.messages
                if m.uid > last_uid][:limit]

    async def wait_for_change(self, timeout_s: float) -> bool:
        await asyncio.Event().wait()
        return False

    async def close(self) -> None:
        pass


class FakeParser:
    async def parse(self, raw: bytes) -> Notice:
        if raw == POISON:
            raise RuntimeError("the parser process died twice on this message")
        return parse_notice(raw)


class FakeTokens:
    async def get(self) -> str:
        return "access-token"

    def invalidate(self) -> bool:
        return True


async def nothing() -> None:
    pass


@pytest.fixture
def mailbox(monkeypatch: pytest.MonkeyPatch) -> type[FakeMailbox]:
    monkeypatch.setattr(mailbox_watch, "ImapMailbox", FakeMailbox)
    FakeMailbox.opened, FakeMailbox.fetches = 0, 0
    now = datetime.now(UTC)
    FakeMailbox.messages = [
        FetchedMessage(uid=5, raw=POISON, received_at=now),
        FetchedMessage(uid=6, raw=gmail_plain_notice("ann@acme.example", "lee@customer.example",
                                                     in_reply_to=MESSAGE_ID), received_at=now),
        FetchedMessage(uid=7, raw=gmail_plain_notice("ann@acme.example", "bob@corp.local",
                                                     in_reply_to=MESSAGE_ID), received_at=now),
        FetchedMessage(uid=8, raw=gmail_plain_notice("ann@acme.example", "never@customer.example"),
                       received_at=now),
    ]
    return FakeMailbox


def context(producer: FakeProducer) -> WatchContext:
    sends = SendIndex()
    sends.add(DeliveryEvent(status=DeliveryStatus.SENT, send_id=SEND, tenant_id="acme", user_id="ann",
                            channel=ChannelKind.GMAIL, connection_id="ann-gmail",
                            recipients=["Lee@customer.example"], message_id=MESSAGE_ID,
                            occurred_at=datetime.now(UTC)))
    return WatchContext(
        producer=producer, checkpoints={}, sends=sends, catch_up_sends=nothing,  # type: ignore[arg-type]
        tls_context=None, settings=WatcherSettings(),  # type: ignore[arg-type]
        clock=system_clock, soft_bounce_rule=SoftBounceRule(0, 86400.0),
        soft_bounces=SoftBounceHistory(), parser=FakeParser(),  # type: ignore[arg-type]
        retry_policy=RetryPolicy(base_s=0.001, max_s=0.01, login_interval_s=0.01),
        jitter=lambda: 0.5)


async def watch_until(watcher: MailboxWatcher, done: Callable[[], object]) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop))
    try:
        await wait_until(done, timeout_s=10, what="the watcher to get there")
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


def checkpoints(producer: FakeProducer) -> list[int]:
    return [decode(WatcherCheckpoint, v).last_uid for v in producer.values(WATCHER_CHECKPOINTS.name)]


async def test_a_message_that_cannot_be_handled_is_passed_over_and_the_rest_go_on(
    mailbox: type[FakeMailbox],
) -> None:
    producer, health = FakeProducer(), MailboxHealth()
    watcher = MailboxWatcher(CONNECTION, FakeTokens(), context(producer), health)  # type: ignore[arg-type]
    await watch_until(watcher, lambda: 8 in checkpoints(producer) and health.state is Health.WATCHING)

    bounces = [decode_analytics(v) for v in producer.values(BOUNCES.name)]
    assert [(b.recipient, b.correlated) for b in bounces if isinstance(b, BounceDetected)] == [
        ("lee@customer.example", True), ("bob@corp.local", True), ("never@customer.example", False)]
    # Only the bounce of a recipient of the send suppresses; under the send's spelling.
    suppressed = [decode(AddressSuppressed, v) for v in producer.values(SUPPRESSION.name)]
    assert [(s.tenant_id, s.address) for s in suppressed] == [("acme", "Lee@customer.example")]
    assert (health.message_failures, health.logins, mailbox.opened) == (1, 1, 1)
    assert checkpoints(producer) == [4, 8]


async def test_while_the_bus_is_down_the_mailbox_waits_in_its_session(
    mailbox: type[FakeMailbox],
) -> None:
    producer, health = FakeProducer(), MailboxHealth()
    watcher = MailboxWatcher(CONNECTION, FakeTokens(), context(producer), health)  # type: ignore[arg-type]
    bounce, mailbox.messages = mailbox.messages[1], []
    await watch_until(watcher, lambda: health.state is Health.WATCHING)
    assert checkpoints(producer) == [4]
    producer.failing_sends = 5
    mailbox.messages = [bounce]
    states: list[Health] = []
    await watch_until(watcher, lambda: states.append(health.state) or 6 in checkpoints(producer))

    assert Health.BACKING_OFF in states and health.state is Health.WATCHING and health.failures == 0
    assert mailbox.opened == 2 == health.logins  # once per run here, never once per retry
    assert mailbox.fetches > 3  # the batch was read again after each pause
    assert health.message_failures == 0
    assert len(producer.values(SUPPRESSION.name)) == 1


@pytest.mark.parametrize(("error", "outage"), [
    (KafkaTimeoutError(), True),
    (KafkaConnectionError(), True),
    (NotLeaderForPartitionError(), True),
    (ProducerClosed(), True),
    (TimeoutError(), True),
    (ConnectionResetError(), True),
    (MessageSizeTooLargeError(), False),  # this event can never be stored: the message's fault
    (ValueError("invalid"), False),
])
def test_which_publishing_errors_pause_the_mailbox(error: Exception, outage: bool) -> None:
    assert is_bus_outage(error) is outage
