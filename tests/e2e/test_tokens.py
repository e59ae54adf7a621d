"""OAuth tokens: an expired access token is refreshed; a revoked grant breaks the connection."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from aiokafka import TopicPartition

from sendrail.bus.clients import make_consumer
from sendrail.bus.codec import decode
from sendrail.events import (
    ChannelKind,
    ConnectionConfigured,
    ConnectionHealthChanged,
    DeliveryStatus,
    EmailRouted,
    OAuthGrant,
)
from sendrail.sandbox.mail_sandbox import MailSandbox
from sendrail.secrets import SecretBox
from sendrail.settings import KafkaSettings, Settings
from sendrail.topics import HELD, OUTBOUND_GMAIL, Topic, connection_key
from support.accounts import Account, Accounts
from support.delivery import final_event, received_message
from support.event_log import EventLog
from support.services import InProcessServices


async def test_an_expired_access_token_is_refreshed(
    tenant: str, accounts: Accounts, send, events: EventLog, mail: MailSandbox
) -> None:
    account = await accounts.user(tenant, "ed", ChannelKind.EXCHANGE_ONLINE)
    first = await send(tenant, "ed", account.address)
    assert (await final_event(events, first.send_id)).status is DeliveryStatus.SENT

    assert mail.authority.expire_access_tokens(account.address) >= 1
    second = await send(tenant, "ed", account.address)

    sent = await final_event(events, second.send_id)
    assert sent.status is DeliveryStatus.SENT, sent.reason
    received_message(mail, ChannelKind.EXCHANGE_ONLINE, second.send_id)
    # Microsoft handed out a new refresh token with the new access token: it was stored, sealed.
    rotated = [r for r in events.registry if isinstance(r, ConnectionConfigured)
               and r.connection_id == account.connection_id]
    assert len({r.oauth.refresh_token for r in rotated if r.oauth}) >= 2


async def test_a_revoked_grant_breaks_the_connection_and_holds_its_mail_until_reconnect(
    tenant: str, accounts: Accounts, send, events: EventLog, mail: MailSandbox,
    secret_box: SecretBox,
) -> None:
    account = await accounts.user(tenant, "gwen", ChannelKind.GMAIL)
    mail.authority.revoke(account.address)

    request = await send(tenant, "gwen", account.address)

    held = await events.wait_for(
        events.delivery, lambda e: e.send_id == request.send_id and e.status is DeliveryStatus.DEFERRED,
        what="the held (deferred) event")
    assert "reconnect" in (held.reason or "")
    broken = await events.wait_for(
        events.registry, lambda r: isinstance(r, ConnectionHealthChanged)
        and r.connection_id == account.connection_id and not r.healthy,
        what="the connection marked broken")
    assert broken.reason
    assert not [e for e in events.delivery if e.send_id == request.send_id
                and e.status in (DeliveryStatus.SENT, DeliveryStatus.FAILED)]

    # The user connects the mailbox again: the held mail goes out through it.
    await _reconnect(account, accounts, events, mail, secret_box)
    sent = await final_event(events, request.send_id)
    assert sent.status is DeliveryStatus.SENT
    received_message(mail, ChannelKind.GMAIL, request.send_id)


async def test_held_mail_is_stored_once_while_broken_and_released_in_held_order(
    tenant: str, accounts: Accounts, send, events: EventLog, mail: MailSandbox,
    secret_box: SecretBox, kafka: KafkaSettings, settings: Settings, services: InProcessServices,
) -> None:
    account = await accounts.user(tenant, "hana", ChannelKind.GMAIL)
    mail.authority.revoke(account.address)
    requests = []
    for n in range(3):  # one after the other, so the held order is the order they were sent
        request = await send(tenant, "hana", account.address, subject=f"Held {n}")
        await events.wait_for(
            events.delivery, lambda e, r=request: e.send_id == r.send_id
            and e.status is DeliveryStatus.DEFERRED, what=f"held email {n}")
        requests.append(request)
    key = connection_key(tenant, account.connection_id)

    # Many of the router's looks over held mail later (every held_recheck_s), one copy each.
    await asyncio.sleep(10 * settings.sender.held_recheck_s)
    assert [r.send_id for _, r in await _copies(kafka, HELD, key)] == [r.send_id for r in requests]
    # A restarted router recovers the mail from its table's changelog, and waits on.
    await services.stop("router")
    await services.start("router")
    await asyncio.sleep(5 * settings.sender.held_recheck_s)
    assert not [e for e in events.delivery if e.send_id in {r.send_id for r in requests}
                and e.status is not DeliveryStatus.DEFERRED and e.status is not DeliveryStatus.QUEUED]

    reconnected_ms = int(datetime.now(UTC).timestamp() * 1000)
    await _reconnect(account, accounts, events, mail, secret_box)
    for request in requests:
        sent = await final_event(events, request.send_id, timeout_s=40)
        assert sent.status is DeliveryStatus.SENT, sent.reason
        received_message(mail, ChannelKind.GMAIL, request.send_id)
    released = [r.send_id for at_ms, r in await _copies(kafka, OUTBOUND_GMAIL, key)
                if at_ms >= reconnected_ms]
    assert released == [r.send_id for r in requests]
    assert len(await _copies(kafka, HELD, key)) == len(requests)


async def _reconnect(account: Account, accounts: Accounts, events: EventLog, mail: MailSandbox,
                     secret_box: SecretBox) -> None:
    """What `sendrail connect` does for a mailbox connected again: new credentials, healthy."""
    now = datetime.now(UTC)
    current = next(r for r in reversed(events.registry) if isinstance(r, ConnectionConfigured)
                   and r.connection_id == account.connection_id)
    token = mail.add_oauth_user("google", account.address)
    await accounts.publish(
        current.model_copy(update={"oauth": OAuthGrant(refresh_token=secret_box.seal(token)),
                                   "connected_at": now, "updated_at": now}),
        ConnectionHealthChanged(tenant_id=account.tenant_id, connection_id=account.connection_id,
                                healthy=True, changed_at=now),
    )


async def _copies(kafka: KafkaSettings, topic: Topic, key: bytes) -> list[tuple[int, EmailRouted]]:
    """(timestamp in ms, email) of every record on `topic` under `key`, in offset order."""
    consumer = make_consumer(kafka, group_id=None, client_id="test-held-copies")
    await consumer.start()
    try:
        partitions = [TopicPartition(topic.name, p) for p in range(topic.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found = []
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                found.extend(r for r in records if r.key == key)
        found.sort(key=lambda r: (r.partition, r.offset))
        return [(r.timestamp, decode(EmailRouted, r.value or b"")) for r in found]
    finally:
        await consumer.stop()
