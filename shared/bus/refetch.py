"""Reading chosen offsets of a partition again: how a sender loads a backlog it only referenced."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, TopicPartition

from sendrail.bus.clients import make_consumer
from sendrail.settings import KafkaSettings


class Refetcher:
    """A consumer outside any group, pointed at one partition and offset per read."""

    def __init__(self, settings: KafkaSettings, topic: str, *, client_id: str,
                 timeout_s: float = 10.0) -> None:
        self._topic = topic
        self._timeout_s = timeout_s
        # Each read seeks elsewhere; a fetch left waiting at the end of the log must not hold
        # up the next read for the broker's default half second.
        # A read wants a few hundred records at most: a fetch of the default megabyte would
        # mostly be dropped at the next seek.
        self._consumer: AIOKafkaConsumer = make_consumer(settings, group_id=None, client_id=client_id,
                                                         fetch_max_wait_ms=10,
                                                         max_partition_fetch_bytes=256 * 1024)
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()

    async def read(self, partition: int, offsets: list[int]) -> dict[int, bytes]:
        """The values at `offsets` (ascending). An offset the log no longer holds (retention)
        is absent from the result."""
        if not offsets:
            return {}
        tp = TopicPartition(self._topic, partition)
        async with self._lock:
            self._consumer.assign([tp])
            self._consumer.seek(tp, offsets[0])
            try:
                return await self._read_range(tp, set(offsets), offsets[0], offsets[-1])
            finally:
                # Left assigned, the consumer would keep fetching the partition in the
                # background, every `fetch_max_wait_ms` once at its end: paused until the
                # next read assigns again.
                self._consumer.pause(tp)

    async def _read_range(self, tp: TopicPartition, wanted: set[int], first: int,
                          last: int) -> dict[int, bytes]:
        found: dict[int, bytes] = {}
        async with asyncio.timeout(self._timeout_s):
            while True:
                # No more records than the range holds: the rest of a fetched batch would be
                # unpacked for nothing.
                fetched = await self._consumer.getmany(tp, timeout_ms=200,
                                                       max_records=last - first + 1)
                records = fetched.get(tp, [])
                for record in records:
                    if record.offset in wanted:
                        found[record.offset] = record.value or b""
                    if record.offset >= last:
                        return found
                if not records and await self._consumer.position(tp) > last:
                    return found
