"""Hourly counters: all-time totals plus the last seven days by hour, so a window is a cheap sum.

Hours are whole UTC hours since the Unix epoch. The "24h" window is the current hour and
the 23 before it, "7d" the current hour and the 167 before it: a window covers between
its length less one hour and its full length, and never needs more than 168 buckets.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import UTC, datetime

from sendrail.services.analytics.models import Summary, Window

HOUR_S = 3600
KEPT_HOURS = 168
WINDOW_HOURS = {Window.DAY: 24, Window.WEEK: KEPT_HOURS}


def hour_of(moment: datetime) -> int:
    return int(moment.timestamp() // HOUR_S)


def hour_start(hour: int) -> datetime:
    return datetime.fromtimestamp(hour * HOUR_S, UTC)


def first_hour(window: Window, now_hour: int) -> int | None:
    """The oldest hour a window counts; None for all time."""
    if window is Window.ALL:
        return None
    return now_hour - WINDOW_HOURS[window] + 1


@dataclass(slots=True)
class Counts:
    sent: int = 0
    sent_recipients: int = 0
    deferred: int = 0
    failed: int = 0
    suppressed: int = 0
    dead_lettered: int = 0
    bounced: int = 0
    hard_bounced: int = 0
    soft_bounced: int = 0
    complaints: int = 0
    auto_replies: int = 0
    bounce_reasons: dict[str, int] = field(default_factory=dict)

    def add(self, other: Counts) -> None:
        for name in _INT_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for reason, count in other.bounce_reasons.items():
            self.bounce_reasons[reason] = self.bounce_reasons.get(reason, 0) + count

    def is_empty(self) -> bool:
        return not any(getattr(self, name) for name in _INT_FIELDS)

    def summary(self) -> Summary:
        """The API's view, with the bounce rate: bounced recipients per recipient sent to."""
        rate = self.bounced / self.sent_recipients if self.sent_recipients else None
        return Summary(**{name: getattr(self, name) for name in _INT_FIELDS},
                       bounce_reasons=dict(sorted(self.bounce_reasons.items())), bounce_rate=rate)


_INT_FIELDS = tuple(f.name for f in fields(Counts) if f.name != "bounce_reasons")


class Series:
    """One key's counts (a tenant, a campaign, ...): all-time totals and recent hours."""

    __slots__ = ("_hours", "_oldest_kept", "total")

    def __init__(self) -> None:
        self.total = Counts()
        self._hours: dict[int, Counts] = {}
        self._oldest_kept = 0

    def add(self, delta: Counts, hour: int, now_hour: int) -> None:
        """Count `delta` at `hour`; hours older than seven days before `now_hour` only in the total."""
        self.total.add(delta)
        oldest = now_hour - KEPT_HOURS + 1
        if oldest > self._oldest_kept:
            self._oldest_kept = oldest
            for stale in [h for h in self._hours if h < oldest]:
                del self._hours[stale]
        if hour >= oldest:
            self._hours.setdefault(hour, Counts()).add(delta)

    def window(self, window: Window, now_hour: int) -> Counts:
        """Counts of the window ending at `now_hour`; an hour after it (a sender's clock ahead) counts too."""
        start = first_hour(window, now_hour)
        counts = Counts()
        if start is None:
            counts.add(self.total)
            return counts
        for hour, bucket in self._hours.items():
            if hour >= start:
                counts.add(bucket)
        return counts

    def hour(self, hour: int) -> Counts | None:
        return self._hours.get(hour)
