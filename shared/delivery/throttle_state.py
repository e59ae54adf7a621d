"""What a sender remembers of each connection, kept in a compacted topic.

Before a turn's sends are handed to the server, they are stored as in flight and
acknowledged by Kafka: after a restart, a `kill -9` or a rebalance, the next owner of
the connection counts every send that may have gone, so no window is exceeded. The
offsets finished since the last commit let it skip what was already done; only the
messages in flight at a crash (at most one turn of one connection) can be sent twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer

from sendrail.bus.codec import decode, encode
from sendrail.bus.publisher import Publisher
from sendrail.bus.table import TopicFollower
from sendrail.events import ThrottleStateRecorded
from sendrail.settings import KafkaSettings, SenderSettings
from sendrail.throttle.ledger import SendLedger
from sendrail.throttle.policy import ThrottlePolicy
from sendrail.throttle.pushback import ConnectionThrottle, PushbackSettings
from sendrail.topics import THROTTLE_STATE, connection_key

ConnectionKey = tuple[str, str]


@dataclass
class ConnectionBook:
    """One connection's throttle, and which of its offsets are finished or in flight."""

    key: ConnectionKey
    throttle: ConnectionThrottle
    finished: set[int] = field(default_factory=set)
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
        self.finished.add(offset)

    def finish(self, offset: int) -> None:
        self.in_flight.pop(offset, None)
        self.finished.add(offset)

    def release(self, offset: int) -> None:
        """The attempt did not deliver and will be repeated."""
        self.in_flight.pop(offset, None)

    def snapshot(self, committed_offset: int, now: datetime) -> ThrottleStateRecorded:
        """Offsets below the committed one are never read again, so they are left out."""
        self.finished = {o for o in self.finished if o >= committed_offset}
        ledger = self.throttle.ledger
        paused = self.throttle.paused_until_s
        since = self.in_flight_since_s if self.in_flight else None
        return ThrottleStateRecorded(
            tenant_id=self.key[0], connection_id=self.key[1],
            sends_at_ms=list(ledger.sends_at_ms), sends_recipients=list(ledger.sends_recipients),
            paused_until=datetime.fromtimestamp(paused, UTC) if paused is not None else None,
            pause_reason=self.throttle.pause_reason,
            finished_offsets=sorted(self.finished),
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


class ThrottleStateStore:
    """Follows the throttle-state topic; hands out and saves each connection's book."""

    def __init__(self, kafka: KafkaSettings, producer: AIOKafkaProducer, settings: SenderSettings,
                 *, client_id: str) -> None:
        self._producer = producer
        self._pushback = PushbackSettings(retry_backoff_base_s=settings.retry_backoff_base_s,
                                          retry_backoff_max_s=settings.retry_backoff_max_s,
                                          quota_probe_s=settings.quota_probe_s)
        self._smtp_timeout_s = settings.smtp_timeout_s
        self._stored: dict[ConnectionKey, ThrottleStateRecorded] = {}
        self._books: dict[ConnectionKey, ConnectionBook] = {}
        self._follower = TopicFollower(kafka, THROTTLE_STATE.name, self._apply,
                                       client_id=f"{client_id}-throttle-state")

    async def start(self) -> None:
        await self._follower.start()

    async def stop(self) -> None:
        await self._follower.stop()

    async def caught_up(self) -> None:
        await self._follower.caught_up()

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        """Raises on a record it cannot use: the follower dead-letters it."""
        if value is None:
            return
        state = decode(ThrottleStateRecorded, value)
        if key != connection_key(state.tenant_id, state.connection_id):
            raise ValueError("the key does not name the record's tenant/connection")
        self._stored[(state.tenant_id, state.connection_id)] = state

    def book(self, key: ConnectionKey, policy: ThrottlePolicy) -> ConnectionBook:
        """The book this process keeps, or one rebuilt from the last stored state."""
        book = self._books.get(key)
        if book is None:
            stored = self._stored.get(key)
            throttle = ConnectionThrottle(policy, self._pushback)
            book = ConnectionBook(key, throttle)
            if stored is not None:
                throttle.ledger = restored_ledger(stored, self._smtp_timeout_s)
                if stored.paused_until is not None:
                    throttle.paused_until_s = stored.paused_until.timestamp()
                    throttle.pause_reason = stored.pause_reason
                book.finished = set(stored.finished_offsets)
                # In flight when the previous owner stopped: the outcome is unknown, so these
                # are sent again (the bound on duplicates), but they stay counted in the ledger.
            self._books[key] = book
        book.throttle.policy = policy
        return book

    def forget(self, key: ConnectionKey) -> None:
        """Another replica owns the connection now; its state is read again on return."""
        self._books.pop(key, None)

    async def save(self, book: ConnectionBook, committed_offset: int, now: datetime) -> None:
        """Stored and acknowledged when this returns."""
        await self._producer.send_and_wait(
            THROTTLE_STATE.name, encode(book.snapshot(committed_offset, now)),
            key=connection_key(*book.key))

    async def save_with(self, publisher: Publisher, book: ConnectionBook, committed_offset: int,
                        now: datetime) -> None:
        """Handed to the producer now; acknowledged when `publisher` is confirmed."""
        await publisher.publish(THROTTLE_STATE, book.snapshot(committed_offset, now),
                                key=connection_key(*book.key))
