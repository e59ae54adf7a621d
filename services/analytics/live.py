"""New feed entries handed to every open event stream of their tenant that wants them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from sendrail.services.analytics.feed import FeedFilter
from sendrail.services.analytics.models import FeedItem

STREAM_QUEUE_SIZE = 1000
"""Entries a slow reader may fall behind by before its stream is closed (it reconnects)."""


class Subscription:
    def __init__(self, tenant_id: str, feed_filter: FeedFilter, queue_size: int) -> None:
        self.tenant_id = tenant_id
        self.feed_filter = feed_filter
        self._queue: asyncio.Queue[FeedItem | None] = asyncio.Queue(queue_size)
        self._closed = False

    def offer(self, item: FeedItem) -> bool:
        """Queue `item`; False when the reader has fallen too far behind."""
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            return False
        return True

    def close(self) -> None:
        self._closed = True
        if self._queue.empty():
            self._queue.put_nowait(None)  # wakes a reader waiting on an empty queue

    async def next(self) -> FeedItem | None:
        """The next entry; None once closed and drained."""
        if self._closed and self._queue.empty():
            return None
        return await self._queue.get()


class LiveFeed:
    def __init__(self, queue_size: int = STREAM_QUEUE_SIZE) -> None:
        self._queue_size = queue_size
        self._subscriptions: set[Subscription] = set()

    def __len__(self) -> int:
        return len(self._subscriptions)

    def publish(self, item: FeedItem) -> None:
        for subscription in list(self._subscriptions):
            if subscription.tenant_id == item.tenant_id and subscription.feed_filter.matches(item):
                if not subscription.offer(item):
                    self._subscriptions.discard(subscription)
                    subscription.close()

    @contextmanager
    def subscribe(self, tenant_id: str, feed_filter: FeedFilter) -> Iterator[Subscription]:
        subscription = Subscription(tenant_id, feed_filter, self._queue_size)
        self._subscriptions.add(subscription)
        try:
            yield subscription
        finally:
            self._subscriptions.discard(subscription)

    def close(self) -> None:
        """End every stream: the service is stopping."""
        for subscription in self._subscriptions:
            subscription.close()
        self._subscriptions.clear()
