"""A failing mailbox backs off, never logs in more than once per interval, and says so."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from sendrail.clock import ManualClock
from sendrail.services.bounce_watcher.mailbox_health import (
    MailboxHealth,
    MailboxState,
    RetryPolicy,
    next_attempt_at,
)

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
POLICY = RetryPolicy(base_s=1.0, max_s=300.0, login_interval_s=60.0)


def s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.mark.parametrize(("failures", "last_login", "jitter", "at"), [
    (1, None, 0.0, s(0.5)),  # the bus failed: no login, only the backoff
    (1, None, 0.999, s(0.9995)),
    (4, None, 0.0, s(4.0)),
    (9, None, 0.0, s(128.0)),
    (20, None, 0.0, s(150.0)),  # capped: half of max_s at zero jitter
    (20, None, 0.999, s(299.85)),
    (1, s(-5), 0.0, s(55.0)),  # logged in 5 s ago: the login interval wins
    (1, s(-120), 0.0, s(0.5)),  # a long session: reconnect at once
    (9, s(-5), 0.0, s(128.0)),  # the backoff outgrew the interval
])
def test_next_attempt(failures: int, last_login: datetime | None, jitter: float, at: datetime) -> None:
    assert next_attempt_at(POLICY, failures=failures, failed_at=T0, last_login_at=last_login,
                           jitter=jitter) == at


def test_a_mailbox_failing_at_every_login_logs_in_at_most_once_a_minute() -> None:
    clock = ManualClock(T0)
    health = MailboxHealth()
    logins: list[datetime] = []
    while clock() < s(3600):
        wait_until = health.login_wait_until(POLICY, clock())
        if wait_until is not None:
            clock.advance((wait_until - clock()).total_seconds())
            continue
        health.logging_in(clock())
        logins.append(clock())
        clock.advance(0.2)  # the session dies at once
        health.failed("ImapConnectionLost: BYE", POLICY, now=clock(), jitter=0.5, logs_in_again=True)
    gaps_s = [(b - a).total_seconds() for a, b in itertools.pairwise(logins)]
    assert min(gaps_s) >= 60.0
    assert gaps_s == sorted(gaps_s)  # and further apart as the failures go on
    assert max(gaps_s) <= 300.0
    assert health.logins == len(logins) < 40


def test_catching_up_resets_the_backoff_but_not_the_login_interval() -> None:
    health = MailboxHealth()
    for _ in range(6):
        health.failed("x", POLICY, now=T0, jitter=0.0, logs_in_again=True)
    health.logging_in(s(100))
    health.caught_up(s(101))
    assert (health.state, health.failures, health.retry_at) == (MailboxState.WATCHING, 0, None)
    # The session drops right after: the next login still waits for the interval.
    retry_at = health.failed("BYE", POLICY, now=s(102), jitter=0.0, logs_in_again=True)
    assert retry_at == s(160)
    assert health.login_wait_until(POLICY, s(102)) == s(160)
    assert health.login_wait_until(POLICY, s(160)) is None


def test_a_bus_outage_backs_off_without_the_login_interval() -> None:
    health = MailboxHealth()
    health.logging_in(T0)
    health.caught_up(T0)
    assert health.failed("KafkaTimeoutError", POLICY, now=s(1), jitter=0.0, logs_in_again=False) == s(1.5)
    assert health.failed("KafkaTimeoutError", POLICY, now=s(2), jitter=0.0, logs_in_again=False) == s(3)


def test_details_show_the_state_the_deadline_and_the_last_error() -> None:
    health = MailboxHealth(since=T0)
    assert health.details()["state"] == "starting"
    health.logging_in(T0)
    health.caught_up(s(1))
    assert health.details() == {"state": "watching", "since": s(1).isoformat(), "logins": 1,
                                "message_failures": 0}
    health.failed("ImapConnectionLost: BYE", POLICY, now=s(10), jitter=0.0, logs_in_again=True)
    shown = health.details()
    assert shown["state"] == "backing_off" and shown["until"] == s(60).isoformat()
    assert shown["last_error"] == "ImapConnectionLost: BYE" and shown["failures"] == 1
    health.broken("the mail server refused a freshly issued access token", s(70))
    assert health.details()["state"] == "broken"
