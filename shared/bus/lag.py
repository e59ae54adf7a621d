"""Consumer lag for Prometheus: how much of its topics a consumer group has not finished."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from sendrail.metrics import consumer_lag

DoneOffset = Callable[[TopicPartition], Awaitable[int | None]]
"""The offset up to which the group is done with a partition (None: unknown yet)."""


async def report_lag(consumer: AIOKafkaConsumer, group: str, topics: list[str], done: DoneOffset,
                     stop: asyncio.Event, *, interval_s: float = 15.0) -> None:
    """Every `interval_s`: end offset minus done offset, summed per topic, for the partitions
    this replica holds now (0 for a topic it holds none of, so replicas add up)."""
    while not stop.is_set():
        assigned = list(consumer.assignment())
        totals = dict.fromkeys(topics, 0)
        if assigned:
            with contextlib.suppress(Exception):  # a metric never stops a service
                async with asyncio.timeout(interval_s):
                    ends = await consumer.end_offsets(assigned)
                for tp, end in ends.items():
                    offset = await done(tp)
                    if offset is not None and tp.topic in totals:
                        totals[tp.topic] += max(0, end - offset)
        for topic, lag in totals.items():
            consumer_lag.labels(group, topic).set(lag)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)


def position_of(consumer: AIOKafkaConsumer) -> DoneOffset:
    """For consumers that commit each batch as they finish it: their position."""

    async def done(tp: TopicPartition) -> int | None:
        return int(await consumer.position(tp))

    return done
