"""Which offsets of a partition are finished, and so how far its consumer may commit.

A sender reads ahead of what it has sent (one connection's backlog must not hold up
another's mail on the same partition), so it can commit only up to the lowest offset
that is still unfinished. Pure.
"""

from __future__ import annotations

import heapq


class PartitionProgress:
    def __init__(self) -> None:
        self._unfinished: set[int] = set()
        self._heap: list[int] = []
        self._next_offset: int | None = None

    def consumed(self, offset: int) -> None:
        self._unfinished.add(offset)
        heapq.heappush(self._heap, offset)
        if self._next_offset is None or offset >= self._next_offset:
            self._next_offset = offset + 1

    def finished(self, offset: int) -> None:
        self._unfinished.discard(offset)

    @property
    def unfinished(self) -> int:
        return len(self._unfinished)

    def committable(self) -> int | None:
        """The offset to commit: everything before it is finished (None: nothing read yet)."""
        while self._heap and self._heap[0] not in self._unfinished:
            heapq.heappop(self._heap)
        return self._heap[0] if self._heap else self._next_offset
