"""Helpers for throttling tests: settings, and what the SMTP server saw."""

from __future__ import annotations

from datetime import UTC, datetime

from sendrail.events import ChannelKind, DeliveryEvent, DeliveryStatus, EmailRequested, ThrottleConfigured
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


async def all_sent(events: EventLog, requests: list[EmailRequested], timeout_s: float) -> None:
    ids = {r.send_id for r in requests}
    await wait_until(lambda: ids <= {e.send_id for e in events.delivery
                                     if e.status is DeliveryStatus.SENT},
                     timeout_s=timeout_s, what=f"{len(ids)} sends")


def sent_events(events: EventLog, requests: list[EmailRequested]) -> list[DeliveryEvent]:
    ids = {r.send_id for r in requests}
    return [e for e in events.delivery if e.status is DeliveryStatus.SENT and e.send_id in ids]


async def deferred_for_limits(events: EventLog, requests: list[EmailRequested], *, count: int,
                              times: int = 1, timeout_s: float = 30) -> list[DeliveryEvent]:
    """Once `count` of these sends have been told `times` times that they wait for the
    connection's limits: the latest such announcement of each."""
    ids = {r.send_id for r in requests}

    def waiting() -> dict[object, list[DeliveryEvent]]:
        by_send: dict[object, list[DeliveryEvent]] = {}
        for e in events.delivery:
            if (e.send_id in ids and e.status is DeliveryStatus.DEFERRED
                    and "sending limits" in (e.reason or "")):
                by_send.setdefault(e.send_id, []).append(e)
        return {k: v for k, v in by_send.items() if len(v) >= times}

    await wait_until(lambda: len(waiting()) >= count, timeout_s=timeout_s,
                     what=f"{count} sends told {times} time(s) they wait for the limits")
    return [announced[-1] for announced in waiting().values()]
