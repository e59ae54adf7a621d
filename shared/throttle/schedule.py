"""When a connection's next message may go: the earliest moment every rolling window has room.

Exact, not polled: for each window the ledger tells, by bisection, the newest send that
must be out of the window before this message fits; the message may go when the last of
those has left (a send at T leaves a window of w at T + w exactly, see `policy`). A window
only loses sends as time passes, so the latest of these moments is the earliest at which
every window has room, and no earlier moment has.
"""

from __future__ import annotations

import sys

from sendrail.errors import PermanentError
from sendrail.throttle.ledger import (
    US_PER_MS,
    US_PER_S,
    SendLedger,
    instant_us,
    last_ms_out,
    leaves_us,
    remembered_ms,
)
from sendrail.throttle.policy import ThrottlePolicy

UNLIMITED_ROOM = sys.maxsize
"""`room` of a policy without windows."""


class NeverFits(PermanentError):
    """The message can never go as it is, however long it waits: it has more recipients than
    one message may have, or than a whole window allows. Split it, or fail it."""

    def __init__(self, reason: str, *, recipients: int, limit_name: str, limit: int) -> None:
        super().__init__(reason)
        self.recipients = recipients
        self.limit_name = limit_name
        self.limit = limit


def check_fits(policy: ThrottlePolicy, recipients: int) -> None:
    """Raise NeverFits if no wait would let a message with `recipients` recipients go."""
    if isinstance(recipients, bool) or not isinstance(recipients, int) or recipients < 1:
        raise ValueError(f"a message has at least 1 recipient, not {recipients!r}")
    most = policy.max_recipients_per_message
    if most is not None and recipients > most:
        raise NeverFits(f"{recipients} recipients, and at most {most} are allowed in one message",
                        recipients=recipients, limit_name="recipients per message", limit=most)
    for window in policy.limits:
        if window.units_of(recipients) > window.limit:
            raise NeverFits(f"{recipients} recipients, more than the {window.name} window allows "
                            f"in all ({window.limit} {window.unit} every {window.window_s:g} s)",
                            recipients=recipients, limit_name=window.name, limit=window.limit)


def earliest_send_s(policy: ThrottlePolicy, ledger: SendLedger, recipients: int, now_s: float) -> float:
    """The earliest time, not before `now_s`, at which one message with `recipients`
    recipients keeps every window of `policy` within its limit: `now_s` itself when it fits
    now. Never before the last send in the ledger either, which is kept in time order.
    Raises NeverFits when no time would do."""
    check_fits(policy, recipients)
    now_us = instant_us(now_s)
    earliest_us = _not_before_last_us(ledger, now_us)
    for window in policy.limits:
        newest_ms = ledger.newest_to_drop_ms(window.unit, window.limit - window.units_of(recipients))
        if newest_ms is not None:
            earliest_us = max(earliest_us, leaves_us(newest_ms, window.window_ms))
    return now_s if earliest_us == now_us else earliest_us / US_PER_S


def room(policy: ThrottlePolicy, ledger: SendLedger, now_s: float) -> int:
    """How many more 1-recipient messages may go at `now_s` (UNLIMITED_ROOM without windows);
    positive exactly when `earliest_send_s` for one recipient is `now_s`."""
    now_us = instant_us(now_s)
    if _not_before_last_us(ledger, now_us) > now_us:
        return 0
    free = UNLIMITED_ROOM
    for window in policy.limits:
        used = ledger.units_after_ms(window.unit, last_ms_out(now_us, window.window_ms))
        free = min(free, max(0, window.limit - used))
    return free


def _not_before_last_us(ledger: SendLedger, now_us: int) -> int:
    """`now_us`, or the last send's millisecond when now would be remembered before it
    (a clock behind the ledger's, as after a restart on another host)."""
    last_ms = ledger.last_ms
    if last_ms is not None and remembered_ms(now_us) < last_ms:
        return last_ms * US_PER_MS
    return now_us
