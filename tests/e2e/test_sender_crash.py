"""A sender killed with SIGKILL mid-backlog: another replica takes over without a burst or a repeat."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from sendrail.events import ChannelKind, DeliveryStatus
from sendrail.sandbox.mail_sandbox import MailSandbox
from sendrail.sandbox.ports import free_port
from sendrail.settings import Settings
from support.accounts import Accounts
from support.event_log import EventLog
from support.services import InProcessServices, environment
from support.throttling import arrival_times, deferred_for_limits, sent_events, throttle
from support.waiting import wait_until


async def test_a_killed_sender_sends_nothing_twice_and_its_successor_keeps_the_window(
    tenant: str, accounts: Accounts, send, events: EventLog, mail: MailSandbox,
    services: InProcessServices, settings: Settings, tmp_path: Path,
) -> None:
    account = await accounts.user(tenant, "kim", ChannelKind.CUSTOM_SMTP)
    await throttle(accounts, account, batch_size=4, batch_wait_s=600.0)
    await services.stop("sender-smtp")  # the process below is the only replica for a while
    log = (tmp_path / "sender.log").open("wb")
    replica = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sendrail.cli", "service", "sender-smtp",
        env={**os.environ, **environment(settings), "SENDRAIL_HTTP_PORT": str(free_port())},
        stdout=log, stderr=log)
    try:
        requests = [await send(tenant, "kim", account.address) for _ in range(16)]
        ids = {r.send_id for r in requests}
        await wait_until(lambda: len(ids & {e.send_id for e in events.delivery
                                            if e.status is DeliveryStatus.SENT}) >= 4,
                         timeout_s=30, what="the first batch from the replica")
        replica.send_signal(signal.SIGKILL)  # no clean stop, no last commit
        await replica.wait()
    finally:
        if replica.returncode is None:
            replica.kill()
            await replica.wait()
        log.close()

    await services.start("sender-smtp")  # takes the partitions once the group drops the dead member

    # The successor counts the batch stored before it was sent: the window is full, so it
    # announces the wait for the other 12 and sends nothing (the window's timing is the unit
    # tests'). Nothing it sends could be a duplicate of the dead replica's turn.
    await deferred_for_limits(events, requests, count=12, times=2, timeout_s=60)
    assert len(arrival_times(mail, ChannelKind.CUSTOM_SMTP, requests)) == 4
    assert len({e.send_id for e in sent_events(events, requests)}) == 4
