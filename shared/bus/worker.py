"""The consume → handle → confirm → commit loop every service runs (at-least-once)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError

from sendrail.bus.publisher import Acknowledgements, Publisher, acknowledged

log = structlog.get_logger(__name__)

Batch = list[ConsumerRecord[bytes, bytes]]
BatchHandler = Callable[[Batch], Awaitable[None]]


async def consume_batches(
    consumer: AIOKafkaConsumer,
    publisher: Publisher,
    handle: BatchHandler,
    stop: asyncio.Event,
    *,
    poll_timeout_ms: int = 200,
    max_unconfirmed_batches: int = 8,
) -> None:
    """Hand each fetched batch (records in partition order) to `handle`; commit its offsets
    once `handle` returned and every event it published, and every earlier batch's, is
    acknowledged.

    The loop does not wait for the broker: the next batch is handled while earlier ones are
    acknowledged and committed (at most `max_unconfirmed_batches` behind). On `stop` the
    batch in hand is finished and everything confirmed is committed, then the loop returns;
    a crash leaves the unconfirmed batches uncommitted, to be consumed again.
    """
    commits = _OffsetCommitter(consumer)
    try:
        while not stop.is_set():
            fetched = await consumer.getmany(timeout_ms=poll_timeout_ms)
            await commits.keep_up(max_unconfirmed_batches)
            if not fetched:
                continue
            batch: Batch = [record for records in fetched.values() for record in records]
            await handle(batch)
            commits.add(await publisher.take_acknowledgements(),
                        {tp: records[-1].offset + 1 for tp, records in fetched.items() if records})
    finally:
        await commits.close()


class _OffsetCommitter:
    """Commits a batch's offsets once its events and every earlier batch's are acknowledged.

    A commit is a broker round trip; while one is in flight, later confirmations gather and
    go in the next one, so at a steady trickle of messages the round trip is not added to
    every message's latency, and under load there are fewer commits.
    """

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer
        self._confirmations: deque[asyncio.Task[None]] = deque()
        self._confirmed: dict[TopicPartition, int] = {}
        self._wake = asyncio.Event()
        self._closing = False
        self._committer = asyncio.create_task(self._commit_confirmed())

    def add(self, pending: Acknowledgements, offsets: dict[TopicPartition, int]) -> None:
        previous = self._confirmations[-1] if self._confirmations else None
        self._confirmations.append(asyncio.create_task(self._confirm(previous, pending, offsets)))

    async def keep_up(self, max_unconfirmed: int) -> None:
        """Raises a failure to store events or to commit as soon as it is known; waits while
        too many batches are unconfirmed."""
        while self._confirmations and (self._confirmations[0].done()
                                       or len(self._confirmations) > max_unconfirmed):
            await self._confirmations.popleft()
        if self._committer.done():
            self._committer.result()

    async def close(self) -> None:
        await asyncio.gather(*self._confirmations, return_exceptions=True)
        self._closing = True
        self._wake.set()
        with contextlib.suppress(Exception):  # a failure here was raised by keep_up already
            await self._committer

    async def _confirm(self, previous: asyncio.Task[None] | None, pending: Acknowledgements,
                       offsets: dict[TopicPartition, int]) -> None:
        if previous is not None:
            await previous  # raises if an earlier batch failed: nothing after it is committed
        await acknowledged(pending)
        self._confirmed.update(offsets)
        self._wake.set()

    async def _commit_confirmed(self) -> None:
        while not (self._closing and not self._confirmed):
            await self._wake.wait()
            self._wake.clear()
            offsets, self._confirmed = self._confirmed, {}
            # Partitions revoked meanwhile are read again by their new owner (at-least-once).
            assigned = self._consumer.assignment()
            owned = {tp: offset for tp, offset in offsets.items() if tp in assigned}
            if not owned:
                continue
            try:
                await self._consumer.commit(owned)
            except CommitFailedError:
                log.warning("commit refused by a rebalance; those records will be consumed again",
                            partitions=len(owned))
