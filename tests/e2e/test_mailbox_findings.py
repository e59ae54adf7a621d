"""Suppression after hard bounces, and auto-replies and complaints as their own events."""

from __future__ import annotations

from pathlib import Path

from sendrail.events import ChannelKind, DeliveryStatus
from sendrail.mail.headers import SEND_ID_HEADER
from sendrail.sandbox.mail_sandbox import MailSandbox
from sendrail.settings import Settings
from support.accounts import Account, Accounts
from support.cli import sendrail
from support.delivery import final_event
from support.event_log import EventLog
from support.waiting import wait_until


async def watched_user(accounts: Accounts, events: EventLog, tenant: str, user: str) -> Account:
    account = await accounts.user(tenant, user, ChannelKind.GMAIL)
    await events.wait_for(events.checkpoints, lambda c: c.connection_id == account.connection_id,
                          what=f"the watcher opening {account.address}")
    return account


async def test_a_hard_bounce_suppresses_the_address_until_it_is_lifted(
    tenant: str, accounts: Accounts, send, events: EventLog, mail: MailSandbox,
    settings: Settings, tmp_path: Path,
) -> None:
    account = await watched_user(accounts, events, tenant, "sue")
    gone = f"gone@{mail.info.bounce_domain}"
    first = await send(tenant, "sue", account.address, to=gone)
    await events.wait_for(events.bounces, lambda b: b.send_id == first.send_id, what="the bounce")
    key = f"{tenant}/{gone}".encode()
    await wait_until(lambda: any(k == key and e is not None for k, e in events.suppressions),
                     timeout_s=20, what="the address suppressed")

    second = await send(tenant, "sue", account.address, to=gone)
    refused = await final_event(events, second.send_id)
    assert refused.status is DeliveryStatus.SUPPRESSED
    assert gone in (refused.reason or "") and "hard bounce" in (refused.reason or "")
    listed = await sendrail(settings, tmp_path, "suppression", "list", "--tenant", tenant)
    assert gone in listed and "hard_bounce" in listed

    await sendrail(settings, tmp_path, "suppression", "remove", "--tenant", tenant, "--address", gone)
    await wait_until(lambda: any(k == key and e is None for k, e in events.suppressions),
                     timeout_s=20, what="the suppression lifted")
    third = await send(tenant, "sue", account.address, to=gone)
    assert (await final_event(events, third.send_id)).status is DeliveryStatus.SENT


async def test_another_tenants_suppression_does_not_apply(
    tenant: str, accounts: Accounts, send, events: EventLog, settings: Settings, tmp_path: Path,
) -> None:
    account = await accounts.user(tenant, "val", ChannelKind.CUSTOM_SMTP)
    await sendrail(settings, tmp_path, "suppression", "add", "--tenant", f"{tenant}-other",
                   "--address", "lee@example.org")
    request = await send(tenant, "val", account.address, to="lee@example.org")
    assert (await final_event(events, request.send_id)).status is DeliveryStatus.SENT


async def test_an_auto_reply_and_a_complaint_are_published_tied_to_their_send(
    tenant: str, accounts: Accounts, send, events: EventLog, mail: MailSandbox,
) -> None:
    account = await watched_user(accounts, events, tenant, "ava")
    request = await send(tenant, "ava", account.address, to="lee@customer.example",
                         campaign="autumn", template="intro")
    sent = await final_event(events, request.send_id)
    assert sent.status is DeliveryStatus.SENT and sent.message_id

    mail.deliver(account.address, (
        f"From: Lee <lee@customer.example>\r\nTo: {account.address}\r\n"
        f"Subject: Automatic reply: Hello\r\nAuto-Submitted: auto-replied\r\n"
        f"In-Reply-To: {sent.message_id}\r\nReferences: {sent.message_id}\r\n"
        f"Message-ID: <ooo-1@customer.example>\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\n\r\n"
        "I am out of the office until Monday.\r\n").encode())
    mail.deliver(account.address, (
        "From: feedback@isp.example\r\n"
        f"To: {account.address}\r\nSubject: Abuse report\r\n"
        "Message-ID: <arf-1@isp.example>\r\nDate: Sat, 28 Nov 2026 10:01:00 +0000\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="b1"\r\n\r\n'
        "--b1\r\nContent-Type: text/plain\r\n\r\nThis is an email abuse report.\r\n"
        "--b1\r\nContent-Type: message/feedback-report\r\n\r\n"
        "Feedback-Type: abuse\r\nUser-Agent: isp-fbl/1.0\r\nVersion: 1\r\n"
        "Original-Rcpt-To: lee@customer.example\r\n"
        "--b1\r\nContent-Type: message/rfc822\r\n\r\n"
        f"From: {account.address}\r\nTo: lee@customer.example\r\nSubject: Hello\r\n"
        f"Message-ID: {sent.message_id}\r\n{SEND_ID_HEADER}: {request.send_id}\r\n\r\nHello there.\r\n"
        "--b1--\r\n").encode())

    await wait_until(lambda: {f.event for f in events.findings if f.send_id == request.send_id}
                     == {"auto_reply", "complaint"}, timeout_s=20,
                     what="the auto-reply and the complaint")
    for finding in (f for f in events.findings if f.send_id == request.send_id):
        assert finding.correlated and (finding.campaign_id, finding.template_id) == ("autumn", "intro")
        assert finding.address == "lee@customer.example"
    assert not [b for b in events.bounces if b.send_id == request.send_id]
