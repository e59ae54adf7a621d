"""Throttling on the real broker and sandbox: windows hold, waits are visible, pushback works."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiokafka.partitioner import DefaultPartitioner

from sendrail.bus.codec import encode
from sendrail.events import ChannelKind, DeliveryStatus, EmailRequested, Source
from sendrail.sandbox.mail_sandbox import MailSandbox
from sendrail.settings import Settings
from sendrail.topics import OUTBOUND_SMTP, REQUESTS, connection_key
from support.accounts import Accounts
from support.cli import sendrail
from support.delivery import final_event
from support.event_log import EventLog
from support.services import InProcessServices
from support.throttling import all_sent, arrival_times, deferred_for_limits, sent_events, throttle
from support.waiting import wait_until


async def test_a_batch_goes_out_and_the_rest_waits_for_the_window(
    tenant: str, accounts: Accounts, send, events: EventLog, mail: MailSandbox
) -> None:
    """The window is ten minutes: nothing here waits for it. What the sender decided (3 sent,
    4 announced for when the window has room) is checked the moment it is published; the
    window's timing itself is the unit tests' (tests/unit/test_sending_loop.py)."""
    account = await accounts.user(tenant, "bea", ChannelKind.CUSTOM_SMTP)
    await throttle(accounts, account, batch_size=3, batch_wait_s=600.0)

    requests = [await send(tenant, "bea", account.address) for _ in range(7)]
    waiting = await deferred_for_limits(events, requests, count=4)

    assert len(arrival_times(mail, ChannelKind.CUSTOM_SMTP, requests)) == 3
    first_sent = min(e.occurred_at for e in sent_events(events, requests))
    assert all(e.next_attempt_at is not None
               and e.next_attempt_at >= first_sent + timedelta(seconds=600) - timedelta(milliseconds=1)
               for e in waiting)


async def test_a_throttle_changed_with_the_cli_applies_to_the_running_sender(
    tenant: str, accounts: Accounts, send, events: EventLog, mail: MailSandbox,
    settings: Settings, tmp_path: Path,
) -> None:
    account = await accounts.user(tenant, "cy", ChannelKind.CUSTOM_SMTP)
    await throttle(accounts, account, batch_size=2, batch_wait_s=600.0)
    requests = [await send(tenant, "cy", account.address) for _ in range(4)]
    sent_ids = lambda: {e.send_id for e in events.delivery if e.status is DeliveryStatus.SENT}  # noqa: E731
    await wait_until(lambda: len(sent_ids() & {r.send_id for r in requests}) == 2, timeout_s=20,
                     what="the first batch")
    await wait_until(lambda: any(e.send_id == requests[3].send_id and e.status is DeliveryStatus.DEFERRED
                                 for e in events.delivery), timeout_s=20, what="the wait announced")

    await sendrail(settings, tmp_path, "throttle", "set", "--tenant", tenant, "--connection",
                   account.connection_id, "--batch-size", "10")
    shown = await sendrail(settings, tmp_path, "throttle", "show", "--tenant", tenant)
    assert f"connection {account.connection_id}" in shown and "batch_size=10" in shown

    await all_sent(events, requests, timeout_s=20)  # long before the old 600 s batch wait


async def test_a_heavy_backlog_does_not_delay_another_connections_first_email(
    tenant: str, accounts: Accounts, send, events: EventLog, mail: MailSandbox
) -> None:
    heavy = await accounts.user(tenant, "hank", ChannelKind.CUSTOM_SMTP)
    partitions = list(range(OUTBOUND_SMTP.partitions))
    partition = DefaultPartitioner()(connection_key(tenant, heavy.connection_id), partitions, partitions)
    light_id = next(c for c in (f"light-{i}" for i in range(1000))
                    if DefaultPartitioner()(connection_key(tenant, c), partitions, partitions) == partition)
    light = await accounts.connect(tenant, "lola", ChannelKind.CUSTOM_SMTP, connection_id=light_id)
    await accounts.identity(tenant, "lola", light.address)
    await throttle(accounts, heavy, batch_size=5, batch_wait_s=600.0)

    backlog = [await send(tenant, "hank", heavy.address) for _ in range(200)]
    await events.wait_for(events.delivery, lambda e: e.send_id == backlog[-1].send_id
                          and e.status is DeliveryStatus.QUEUED, what="the backlog routed")
    first = await send(tenant, "lola", light.address)

    # Behind 200 messages that wait ten minutes for their window on the same partition, it
    # goes at once: were it queued behind them, it would not go before the test times out.
    sent = await final_event(events, first.send_id)
    assert sent.status is DeliveryStatus.SENT
    assert len(sent_events(events, backlog)) == 5


async def test_a_quota_reply_pauses_the_connection_until_it_may_send_again(
    tenant: str, accounts: Accounts, send, events: EventLog, mail: MailSandbox
) -> None:
    account = await accounts.user(tenant, "quinn", ChannelKind.GMAIL)
    mail.script_mail_replies("gmail", account.address,
                             ["550 5.4.5 Daily user sending quota exceeded. {trace} - gsmtp"])

    request = await send(tenant, "quinn", account.address)

    paused = await events.wait_for(events.delivery, lambda e: e.send_id == request.send_id
                                   and e.status is DeliveryStatus.DEFERRED, what="the pause")
    assert paused.reply_code == 550 and "quota" in (paused.reason or "")
    assert paused.next_attempt_at is not None and paused.next_attempt_at > paused.occurred_at
    sent = await final_event(events, request.send_id)
    assert sent.status is DeliveryStatus.SENT
    assert sent.occurred_at >= paused.next_attempt_at


async def test_temporary_replies_are_retried_with_backoff(
    tenant: str, accounts: Accounts, send, events: EventLog, mail: MailSandbox
) -> None:
    account = await accounts.user(tenant, "tess", ChannelKind.GMAIL)
    mail.script_mail_replies("gmail", account.address, [
        "421 4.7.0 Try again later, closing connection. {trace} - gsmtp",
        "450 4.2.1 The user you are trying to contact is receiving mail too quickly. - gsmtp",
    ])

    request = await send(tenant, "tess", account.address)

    sent = await final_event(events, request.send_id)
    assert sent.status is DeliveryStatus.SENT
    retries = [e for e in events.delivery if e.send_id == request.send_id
               and e.status is DeliveryStatus.DEFERRED]
    assert [e.reply_code for e in retries] == [421, 450]
    assert all(e.next_attempt_at is not None for e in retries)


async def test_a_refused_recipient_fails_at_once_and_is_not_retried(
    tenant: str, accounts: Accounts, send, events: EventLog, mail: MailSandbox
) -> None:
    account = await accounts.user(tenant, "rob", ChannelKind.EXCHANGE_ONLINE)
    mail.refuse_recipient("exchange_online", f"gone@{tenant}.example.org",
                          "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found")

    request = await send(tenant, "rob", account.address, to=f"gone@{tenant}.example.org")

    failed = await final_event(events, request.send_id)
    assert failed.status is DeliveryStatus.FAILED
    assert failed.reply_code == 550 and "5.1.10" in (failed.reply_text or "")
    assert not [e for e in events.delivery if e.send_id == request.send_id
                and e.status is DeliveryStatus.DEFERRED]


async def test_more_recipients_than_the_provider_takes_fail_before_sending(
    tenant: str, accounts: Accounts, producer, services, events: EventLog, mail: MailSandbox
) -> None:
    account = await accounts.user(tenant, "mo", ChannelKind.GMAIL)
    request = EmailRequested(
        idempotency_key=uuid.uuid4().hex, tenant_id=tenant, user_id="mo", identity=account.address,
        source=Source.API, to=[f"r{i}@example.org" for i in range(101)], subject="Hi", text="Hi",
        requested_at=datetime.now(UTC))
    await producer.send_and_wait(REQUESTS.name, encode(request), key=f"{tenant}/mo".encode())

    failed = await final_event(events, request.send_id)
    assert failed.status is DeliveryStatus.FAILED and "100" in (failed.reason or "")
    assert not arrival_times(mail, ChannelKind.GMAIL, [request])


async def test_a_restarted_sender_keeps_its_windows_and_sends_nothing_twice(
    tenant: str, accounts: Accounts, send, events: EventLog, mail: MailSandbox,
    services: InProcessServices,
) -> None:
    account = await accounts.user(tenant, "ria", ChannelKind.CUSTOM_SMTP)
    await throttle(accounts, account, batch_size=3, batch_wait_s=600.0)
    requests = [await send(tenant, "ria", account.address) for _ in range(9)]
    await deferred_for_limits(events, requests, count=6)

    await services.stop("sender-smtp")
    await services.start("sender-smtp")

    # The new sender announces the wait again: it knows the window is full.
    waiting = await deferred_for_limits(events, requests, count=6, times=2)
    assert len(arrival_times(mail, ChannelKind.CUSTOM_SMTP, requests)) == 3  # none twice, none more
    first_sent = min(e.occurred_at for e in sent_events(events, requests))
    assert all(e.next_attempt_at is not None
               and e.next_attempt_at >= first_sent + timedelta(seconds=600) - timedelta(milliseconds=1)
               for e in waiting)
