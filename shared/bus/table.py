"""Follow a topic from its beginning: the local copy of a table kept in Kafka."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from datetime import UTC, datetime

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from sendrail.backoff import backoff_s
from sendrail.bus.clients import make_consumer, make_producer
from sendrail.bus.codec import encode
from sendrail.bus.dead_letter import count, dead_letter_entry, dead_letter_key, unusable_for
from sendrail.settings import KafkaSettings
from sendrail.topics import DEAD_LETTER

log = structlog.get_logger(__name__)

ApplyRecord = Callable[[bytes | None, bytes | None], None]
"""Called with (key, value) for every record, in order; a None value is a deletion. It raises
on a record it cannot use (the follower dead-letters it and goes on)."""


class TopicFollower:
    """Reads every record of a topic into `apply`, then keeps following new ones.

    No consumer group shares the partitions: every process that follows keeps the whole
    table. A record `apply` refuses is dead-lettered and passed over; how far this
    follower has dead-lettered is committed as the offsets of the group
    `<client_id>-dead-letters`, so a refused record of a compacted topic, read again at
    every start, is dead-lettered once, not on every start.
    """

    def __init__(self, settings: KafkaSettings, topic: str, apply: ApplyRecord, *, client_id: str):
        self._settings = settings
        self._topic = topic
        self._apply = apply
        self._client_id = client_id
        self._consumer: AIOKafkaConsumer = make_consumer(
            settings, group_id=f"{client_id}-dead-letters", client_id=client_id
        )
        self._dead_lettered_to: dict[TopicPartition, int] = {}
        self._applied_to: dict[TopicPartition, int] = {}
        self._producer: AIOKafkaProducer | None = None
        self._progress = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Returns once the topic is read to its end, however long that takes (a large topic
        read from its beginning); what it started is stopped again if it fails."""
        try:
            await self._consumer.start()
            partitions = await self._partitions()
            self._consumer.assign(partitions)
            for tp in partitions:
                self._dead_lettered_to[tp] = await self._consumer.committed(tp) or 0
            await self._consumer.seek_to_beginning(*partitions)
            self._task = asyncio.create_task(self._follow(), name=f"follow {self._topic}")
            await self.caught_up(timeout_s=None)
        except BaseException:
            await self.stop()
            raise

    async def _partitions(self, timeout_s: float = 30.0) -> list[TopicPartition]:
        """The topic's partitions, once the cluster's metadata knows them (a topic created a
        moment ago may not be in it yet)."""
        async with asyncio.timeout(timeout_s):
            while True:
                # aiokafka's public `topics()` fetches the same metadata but returns names only.
                cluster = await self._consumer._client.fetch_all_metadata()
                numbers = cluster.partitions_for_topic(self._topic)
                if numbers:
                    return [TopicPartition(self._topic, p) for p in sorted(numbers)]
                await asyncio.sleep(0.1)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()

    async def caught_up(self, timeout_s: float | None = 30.0) -> None:
        """Wait until every record written before this call has been applied (read-your-writes).
        Raises TimeoutError after `timeout_s` (None: no limit)."""
        async with asyncio.timeout(timeout_s):
            partitions = list(self._consumer.assignment())
            end_offsets = await self._consumer.end_offsets(partitions)
            for partition, end in end_offsets.items():
                while self._applied_to.get(partition, 0) < end:
                    async with self._progress:
                        await self._progress.wait()

    async def _follow(self) -> None:
        """Never ends on its own: a failure (the broker gone, a dead-letter entry not stored)
        is retried with backoff, from the record it stopped at."""
        failures = 0
        while True:
            try:
                await self._follow_batches()
            except Exception:
                failures += 1
                wait_s = backoff_s(failures, base_s=0.5, max_s=30.0, jitter=random.random())
                log.exception("following a topic failed; trying again", topic=self._topic,
                              wait_s=round(wait_s, 1))
                await asyncio.sleep(wait_s)
                for tp in self._consumer.assignment():  # the rest of the batch comes again
                    self._consumer.seek(tp, self._applied_to.get(tp, 0))

    async def _follow_batches(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=500)
            # Where the consumer stands once this batch is applied (past control records too,
            # which are never handed out): read now, published after the batch.
            reached = {tp: await self._consumer.position(tp) for tp in self._consumer.assignment()}
            for tp, records in batches.items():
                for record in records:
                    if record.offset < self._applied_to.get(tp, 0):
                        continue  # applied before a failure made this batch come again
                    try:
                        self._apply(record.key, record.value)
                    except Exception as error:  # a record never stops the follower
                        await self._refused(tp, record, error)
                    self._applied_to[tp] = record.offset + 1
            self._applied_to.update(reached)
            async with self._progress:
                self._progress.notify_all()

    async def _refused(self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes],
                       error: Exception) -> None:
        if record.offset < self._dead_lettered_to.get(tp, 0):
            return  # dead-lettered when it was first read
        unusable = unusable_for(record.value, error)
        if self._producer is None:  # most followers never meet a bad record
            self._producer = make_producer(self._settings, client_id=f"{self._client_id}-dead-letters")
            await self._producer.start()
        entry = dead_letter_entry(record, unusable, consumer=self._client_id, now=datetime.now(UTC))
        await self._producer.send_and_wait(DEAD_LETTER.name, encode(entry), key=dead_letter_key(record))
        count(record, unusable, consumer=self._client_id)
        self._dead_lettered_to[tp] = record.offset + 1
        await self._consumer.commit({tp: record.offset + 1})
