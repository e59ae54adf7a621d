"""One connection's queue of mail, in partition order, holding little in memory.

The first `loaded_limit` messages are kept decoded; the rest are only references
(partition offsets, a few bytes each) and are read again from Kafka when their turn
comes, so a backlog of any size lives in Kafka, not in RAM. Pure.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from sendrail.events import EmailRouted


@dataclass
class Queued:
    offset: int
    routed: EmailRouted | None
    """None while the message is only a reference."""


class ConnectionQueue:
    def __init__(self, partition: int, *, loaded_limit: int) -> None:
        self.partition = partition
        self._loaded_limit = loaded_limit
        self._items: deque[Queued] = deque()
        self._loaded = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def loaded(self) -> int:
        return self._loaded

    def push(self, offset: int, routed: EmailRouted) -> None:
        """Append; kept decoded only while everything before it is decoded too and there is room."""
        keep = self._loaded == len(self._items) and self._loaded < self._loaded_limit
        self._items.append(Queued(offset, routed if keep else None))
        self._loaded += keep

    def push_front(self, item: Queued) -> None:
        """Back to the head, for a message whose attempt must be repeated."""
        assert item.routed is not None
        self._items.appendleft(item)
        self._loaded += 1

    def head(self) -> Queued | None:
        return self._items[0] if self._items else None

    def pop(self) -> Queued:
        item = self._items.popleft()
        assert item.routed is not None, "a reference must be loaded before it is taken"
        self._loaded -= 1
        return item

    def references_to_load(self) -> list[int]:
        """Offsets of the references that may be loaded now, in order."""
        room = self._loaded_limit - self._loaded
        if room <= 0 or self._loaded == len(self._items):
            return []
        start = self._loaded
        return [self._items[i].offset for i in range(start, min(len(self._items), start + room))]

    def load(self, records: dict[int, EmailRouted]) -> None:
        """Fill in loaded references (in order, from the first still unloaded)."""
        for i in range(self._loaded, len(self._items)):
            routed = records.get(self._items[i].offset)
            if routed is None:
                break
            self._items[i].routed = routed
            self._loaded += 1

    def loaded_items(self) -> list[Queued]:
        return [self._items[i] for i in range(self._loaded)]

    def drop_references(self, offsets: set[int]) -> None:
        """Forget references whose messages can no longer be read."""
        self._items = deque(i for i in self._items if i.routed is not None or i.offset not in offsets)
