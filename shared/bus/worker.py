"""The consume → handle → confirm → commit loop every service runs (at-least-once)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, ConsumerRecord

from sendrail.bus.publisher import Publisher

Batch = list[ConsumerRecord[bytes, bytes]]
BatchHandler = Callable[[Batch], Awaitable[None]]


async def consume_batches(
    consumer: AIOKafkaConsumer,
    publisher: Publisher,
    handle: BatchHandler,
    stop: asyncio.Event,
    *,
    poll_timeout_ms: int = 200,
) -> None:
    """Hand each fetched batch (records in partition order) to `handle`; commit its offsets
    once `handle` returned and every event it published is acknowledged.

    On `stop` the batch in hand is finished and committed, then the loop returns; a crash
    instead leaves the batch uncommitted, to be consumed again.
    """
    while not stop.is_set():
        fetched = await consumer.getmany(timeout_ms=poll_timeout_ms)
        if not fetched:
            continue
        batch: Batch = [record for records in fetched.values() for record in records]
        await handle(batch)
        await publisher.confirm()
        await consumer.commit()
