"""Publishing events in batches: send without waiting, confirm once before committing."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer
from pydantic import BaseModel

from sendrail.bus.codec import encode
from sendrail.topics import Topic


class Publisher:
    """Collects the broker's acknowledgements so that a consumer commits its input offsets
    only after everything it produced from that input is safely stored."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._pending: list[asyncio.Future[object]] = []

    async def publish(self, topic: Topic, event: BaseModel, *, key: bytes | None) -> None:
        await self.publish_raw(topic.name, encode(event), key=key)

    async def publish_raw(self, topic_name: str, value: bytes, *, key: bytes | None) -> None:
        self._pending.append(await self._producer.send(topic_name, value, key=key))

    async def confirm(self) -> None:
        """Wait until the broker has acknowledged everything published so far."""
        pending, self._pending = self._pending, []
        if pending:
            await asyncio.gather(*pending)
