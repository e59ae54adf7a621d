"""A tenant's recent events, newest first, each once: what the live feed starts from."""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import datetime

from sendrail.services.analytics.models import FeedItem, FeedKind

FEED_CAPACITY = 1000
"""Events kept per tenant; older ones stay counted in the summaries."""


@dataclass(frozen=True)
class FeedFilter:
    """Which events a reader wants; None matches anything."""

    campaign: str | None = None
    template: str | None = None
    user: str | None = None
    kinds: frozenset[FeedKind] | None = None

    def matches(self, item: FeedItem) -> bool:
        return ((self.campaign is None or item.campaign_id == self.campaign)
                and (self.template is None or item.template_id == self.template)
                and (self.user is None or item.user_id == self.user)
                and (self.kinds is None or item.kind in self.kinds))


class Feed:
    """The newest `capacity` events by (time, id), whatever order they were read in.

    Ordering by the events' own time rather than by arrival makes a rebuild from the topics
    keep exactly the same entries, although partitions are read interleaved differently.
    """

    def __init__(self, capacity: int = FEED_CAPACITY) -> None:
        self._capacity = capacity
        self._order: list[tuple[datetime, str]] = []
        self._items: dict[str, FeedItem] = {}

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: FeedItem) -> bool:
        """Keep `item` unless it is already here or older than everything kept; True if kept."""
        if item.id in self._items:
            return False
        key = (item.at, item.id)
        if len(self._order) >= self._capacity and key < self._order[0]:
            return False
        bisect.insort(self._order, key)
        self._items[item.id] = item
        if len(self._order) > self._capacity:
            _, dropped = self._order.pop(0)
            del self._items[dropped]
        return True

    def newest(self, feed_filter: FeedFilter, limit: int) -> list[FeedItem]:
        found: list[FeedItem] = []
        for _, item_id in reversed(self._order):
            item = self._items[item_id]
            if feed_filter.matches(item):
                found.append(item)
                if len(found) == limit:
                    break
        return found
