"""Provider pushback on one connection: a quota pause and backoff after temporary failures.

The ledger keeps sendrail's own sends inside the windows; the provider may still push
back, because the mailbox also sends mail sendrail never sees (its user's own mail
counts against the same daily quota) or because its servers are busy. This state turns
those replies into times, and `next_attempt_s` is the latest of the three constraints.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sendrail.backoff import backoff_s
from sendrail.throttle.ledger import US_PER_S, SendLedger, instant_us, last_ms_out, leaves_us
from sendrail.throttle.policy import ThrottlePolicy
from sendrail.throttle.schedule import check_fits, earliest_send_s


@dataclass(frozen=True)
class PushbackSettings:
    retry_backoff_base_s: float = 1.0
    retry_backoff_max_s: float = 60.0
    quota_probe_s: float = 3600.0
    """After a quota reply the ledger cannot explain, how long until one message probes
    again. Not much sooner: Exchange Online throttles a mailbox whose submissions keep
    failing (550 5.2.251 to 5.2.255)."""


@dataclass
class ConnectionThrottle:
    """One connection's ledger, pause and retry state. Pure: every time is an argument."""

    policy: ThrottlePolicy
    settings: PushbackSettings = field(default_factory=PushbackSettings)
    ledger: SendLedger = field(default_factory=SendLedger)
    paused_until_s: float | None = None
    pause_reason: str | None = None
    retry_at_s: float | None = None
    failed_attempts: int = 0
    """Temporary failures since the last successful send."""

    def next_attempt_s(self, recipients: int, now_s: float) -> float:
        """When the next message (with `recipients` recipients) may be tried: once the windows
        have room, the pause is over and the backoff has passed. Raises NeverFits as
        `earliest_send_s` does."""
        if self.policy.limits:
            waits = [earliest_send_s(self.policy, self.ledger, recipients, now_s)]
        else:  # nothing to count: only the message's own size can refuse it
            check_fits(self.policy, recipients)
            waits = [now_s]
        waits += [t for t in (self.paused_until_s, self.retry_at_s) if t is not None]
        return max(waits)

    def sent(self, at_s: float, recipients: int) -> None:
        """The provider accepted a message: remember it, forget what it no longer needs, and
        clear the backoff and the pause (the provider just showed it has room)."""
        if self.policy.limits:
            self.ledger.record(at_s, recipients)
            self.ledger.prune(at_s, self.policy.keep_s)
        self.failed_attempts = 0
        self.retry_at_s = None
        self.paused_until_s = None
        self.pause_reason = None

    def back_off(self, now_s: float, jitter: float) -> float:
        """A temporary failure (a 4xx reply, a dropped connection): wait longer after each one
        in a row, capped, placed by `jitter` in [0, 1) so connections spread out. Returns the
        retry time."""
        if not 0.0 <= jitter < 1.0:
            raise ValueError(f"jitter is drawn from [0, 1), not {jitter!r}")
        self.failed_attempts += 1
        self.retry_at_s = now_s + backoff_s(
            self.failed_attempts, base_s=self.settings.retry_backoff_base_s,
            max_s=self.settings.retry_backoff_max_s, jitter=jitter)
        return self.retry_at_s

    def pause(self, now_s: float, reason: str) -> float:
        """A quota reply (Gmail `550 5.4.5 Daily user sending quota exceeded`, Exchange Online
        `554 5.2.0 ... SubmissionQuotaExceededException`): hold the connection until its
        daily window frees room. Returns the end of the pause.

        When sendrail's own sends fill the daily window, that is when enough of them have
        left it for one more message. When they do not (mail sent from outside sendrail
        filled it), the ledger cannot tell, so the pause lasts `quota_probe_s`, or less if
        the oldest of sendrail's sends in the window leaves sooner: the provider counts that
        one too, so room may open then.
        """
        now_us = instant_us(now_s)
        daily_windows = [w for w in self.policy.limits if w.window_s == self.policy.keep_s]
        until_us = now_us
        for window in daily_windows:  # when the ledger's own sends leave room for one more
            newest_ms = self.ledger.newest_to_drop_ms(window.unit, window.limit - 1)
            if newest_ms is not None:
                until_us = max(until_us, leaves_us(newest_ms, window.window_ms))
        if until_us == now_us:  # the ledger has room: mail from outside sendrail filled the quota
            until_us = now_us + instant_us(self.settings.quota_probe_s)
            if daily_windows:
                window_ms = daily_windows[0].window_ms
                oldest_ms = self.ledger.oldest_after_ms(last_ms_out(now_us, window_ms))
                if oldest_ms is not None:
                    until_us = min(until_us, leaves_us(oldest_ms, window_ms))
        self.paused_until_s = until_us / US_PER_S
        self.pause_reason = reason
        return self.paused_until_s
