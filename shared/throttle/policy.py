"""A connection's throttle policy: its provider's caps, the team's batch setting and overrides.

Every limit is a rolling window: at most `limit` messages (or recipients) in any interval
(t - window_s, t]. The interval is open at its start, so a send at s counts in the windows
ending at s up to, but not including, s + window_s: a batch of 25 every 45 s sends 25 at
t = 0 and the 26th at t = 45 exactly. Windows are whole milliseconds, the resolution of
the ledger that holds the sends (`sendrail.throttle.ledger`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

from sendrail.errors import ConfigurationError

Unit = Literal["messages", "recipients"]
UNITS: tuple[Unit, ...] = ("messages", "recipients")

MS_PER_S = 1000
DAY_S = 86_400.0
MINUTE_S = 60.0

# What an admin may set. `sendrail.events.ThrottleConfigured` validates with these same
# bounds, so every throttle record the registry accepts builds a policy.
MIN_BATCH_WAIT_S = 1.0
"""No provider needs batches less than a second apart: the per-second window (Gmail's
2 / s) paces sends within a second. A shorter wait is a rate in disguise, and would let a
connection's turns follow each other with next to no pause."""
MAX_BATCH_WAIT_S = DAY_S
"""The longest window any provider uses (the rolling 24 hours): a longer wait would keep
sends in the ledger, and in the stored throttle state, longer than any limit needs them."""
MAX_BATCH_SIZE = 10_000
"""Exchange Online's whole day (10,000 recipients), the most any supported mailbox sends."""
MAX_WINDOW_LIMIT = 50_000
"""The most a daily or per-minute cap may allow. A sender keeps every send of a connection's
longest window in its ledger and stores them in one throttle-state record, about 16 bytes
each as JSON: 50,000 sends are some 800 KB, inside Kafka's default 1 MiB record (the
producer's max_request_size, the broker's message.max.bytes). It is five times the highest
mailbox cap of PRODUCT.md section 2 (Exchange Online's 10,000 recipients a day)."""
MAX_RECIPIENTS_PER_MESSAGE = 1_000
"""Exchange Online's admin maximum (PRODUCT.md section 2); Gmail takes 100 through SMTP."""


def _positive_int(value: object, what: str, most: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{what} must be a whole number of at least 1, not {value!r}")
    if most is not None and value > most:
        raise ConfigurationError(f"{what} must be at most {most:,}, not {value:,}")
    return value


def whole_ms(duration_s: float, what: str) -> int:
    """`duration_s` in whole milliseconds; anything finer cannot be kept exactly, so it is refused."""
    if not (isinstance(duration_s, int | float) and math.isfinite(duration_s) and duration_s > 0):
        raise ConfigurationError(f"{what} must be a positive number of seconds, not {duration_s!r}")
    duration_ms = round(duration_s * MS_PER_S)
    if duration_ms < 1 or not math.isclose(duration_ms, duration_s * MS_PER_S, rel_tol=1e-12,
                                           abs_tol=1e-6):
        raise ConfigurationError(f"{what} must be a whole number of milliseconds, not {duration_s!r} s")
    return duration_ms


@dataclass(frozen=True)
class WindowLimit:
    limit: int
    """At most this many units in any window; at least 1."""
    window_s: float
    """The rolling window's length, a whole number of milliseconds."""
    unit: Unit
    name: str
    """What people call it, for logs and reasons: "daily messages", "per-minute", "batch"."""

    def __post_init__(self) -> None:
        _positive_int(self.limit, f"the limit of {self.name!r}")
        whole_ms(self.window_s, f"the window of {self.name!r}")
        if self.unit not in UNITS:
            raise ConfigurationError(f"the unit of {self.name!r} must be one of {UNITS}, not {self.unit!r}")

    @property
    def window_ms(self) -> int:
        return round(self.window_s * MS_PER_S)

    def units_of(self, recipients: int) -> int:
        """What one message with `recipients` recipients counts against this window."""
        return recipients if self.unit == "recipients" else 1


@dataclass(frozen=True)
class ProviderLimits:
    """What a provider documents for one mailbox."""

    name: str
    limits: tuple[WindowLimit, ...]
    max_recipients_per_message: int | None


@dataclass(frozen=True)
class BatchSetting:
    """The team admin's "25 emails every 45 seconds", kept as the rolling window "at most
    `batch_size` messages in any `wait_s`": the same release pattern (a full batch, then the
    next one when the wait is over), and exact however the sends are spread."""

    batch_size: int
    wait_s: float

    def __post_init__(self) -> None:
        _positive_int(self.batch_size, "the batch size", MAX_BATCH_SIZE)
        whole_ms(self.wait_s, "the batch wait")
        if not MIN_BATCH_WAIT_S <= self.wait_s <= MAX_BATCH_WAIT_S:
            raise ConfigurationError(f"the batch wait must be {MIN_BATCH_WAIT_S:g} s to "
                                     f"{MAX_BATCH_WAIT_S:g} s, not {self.wait_s!r} s")

    def as_window(self) -> WindowLimit:
        return WindowLimit(self.batch_size, self.wait_s, "messages", "batch")


@dataclass(frozen=True)
class LimitOverrides:
    """A connection's or team's own values over its provider's defaults.

    Each one replaces the provider's window of that kind (or adds it when the provider has
    none); it may lower or raise the default, since it states what the account allows (an
    Exchange Online admin sets 1 to 1,000 recipients per message). None keeps the default.
    """

    daily_messages: int | None = None
    daily_recipients: int | None = None
    per_minute_messages: int | None = None
    max_recipients_per_message: int | None = None

    def __post_init__(self) -> None:
        for what, most in (("daily_messages", MAX_WINDOW_LIMIT), ("daily_recipients", MAX_WINDOW_LIMIT),
                           ("per_minute_messages", MAX_WINDOW_LIMIT),
                           ("max_recipients_per_message", MAX_RECIPIENTS_PER_MESSAGE)):
            value = getattr(self, what)
            if value is not None:
                _positive_int(value, what.replace("_", " "), most)

    def windows(self) -> tuple[WindowLimit, ...]:
        """The overridden windows, named as the providers' own."""
        wanted: tuple[tuple[int | None, float, Unit, str], ...] = (
            (self.daily_messages, DAY_S, "messages", "daily messages"),
            (self.daily_recipients, DAY_S, "recipients", "daily recipients"),
            (self.per_minute_messages, MINUTE_S, "messages", "per-minute"),
        )
        return tuple(WindowLimit(limit, window_s, unit, name)
                     for limit, window_s, unit, name in wanted if limit is not None)


@dataclass(frozen=True)
class ThrottlePolicy:
    """Every window one connection must keep, plus the recipients one message may have.
    No windows at all means unthrottled (custom SMTP, unless an admin configured a batch)."""

    limits: tuple[WindowLimit, ...]
    max_recipients_per_message: int | None

    def __post_init__(self) -> None:
        if self.max_recipients_per_message is not None:
            _positive_int(self.max_recipients_per_message, "max recipients per message")
        names = [window.name for window in self.limits]
        if len(names) != len(set(names)):
            raise ConfigurationError(f"window names must be distinct, got {names}")

    @property
    def keep_s(self) -> float:
        """How long a send matters: the longest window (0 when unthrottled)."""
        return max((window.window_s for window in self.limits), default=0.0)

    @classmethod
    def compose(cls, *, provider: ProviderLimits | None, batch: BatchSetting | None = None,
                overrides: LimitOverrides | None = None) -> ThrottlePolicy:
        """The provider's windows with `overrides` applied, then the batch window.

        A window is overridden when it has the same unit and length (a daily messages
        override replaces the provider's 24-hour message window, whatever its name)."""
        limits = list(provider.limits) if provider is not None else []
        max_recipients = provider.max_recipients_per_message if provider is not None else None
        if overrides is not None:
            for override in overrides.windows():
                kind = (override.unit, override.window_ms)
                same = [i for i, window in enumerate(limits) if (window.unit, window.window_ms) == kind]
                if same:
                    for i in same:
                        limits[i] = replace(limits[i], limit=override.limit)
                else:
                    limits.append(override)
            if overrides.max_recipients_per_message is not None:
                max_recipients = overrides.max_recipients_per_message
        if batch is not None:
            limits.append(batch.as_window())
        return cls(tuple(limits), max_recipients)


# Google Workspace, "Gmail sending limits in Google Workspace"
# (https://support.google.com/a/answer/166852): per rolling 24 hours 2,000 messages (500 on
# trial accounts), 10,000 total recipients, 3,000 external recipients, and 3,000 unique
# recipients of which 2,000 external (500 external on trial accounts); 100 recipients per
# message sent through SMTP or the Gmail API. sendrail tells neither internal from external
# nor repeated addresses from new ones, so it counts every recipient as a new external one
# against the lowest of these caps, which keeps all of them. The 2 sends per second are the
# pace Google's Sales Connect documents for its own sending.
GMAIL_WORKSPACE = ProviderLimits(
    "Google Workspace",
    (
        WindowLimit(2_000, DAY_S, "messages", "daily messages"),
        WindowLimit(2_000, DAY_S, "recipients", "daily recipients"),
        WindowLimit(2, 1.0, "messages", "per-second"),
    ),
    max_recipients_per_message=100,
)
GMAIL_WORKSPACE_TRIAL = ProviderLimits(
    "Google Workspace (trial)",
    (
        WindowLimit(500, DAY_S, "messages", "daily messages"),
        WindowLimit(500, DAY_S, "recipients", "daily recipients"),
        WindowLimit(2, 1.0, "messages", "per-second"),
    ),
    max_recipients_per_message=100,
)
# Consumer gmail.com: Google's help for consumer accounts ("You have reached a limit for
# sending mail", https://support.google.com/mail/answer/22839) names the limits without firm
# figures; about 500 messages per rolling 24 hours is what is seen, and 100 recipients per
# message through SMTP. Set LimitOverrides.daily_messages when an account allows otherwise.
GMAIL_CONSUMER = ProviderLimits(
    "Gmail (consumer)",
    (WindowLimit(500, DAY_S, "messages", "daily messages"),),
    max_recipients_per_message=100,
)
# Exchange Online, "Exchange Online limits", sending limits
# (https://learn.microsoft.com/office365/servicedescriptions/exchange-online-service-description/exchange-online-limits):
# recipient rate limit 10,000 recipients per day (a sliding 24 hours, not raisable),
# message rate limit 30 messages per minute for SMTP client submission, and 500 recipients
# per message by default (an admin may set 1 to 1,000).
EXCHANGE_ONLINE = ProviderLimits(
    "Exchange Online",
    (
        WindowLimit(10_000, DAY_S, "recipients", "daily recipients"),
        WindowLimit(30, MINUTE_S, "messages", "per-minute"),
    ),
    max_recipients_per_message=500,
)
