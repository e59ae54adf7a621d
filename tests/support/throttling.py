"""Helpers for throttling tests: settings, and what the SMTP server saw."""

from __future__ import annotations

from datetime import UTC, datetime

from sendrail.events import ChannelKind, DeliveryStatus, EmailRequested, ThrottleConfigured
from sendrail.mail.headers import SEND_ID_HEADER
from sendrail.sandbox.mail_sandbox import MailSandbox
from support.accounts import Account, Accounts
from support.event_log import EventLog
from support.waiting import wait_until


async def throttle(accounts: Accounts, account: Account, **settings: object) -> None:
    await accounts.publish(ThrottleConfigured(tenant_id=account.tenant_id,
                                              connection_id=account.connection_id,
                                              updated_at=datetime.now(UTC), **settings))


def arrival_times(mail: MailSandbox, kind: ChannelKind, requests: list[EmailRequested]) -> list[float]:
    """When the server accepted each of these sends: what the provider counts."""
    wanted = {str(r.send_id).encode() for r in requests}
    times = [e.received_at_s for e in mail.received(kind.value)
             if any(f"{SEND_ID_HEADER}: ".encode() + w in e.content for w in wanted)]
    return sorted(times)


def most_in_any_window(times: list[float], window_s: float) -> int:
    """The largest number of sends in any interval (t - window_s, t]."""
    return max(sum(1 for u in times if t - window_s < u <= t) for t in times)


async def all_sent(events: EventLog, requests: list[EmailRequested], timeout_s: float) -> None:
    ids = {r.send_id for r in requests}
    await wait_until(lambda: ids <= {e.send_id for e in events.delivery
                                     if e.status is DeliveryStatus.SENT},
                     timeout_s=timeout_s, what=f"{len(ids)} sends")
