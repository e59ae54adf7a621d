"""Each watched mailbox's health, and when it may try again after a failure; pure.

A failing mailbox must never storm its provider: every retry refreshes a token and
logs in, and Gmail and Microsoft answer repeated logins with `Too many login attempts`
or lock the account. So retries wait a capped exponential backoff with jitter
(`sendrail.backoff`), and, whatever the backoff says, a mailbox logs in at most once per
`login_interval_s`. When the bus is what fails, the session is kept and the work waits
out the same backoff: no login at all.

The counter of failures in a row is reset only once a session has caught up (read and
published everything, then waited for new mail), so a session that fails as soon as it
opens keeps backing off further.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sendrail.backoff import backoff_s


class MailboxState(StrEnum):
    STARTING = "starting"
    WATCHING = "watching"
    BACKING_OFF = "backing_off"
    BROKEN = "broken"
    """The credentials no longer work: nothing happens until the user reconnects."""


@dataclass(frozen=True)
class RetryPolicy:
    base_s: float
    max_s: float
    login_interval_s: float
    """The least time between two logins of one mailbox while it is failing."""


def next_attempt_at(policy: RetryPolicy, *, failures: int, failed_at: datetime,
                    last_login_at: datetime | None, jitter: float) -> datetime:
    """When retry number `failures` may start: after the backoff, and, if it will log in
    (`last_login_at` is the previous login), no sooner than the login interval allows."""
    wait_s = backoff_s(failures, base_s=policy.base_s, max_s=policy.max_s, jitter=jitter)
    at = failed_at + timedelta(seconds=wait_s)
    if last_login_at is not None:
        at = max(at, last_login_at + timedelta(seconds=policy.login_interval_s))
    return at


@dataclass
class MailboxHealth:
    """What one mailbox's watcher went through; outlives the watcher, so a restart keeps it."""

    state: MailboxState = MailboxState.STARTING
    failures: int = 0
    """Failures in a row, since the last session that caught up."""
    last_error: str | None = None
    retry_at: datetime | None = None
    last_login_at: datetime | None = None
    since: datetime | None = None
    """When the state last changed."""
    logins: int = 0
    message_failures: int = 0
    """Messages that could not be handled and were passed over."""

    def login_wait_until(self, policy: RetryPolicy, now: datetime) -> datetime | None:
        """When the next login may start, if not now."""
        at = self.retry_at
        if self.failures and self.last_login_at is not None:
            floor = self.last_login_at + timedelta(seconds=policy.login_interval_s)
            at = floor if at is None else max(at, floor)
        return at if at is not None and at > now else None

    def logging_in(self, now: datetime) -> None:
        self.last_login_at = now
        self.logins += 1

    def caught_up(self, now: datetime) -> None:
        if self.state is not MailboxState.WATCHING:
            self._become(MailboxState.WATCHING, now)
        self.failures = 0
        self.retry_at = None

    def failed(self, error: str, policy: RetryPolicy, *, now: datetime, jitter: float,
               logs_in_again: bool) -> datetime:
        """Record a failure; returns when to try again. `logs_in_again`: the retry opens a
        new session (so the login interval applies), rather than keeping this one."""
        self.failures += 1
        self.last_error = error
        self.retry_at = next_attempt_at(policy, failures=self.failures, failed_at=now,
                                        last_login_at=self.last_login_at if logs_in_again else None,
                                        jitter=jitter)
        self._become(MailboxState.BACKING_OFF, now)
        return self.retry_at

    def broken(self, reason: str, now: datetime) -> None:
        self.last_error = reason
        self.retry_at = None
        self._become(MailboxState.BROKEN, now)

    def _become(self, state: MailboxState, now: datetime) -> None:
        self.state = state
        self.since = now

    def details(self) -> dict[str, object]:
        """For /healthz: never a token, only what a person needs to see what is wrong."""
        shown: dict[str, object] = {
            "state": self.state.value,
            "since": self.since.isoformat() if self.since else None,
            "logins": self.logins,
            "message_failures": self.message_failures,
        }
        if self.state is MailboxState.BACKING_OFF:
            shown.update(until=self.retry_at.isoformat() if self.retry_at else None,
                         failures=self.failures, last_error=self.last_error)
        elif self.state is MailboxState.BROKEN:
            shown.update(reason=self.last_error)
        return shown
