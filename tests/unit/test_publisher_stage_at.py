"""Staging on a chosen partition: a table's changelog record goes where its source record was."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel

from sendrail.bus.publisher import Publisher, partition_for
from sendrail.topics import Topic


class Event(BaseModel):
    n: int


EVENTS = Topic("events", Event, "k", "test events")


class _Batch:
    def __init__(self, capacity: int) -> None:
        self.records: list[tuple[bytes, bytes]] = []
        self._capacity = capacity

    def append(self, *, key: bytes, value: bytes, timestamp: int | None) -> object | None:
        if len(self.records) >= self._capacity:
            return None
        self.records.append((key, value))
        return object()


class FakeProducer:
    """Records what reaches each partition, in order."""

    def __init__(self, partitions: int = 6, batch_capacity: int = 1000) -> None:
        self.partitions = partitions
        self.batch_capacity = batch_capacity
        self.sent: list[tuple[str, int, bytes, bytes]] = []

    def create_batch(self) -> _Batch:
        return _Batch(self.batch_capacity)

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(self.partitions))

    async def send_batch(self, batch: _Batch, topic: str, *, partition: int) -> asyncio.Future[Any]:
        self.sent.extend((topic, partition, key, value) for key, value in batch.records)
        return self._done()

    async def send(self, topic: str, value: bytes, *, key: bytes | None, partition: int | None = None
                   ) -> asyncio.Future[Any]:
        assert key is not None
        chosen = partition if partition is not None else partition_for(key, list(range(self.partitions)))
        self.sent.append((topic, chosen, key, value))
        return self._done()

    def _done(self) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


async def test_stage_at_goes_to_the_chosen_partition_whatever_the_keys_hash() -> None:
    producer = FakeProducer()
    publisher = Publisher(producer)  # type: ignore[arg-type]
    key = b"acme/alice-gmail"
    hashed = partition_for(key, list(range(6)))
    chosen = (hashed + 1) % 6

    publisher.stage(EVENTS, Event(n=1), key=key)
    publisher.stage_at("changelog", chosen, key, b"entry")
    await publisher.confirm()

    assert ("events", hashed, key, b'{"n":1}') in producer.sent
    assert ("changelog", chosen, key, b"entry") in producer.sent
    assert len(producer.sent) == 2


async def test_records_staged_on_one_partition_keep_their_order_across_batches() -> None:
    producer = FakeProducer(batch_capacity=3)
    publisher = Publisher(producer)  # type: ignore[arg-type]

    for n in range(10):
        publisher.stage_at("changelog", 2, f"send-{n}".encode(), b"entry")
        publisher.stage_at("changelog", 5, f"other-{n}".encode(), b"entry")
    publisher.stage_at("changelog", 2, b"large", b"x" * 70_000)  # sent on its own, still in order
    publisher.stage_at("changelog", 2, b"after", b"entry")
    acknowledgements = await publisher.take_acknowledgements()

    on_2 = [key for topic, partition, key, _ in producer.sent if partition == 2]
    on_5 = [key for topic, partition, key, _ in producer.sent if partition == 5]
    assert on_2 == [*(f"send-{n}".encode() for n in range(10)), b"large", b"after"]
    assert on_5 == [f"other-{n}".encode() for n in range(10)]
    assert acknowledgements  # confirmed together with everything else published
