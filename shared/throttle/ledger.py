"""The send ledger: one connection's sends still inside its longest window, oldest first.

Time comes in as float seconds and is read to the microsecond (`instant_us`): rounding to
the nearest absorbs the noise of decimal arithmetic (0.1 + 0.2 and 0.7 - 0.4 are both
0.3 s), and a clock's float seconds carry no more than that. A send is remembered at a
whole millisecond, the next one at or after it (`remembered_ms`): never earlier than it
happened, so it never leaves a window early, and the ledger stays a list of small
integers that can be stored exactly.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Sequence
from itertools import pairwise
from typing import TypedDict

from sendrail.throttle.policy import Unit

US_PER_S = 1_000_000
US_PER_MS = 1_000


def instant_us(t_s: float) -> int:
    """`t_s` to the nearest microsecond."""
    if not math.isfinite(t_s):
        raise ValueError(f"a time must be a finite number of seconds, not {t_s!r}")
    return round(t_s * US_PER_S)


def remembered_ms(t_us: int) -> int:
    """The millisecond a send at `t_us` is remembered at: the first one not before it."""
    return -(-t_us // US_PER_MS)


# The window rule, in one place: a send remembered at T is inside a window of w at t while
# t < T + w, which is (t - w, t] seen from the send.

def leaves_us(at_ms: int, window_ms: int) -> int:
    """When a send remembered at `at_ms` leaves a window of `window_ms`."""
    return (at_ms + window_ms) * US_PER_MS


def last_ms_out(now_us: int, window_ms: int) -> int:
    """The last millisecond whose sends are out of a window of `window_ms` at `now_us`;
    sends remembered after it are inside."""
    return (now_us - window_ms * US_PER_MS) // US_PER_MS


class CompactLedger(TypedDict):
    """The ledger as JSON: `at_ms` holds the first send's Unix ms, then each gap to the
    previous send in ms; `recipients` holds each send's recipients."""

    at_ms: list[int]
    recipients: list[int]


class SendLedger:
    """The sends of one connection, (remembered ms, recipients), in time order.

    Recipients are also kept as running totals, so the units of any run of sends is one
    subtraction, and the scheduler finds what must leave a window by bisection instead of
    scanning: O(log n) per window for any number of sends.
    """

    __slots__ = ("_recipients_before", "_times_ms")

    def __init__(self) -> None:
        self._times_ms: list[int] = []
        self._recipients_before: list[int] = [0]
        """Entry i: recipients of every send before send i; one longer than `_times_ms`, its
        last entry the total. Only differences matter, so pruning just drops a prefix."""

    @classmethod
    def from_sends(cls, sends_at_ms: Sequence[int], sends_recipients: Sequence[int]) -> SendLedger:
        """A ledger holding these sends (Unix ms, oldest first, each with its recipients)."""
        if len(sends_at_ms) != len(sends_recipients):
            raise ValueError(f"{len(sends_at_ms)} send times but {len(sends_recipients)} recipient counts")
        ledger = cls()
        for at_ms, recipients in zip(sends_at_ms, sends_recipients, strict=True):
            ledger._append(_whole(at_ms, "a send time"), recipients)
        return ledger

    def __len__(self) -> int:
        return len(self._times_ms)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SendLedger):
            return NotImplemented
        return self.sends_at_ms == other.sends_at_ms and self.sends_recipients == other.sends_recipients

    def __repr__(self) -> str:
        if not self._times_ms:
            return "SendLedger(no sends)"
        return (f"SendLedger({len(self)} sends, {self._recipients_before[-1] - self._recipients_before[0]}"
                f" recipients, {self._times_ms[0]} ms to {self._times_ms[-1]} ms)")

    @property
    def sends_at_ms(self) -> list[int]:
        """When each send is remembered (Unix ms), oldest first; a copy."""
        return list(self._times_ms)

    @property
    def sends_recipients(self) -> list[int]:
        before = self._recipients_before
        return [before[i + 1] - before[i] for i in range(len(self._times_ms))]

    @property
    def last_ms(self) -> int | None:
        return self._times_ms[-1] if self._times_ms else None

    def entries(self) -> Iterator[tuple[int, int]]:
        """(remembered ms, recipients) of each send, oldest first."""
        return zip(self.sends_at_ms, self.sends_recipients, strict=True)

    def record(self, at_s: float, recipients: int) -> None:
        """Remember a send. Sends come in time order: one remembered before the last is refused,
        since the windows are only exact over an ordered ledger."""
        self._append(remembered_ms(instant_us(at_s)), recipients)

    def _append(self, at_ms: int, recipients: int) -> None:
        if isinstance(recipients, bool) or not isinstance(recipients, int) or recipients < 1:
            raise ValueError(f"a send has at least 1 recipient, not {recipients!r}")
        if self._times_ms and at_ms < self._times_ms[-1]:
            raise ValueError(f"sends are recorded in time order: {at_ms} ms is before the last "
                             f"send at {self._times_ms[-1]} ms")
        self._times_ms.append(at_ms)
        self._recipients_before.append(self._recipients_before[-1] + recipients)

    def prune(self, now_s: float, keep_s: float) -> None:
        """Forget the sends that have left a window of `keep_s` at `now_s` (a send at T is
        inside it while now < T + keep_s, as in every window)."""
        keep_ms = remembered_ms(instant_us(keep_s))  # a fraction of a millisecond keeps one more
        cut = bisect.bisect_right(self._times_ms, last_ms_out(instant_us(now_s), keep_ms))
        del self._times_ms[:cut]
        del self._recipients_before[:cut]

    def count(self, unit: Unit, since_s: float, until_s: float) -> int:
        """Messages or recipients of the sends in (since_s, until_s], each read to the
        microsecond. `count(unit, t - window_s, t)` is the window ending at t."""
        lower = instant_us(since_s) // US_PER_MS
        upper = instant_us(until_s) // US_PER_MS
        return max(0, self.units_after_ms(unit, lower) - self.units_after_ms(unit, upper))

    def units_after_ms(self, unit: Unit, after_ms: int) -> int:
        """Messages or recipients of the sends remembered after `after_ms`."""
        start = bisect.bisect_right(self._times_ms, after_ms)
        if unit == "messages":
            return len(self._times_ms) - start
        return self._recipients_before[-1] - self._recipients_before[start]

    def oldest_after_ms(self, after_ms: int) -> int | None:
        """When the oldest send remembered after `after_ms` went, if any."""
        start = bisect.bisect_right(self._times_ms, after_ms)
        return self._times_ms[start] if start < len(self._times_ms) else None

    def newest_to_drop_ms(self, unit: Unit, keep_units: int) -> int | None:
        """When the newest send went that must be out of a window for the sends still in it
        to total at most `keep_units` (None: all of them fit). Sends leave a window oldest
        first, so the ones that stay are always the newest."""
        count = len(self._times_ms)
        if unit == "messages":
            first_kept = max(0, count - keep_units)
        else:
            first_kept = bisect.bisect_left(self._recipients_before,
                                            self._recipients_before[-1] - keep_units)
        return self._times_ms[first_kept - 1] if first_kept > 0 else None

    def to_compact(self) -> CompactLedger:
        """A small JSON form: gaps between sends are a few digits where Unix ms are thirteen."""
        times = self._times_ms
        gaps = [later - earlier for earlier, later in pairwise(times)]
        return {"at_ms": times[:1] + gaps, "recipients": self.sends_recipients}

    @classmethod
    def from_compact(cls, compact: CompactLedger) -> SendLedger:
        """The ledger `to_compact` wrote; ValueError when the data cannot be one."""
        try:
            encoded, recipients = compact["at_ms"], compact["recipients"]
        except (KeyError, TypeError) as error:
            raise ValueError(f"not a compact send ledger: {error}") from error
        if not isinstance(encoded, list) or not isinstance(recipients, list):
            raise ValueError("a compact send ledger holds two lists")
        times: list[int] = []
        for i, value in enumerate(encoded):
            step = _whole(value, "a send time")
            if i > 0 and step < 0:
                raise ValueError(f"send {i} is {-step} ms before the one it follows")
            times.append(step if i == 0 else times[-1] + step)
        return cls.from_sends(times, recipients)


def _whole(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be a whole number, not {value!r}")
    return value
