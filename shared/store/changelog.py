"""A table's changelog topic, read back: from Kafka, and in memory for tests.

Writing goes through the caller's `Publisher` (`ChangelogSink`), so that a changelog
record is acknowledged with the events of the batch that wrote it. A `Publisher` stages
values only; deletions (tombstones) go through a `ChangelogWriter`, confirmed on their own.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from sendrail.bus.clients import make_consumer
from sendrail.settings import KafkaSettings
from sendrail.store.protocol import ApplyRecords, ChangelogRecord

FETCH_RECORDS = 10_000
"""Records per fetch while recovering: an entry is a few dozen bytes, and each fetch is
one write batch into the table."""


class KafkaChangelogReader:
    """Reads partitions of a changelog topic with an assigned consumer, outside any group:
    which partitions to read is the table owner's decision, taken from its own group."""

    def __init__(self, settings: KafkaSettings, topic_name: str, *, client_id: str) -> None:
        self.topic_name = topic_name
        self._consumer: AIOKafkaConsumer = make_consumer(
            settings, group_id=None, client_id=client_id, max_records=FETCH_RECORDS,
            fetch_max_wait_ms=100)

    async def start(self) -> None:
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()

    async def read(self, start_offsets: Mapping[int, int], apply: ApplyRecords) -> dict[int, int]:
        if not start_offsets:
            return {}
        consumer = self._consumer
        wanted = {partition: TopicPartition(self.topic_name, partition) for partition in start_offsets}
        ends: dict[TopicPartition, int] = await consumer.end_offsets(list(wanted.values()))
        consumer.assign(list(wanted.values()))
        try:
            for partition, tp in wanted.items():
                # An offset the topic no longer has (deleted by retention) resets to the
                # earliest one it has (the consumer's `auto_offset_reset`).
                if start_offsets[partition] > 0:
                    consumer.seek(tp, start_offsets[partition])
                else:
                    await consumer.seek_to_beginning(tp)
            pending = {tp: ends[tp] for tp in wanted.values()
                       if await consumer.position(tp) < ends[tp]}
            while pending:
                fetched = await consumer.getmany(*pending, timeout_ms=500)
                for tp, batch in fetched.items():
                    end = pending.get(tp)
                    if end is None:
                        continue
                    records = [ChangelogRecord(r.offset, r.key, r.value) for r in batch if r.offset < end]
                    if records:
                        apply(tp.partition, records)
                for tp in list(pending):
                    if await consumer.position(tp) >= pending[tp]:
                        del pending[tp]
        finally:
            consumer.assign([])
        return {partition: ends[tp] for partition, tp in wanted.items()}


class ChangelogWriter:
    """A table's changelog records, tombstones included, straight to a producer on the partition
    the table chose, and confirmed together: for a table owner that deletes only once what it
    published before is acknowledged (at-least-once), e.g. mail taken out of a table once its
    copies elsewhere are stored."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._staged: list[tuple[str, int, bytes, bytes | None]] = []

    def stage_at(self, topic_name: str, partition: int, key: bytes, value: bytes) -> None:
        self._staged.append((topic_name, partition, key, value))

    def stage_tombstone_at(self, topic_name: str, partition: int, key: bytes) -> None:
        self._staged.append((topic_name, partition, key, None))

    async def confirm(self) -> None:
        """Send what is staged, in order per partition, and wait until the broker has it all."""
        staged, self._staged = self._staged, []
        pending = [await self._producer.send(topic_name, value, key=key, partition=partition)
                   for topic_name, partition, key, value in staged]
        if pending:
            await asyncio.gather(*pending)


class MemoryChangelog:
    """A changelog topic in memory: a table's sink and reader at once. Tests also append
    records no table would write, to see what recovery does with them."""

    def __init__(self, topic_name: str) -> None:
        self.topic_name = topic_name
        self.records: dict[int, list[ChangelogRecord]] = defaultdict(list)
        self.reads: list[dict[int, int]] = []
        """The start offsets of every `read`, for tests that check what was read again."""

    def stage_at(self, topic_name: str, partition: int, key: bytes, value: bytes) -> None:
        if topic_name != self.topic_name:
            raise ValueError(f"{topic_name} is not this changelog ({self.topic_name})")
        self.append(partition, key, value)

    def stage_tombstone_at(self, topic_name: str, partition: int, key: bytes) -> None:
        if topic_name != self.topic_name:
            raise ValueError(f"{topic_name} is not this changelog ({self.topic_name})")
        self.append(partition, key, None)

    def append(self, partition: int, key: bytes | None, value: bytes | None) -> None:
        records = self.records[partition]
        records.append(ChangelogRecord(len(records), key, value))

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def read(self, start_offsets: Mapping[int, int], apply: ApplyRecords) -> dict[int, int]:
        self.reads.append(dict(start_offsets))
        ends: dict[int, int] = {}
        for partition, start in start_offsets.items():
            records = self.records[partition]
            for first in range(start, len(records), FETCH_RECORDS):
                apply(partition, records[first:first + FETCH_RECORDS])
            ends[partition] = len(records)
        return ends
