"""Which offsets of a partition are finished, and so how far its consumer may commit.

A sender reads ahead of what it has sent (one connection's backlog must not hold up
another's mail on the same partition), so it can commit only up to the lowest offset
that is still unfinished. Pure.
"""

from __future__ import annotations

_GAP, _UNFINISHED, _FINISHED = 0, 1, 2


class PartitionProgress:
    """One byte per offset from the lowest unfinished one to the last read: a backlog of a
    million messages costs a megabyte here, not a set and a heap of a million integers."""

    def __init__(self) -> None:
        self._base = 0
        """The offset of `_states[0]`."""
        self._states = bytearray()
        self._unfinished = 0
        self._next_offset: int | None = None

    def consumed(self, offset: int) -> None:
        if self._next_offset is None:
            self._base = offset
        elif offset < self._base:  # read again from an earlier position
            self._states[:0] = bytes(self._base - offset)
            self._base = offset
        index = offset - self._base
        if index >= len(self._states):
            self._states.extend(bytes(index + 1 - len(self._states)))
        if self._states[index] != _UNFINISHED:
            self._states[index] = _UNFINISHED
            self._unfinished += 1
        if self._next_offset is None or offset >= self._next_offset:
            self._next_offset = offset + 1

    def finished(self, offset: int) -> None:
        index = offset - self._base
        if 0 <= index < len(self._states) and self._states[index] == _UNFINISHED:
            self._states[index] = _FINISHED
            self._unfinished -= 1

    @property
    def unfinished(self) -> int:
        return self._unfinished

    def committable(self) -> int | None:
        """The offset to commit: everything before it is finished (None: nothing read yet)."""
        first = self._states.find(_UNFINISHED)
        if first < 0:
            self._base += len(self._states)
            self._states.clear()
            return self._next_offset
        if first:
            del self._states[:first]
            self._base += first
        return self._base
