"""Each connection's book, kept in a compacted topic that every sender follows.

A turn's book is stored (and acknowledged by Kafka) before its sends are handed to the
server; `BookShelf` rebuilds it from the last stored state when a connection changes hands.
"""

from __future__ import annotations

from aiokafka import AIOKafkaProducer

from sendrail.bus.codec import decode, encode
from sendrail.bus.publisher import Publisher
from sendrail.bus.table import TopicFollower
from sendrail.delivery.books import BookShelf
from sendrail.events import ThrottleStateRecorded
from sendrail.settings import KafkaSettings, SenderSettings
from sendrail.throttle.pushback import PushbackSettings
from sendrail.topics import THROTTLE_STATE, connection_key


class ThrottleStateStore:
    """Follows the throttle-state topic; hands out and saves each connection's book."""

    def __init__(self, kafka: KafkaSettings, producer: AIOKafkaProducer, settings: SenderSettings,
                 *, client_id: str) -> None:
        self._producer = producer
        self.books = BookShelf(PushbackSettings(retry_backoff_base_s=settings.retry_backoff_base_s,
                                                retry_backoff_max_s=settings.retry_backoff_max_s,
                                                quota_probe_s=settings.quota_probe_s),
                               smtp_timeout_s=settings.smtp_timeout_s)
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
        self.books.stored((state.tenant_id, state.connection_id), value)

    async def save(self, state: ThrottleStateRecorded) -> None:
        """Stored and acknowledged when this returns."""
        await self._producer.send_and_wait(THROTTLE_STATE.name, encode(state),
                                           key=connection_key(state.tenant_id, state.connection_id))

    @staticmethod
    def save_with(publisher: Publisher, state: ThrottleStateRecorded) -> None:
        """Staged on `publisher`: acknowledged when it is confirmed."""
        publisher.stage(THROTTLE_STATE, state, key=connection_key(state.tenant_id, state.connection_id))
