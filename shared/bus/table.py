"""Follow a topic from its beginning: the local copy of a table kept in Kafka."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog
from aiokafka import AIOKafkaConsumer

from sendrail.bus.clients import make_consumer
from sendrail.settings import KafkaSettings

log = structlog.get_logger(__name__)

ApplyRecord = Callable[[bytes | None, bytes | None], None]
"""Called with (key, value) for every record, in order; a None value is a deletion."""


class TopicFollower:
    """Reads every record of a topic into `apply`, then keeps following new ones.

    No consumer group: every process that follows keeps the whole table.
    """

    def __init__(self, settings: KafkaSettings, topic: str, apply: ApplyRecord, *, client_id: str):
        self._topic = topic
        self._apply = apply
        self._consumer: AIOKafkaConsumer = make_consumer(
            settings, topic, group_id=None, client_id=client_id
        )
        self._progress = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        self._task = asyncio.create_task(self._follow(), name=f"follow {self._topic}")
        await self.caught_up()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    async def caught_up(self, timeout_s: float = 30.0) -> None:
        """Wait until every record written before this call has been applied (read-your-writes)."""
        async with asyncio.timeout(timeout_s):
            while not self._consumer.assignment():
                async with self._progress:
                    await self._progress.wait()
            partitions = list(self._consumer.assignment())
            end_offsets = await self._consumer.end_offsets(partitions)
            for partition, end in end_offsets.items():
                while await self._consumer.position(partition) < end:
                    async with self._progress:
                        await self._progress.wait()

    async def _follow(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    self._apply(record.key, record.value)
            async with self._progress:
                self._progress.notify_all()
