"""What a sender remembers of each connection's sending, and how it is rebuilt after a crash.

A turn's sends are stored as in flight before they are handed to the server: after a
restart, a `kill -9` or a rebalance, the next owner of the connection counts every send
that may have gone, so no window is exceeded. Pure: the I/O is `ThrottleStateStore`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from sendrail.bus.codec import decode
from sendrail.events import ThrottleStateRecorded
from sendrail.throttle.ledger import SendLedger
from sendrail.throttle.policy import ThrottlePolicy
from sendrail.throttle.pushback import ConnectionThrottle, PushbackSettings

ConnectionKey = tuple[str, str]
"""(tenant_id, connection_id)."""


@dataclass
class ConnectionBook:
    """One connection's throttle, and its sends under way."""

    key: ConnectionKey
    throttle: ConnectionThrottle
    in_flight: dict[int, int] = field(default_factory=dict)
    """offset -> recipients of the sends under way."""
    in_flight_since_s: float | None = None

    def planner(self) -> ConnectionThrottle:
        """A copy to plan a turn on: what fits now, counting the turn's own sends."""
        ledger = SendLedger.from_sends(self.throttle.ledger.sends_at_ms,
                                       self.throttle.ledger.sends_recipients)
        return replace(self.throttle, ledger=ledger)

    def begin(self, sends: dict[int, int], now_s: float) -> None:
        """Sends about to be handed to the server (offset -> recipients)."""
        self.in_flight = dict(sends)
        self.in_flight_since_s = now_s

    def sent(self, offset: int, done_s: float) -> None:
        """Counted from when the server has surely accepted it (the attempt's end), so the
        windows hold as the provider sees them, whatever the network's delays."""
        self.throttle.sent(done_s, self.in_flight.pop(offset))

    def release(self, offset: int) -> None:
        """The attempt did not deliver: nothing to count."""
        self.in_flight.pop(offset, None)

    def snapshot(self, now: datetime) -> ThrottleStateRecorded:
        ledger = self.throttle.ledger
        paused = self.throttle.paused_until_s
        since = self.in_flight_since_s if self.in_flight else None
        return ThrottleStateRecorded(
            tenant_id=self.key[0], connection_id=self.key[1],
            sends_at_ms=list(ledger.sends_at_ms), sends_recipients=list(ledger.sends_recipients),
            paused_until=datetime.fromtimestamp(paused, UTC) if paused is not None else None,
            pause_reason=self.throttle.pause_reason,
            in_flight_offsets=list(self.in_flight), in_flight_recipients=list(self.in_flight.values()),
            in_flight_since=datetime.fromtimestamp(since, UTC) if since is not None else None,
            recorded_at=now,
        )


def restored_ledger(stored: ThrottleStateRecorded, smtp_timeout_s: float) -> SendLedger:
    """The stored sends, plus the in-flight ones counted at the latest moment the server can
    have accepted them: whether they went or not, no window is exceeded."""
    sends = list(zip(stored.sends_at_ms, stored.sends_recipients, strict=True))
    if stored.in_flight_since is not None:
        latest_ms = int((stored.in_flight_since.timestamp() + smtp_timeout_s) * 1000)
        sends += [(latest_ms, recipients) for recipients in stored.in_flight_recipients]
    sends.sort()
    return SendLedger.from_sends([at for at, _ in sends], [r for _, r in sends])


class BookShelf:
    """The books this process keeps, rebuilt from the last stored state on first use."""

    def __init__(self, pushback: PushbackSettings, *, smtp_timeout_s: float) -> None:
        self._pushback = pushback
        self._smtp_timeout_s = smtp_timeout_s
        self._stored: dict[ConnectionKey, bytes] = {}
        """As the topic holds them: a few hundred bytes, where the decoded record took
        kilobytes, for every connection of the topic, most of them never used here."""
        self._books: dict[ConnectionKey, ConnectionBook] = {}

    def stored(self, key: ConnectionKey, state: bytes) -> None:
        """The latest state a sender recorded for the connection: a valid
        `ThrottleStateRecorded` of this connection, as the throttle-state topic holds it."""
        self._stored[key] = state

    def book(self, key: ConnectionKey, policy: ThrottlePolicy) -> ConnectionBook:
        book = self._books.get(key)
        if book is None:
            raw = self._stored.get(key)
            stored = decode(ThrottleStateRecorded, raw) if raw is not None else None
            throttle = ConnectionThrottle(policy, self._pushback)
            book = ConnectionBook(key, throttle)
            if stored is not None:
                # In flight when the previous owner stopped: the outcome is unknown, so these
                # are sent again (the bound on duplicates), but they stay counted in the ledger.
                throttle.ledger = restored_ledger(stored, self._smtp_timeout_s)
                if stored.paused_until is not None:
                    throttle.paused_until_s = stored.paused_until.timestamp()
                    throttle.pause_reason = stored.pause_reason
            self._books[key] = book
        book.throttle.policy = policy
        return book

    def kept(self, key: ConnectionKey) -> ConnectionBook | None:
        return self._books.get(key)

    def forget(self, key: ConnectionKey) -> None:
        """Another replica owns the connection now; its state is read again on return."""
        self._books.pop(key, None)
