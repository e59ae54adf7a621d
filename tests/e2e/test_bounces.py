"""Bounces in a Gmail or Exchange Online user's inbox become events tied to their send."""

from __future__ import annotations

from sendrail.events import ChannelKind, DeliveryStatus
from sendrail.sandbox.mail_sandbox import MailSandbox
from support.accounts import Account, Accounts
from support.delivery import final_event
from support.event_log import EventLog
from support.services import InProcessServices
from support.waiting import wait_until


async def watched(events: EventLog, account: Account) -> None:
    """The watcher reads from the moment it first opens a mailbox: wait for that moment."""
    await events.wait_for(events.checkpoints,
                          lambda c: (c.tenant_id, c.connection_id) == (account.tenant_id,
                                                                       account.connection_id),
                          what=f"the watcher opening {account.address}")


async def test_a_bounce_becomes_an_event_tied_to_its_send_campaign_and_template(
    tenant: str, accounts: Accounts, send, events: EventLog, mail: MailSandbox
) -> None:
    for kind in (ChannelKind.GMAIL, ChannelKind.EXCHANGE_ONLINE):
        account = await accounts.user(tenant, f"u-{kind.value}", kind)
        await watched(events, account)
        request = await send(tenant, account.user_id, account.address,
                             to=f"ghost-{kind.value}@{mail.info.bounce_domain}", campaign="spring",
                             template=f"intro-{kind.value}")
        assert (await final_event(events, request.send_id)).status is DeliveryStatus.SENT

        bounce = await events.wait_for(events.bounces, lambda b, r=request: b.send_id == r.send_id,
                                       what=f"the {kind.value} bounce event")
        assert bounce.correlated
        assert bounce.recipient == f"ghost-{kind.value}@{mail.info.bounce_domain}"
        assert (bounce.campaign_id, bounce.template_id) == ("spring", f"intro-{kind.value}")
        assert (bounce.tenant_id, bounce.user_id, bounce.channel) == (tenant, account.user_id, kind)
        assert bounce.hard and bounce.reason == "userunknown"
        assert bounce.status is not None and bounce.status.startswith("5.1.")


async def test_no_bounce_is_read_from_an_on_premises_exchange_mailbox(
    tenant: str, accounts: Accounts, send, events: EventLog, mail: MailSandbox
) -> None:
    onprem = await accounts.user(tenant, "olga", ChannelKind.EXCHANGE_ONPREM)
    gmail = await accounts.user(tenant, "gus", ChannelKind.GMAIL)
    await watched(events, gmail)
    unwatched = await send(tenant, "olga", onprem.address, to=f"ghost@{mail.info.bounce_domain}")
    await wait_until(lambda: len(mail.mailbox(onprem.address)) == 1, timeout_s=20,
                     what="the on-premises server's bounce in olga's mailbox")
    # A later bounce in a watched mailbox is the marker: once it is published, the watcher
    # has had every chance to publish the earlier one, had it read that mailbox.
    marker = await send(tenant, "gus", gmail.address, to=f"marker@{mail.info.bounce_domain}")
    await events.wait_for(events.bounces, lambda b: b.send_id == marker.send_id,
                          what="the marker bounce")

    assert not [b for b in events.bounces if b.send_id == unwatched.send_id
                or b.connection_id == onprem.connection_id]
    assert not [c for c in events.checkpoints if c.connection_id == onprem.connection_id]


async def test_a_restarted_watcher_repeats_no_bounce(
    tenant: str, accounts: Accounts, send, events: EventLog, mail: MailSandbox,
    services: InProcessServices,
) -> None:
    account = await accounts.user(tenant, "rita", ChannelKind.GMAIL)
    await watched(events, account)
    first = await send(tenant, "rita", account.address, to=f"one@{mail.info.bounce_domain}")
    await events.wait_for(events.bounces, lambda b: b.send_id == first.send_id, what="first bounce")

    await services.stop("bounce-watcher")
    second = await send(tenant, "rita", account.address, to=f"two@{mail.info.bounce_domain}")
    await wait_until(lambda: len(mail.mailbox(account.address)) == 2, timeout_s=20,
                     what="the second bounce in the mailbox while the watcher is down")
    await services.start("bounce-watcher")
    await events.wait_for(events.bounces, lambda b: b.send_id == second.send_id,
                          what="the bounce that arrived while the watcher was down")

    mine = [b for b in events.bounces if b.connection_id == account.connection_id]
    assert sorted(b.send_id for b in mine) == sorted([first.send_id, second.send_id])


async def test_a_watcher_kicked_off_with_an_expired_token_reconnects_and_misses_nothing(
    tenant: str, accounts: Accounts, send, events: EventLog, mail: MailSandbox
) -> None:
    account = await accounts.user(tenant, "kay", ChannelKind.EXCHANGE_ONLINE)
    await watched(events, account)
    opened_before = sum(1 for c in events.checkpoints if c.connection_id == account.connection_id)

    # The server ends the session (BYE during IDLE) and the access token has expired: the
    # watcher must refresh it, log in again and read what arrived in between.
    mail.authority.expire_access_tokens(account.address)
    assert await mail.kick_imap(account.address)
    request = await send(tenant, "kay", account.address, to=f"lost@{mail.info.bounce_domain}")

    bounce = await events.wait_for(events.bounces, lambda b: b.send_id == request.send_id,
                                   what="the bounce after the reconnect")
    assert bounce.correlated
    # The checkpoint follows its bounces: once it moves, the new message is read and recorded.
    await wait_until(lambda: sum(1 for c in events.checkpoints
                                 if c.connection_id == account.connection_id) > opened_before,
                     timeout_s=20, what="the checkpoint after the reconnect")
