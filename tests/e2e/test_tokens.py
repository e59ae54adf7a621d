"""OAuth tokens: an expired access token is refreshed; a revoked grant breaks the connection."""

from __future__ import annotations

from datetime import UTC, datetime

from sendrail.events import (
    ChannelKind,
    ConnectionConfigured,
    ConnectionHealthChanged,
    DeliveryStatus,
    OAuthGrant,
)
from sendrail.sandbox.mail_sandbox import MailSandbox
from sendrail.secrets import SecretBox
from support.accounts import Accounts
from support.delivery import final_event, received_message
from support.event_log import EventLog


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
    now = datetime.now(UTC)
    current = next(r for r in reversed(events.registry) if isinstance(r, ConnectionConfigured)
                   and r.connection_id == account.connection_id)
    token = mail.add_oauth_user("google", account.address)
    await accounts.publish(
        current.model_copy(update={"oauth": OAuthGrant(refresh_token=secret_box.seal(token)),
                                   "connected_at": now, "updated_at": now}),
        ConnectionHealthChanged(tenant_id=tenant, connection_id=account.connection_id,
                                healthy=True, changed_at=now),
    )
    sent = await final_event(events, request.send_id)
    assert sent.status is DeliveryStatus.SENT
    received_message(mail, ChannelKind.GMAIL, request.send_id)
