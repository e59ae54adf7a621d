"""One connection's queue of mail, in partition order, holding little in memory.

The first `loaded_limit` messages are kept decoded; the rest are only references
(partition offsets, a few bytes each), decoded when read again from Kafka as their turn
comes, so a backlog of any size lives in Kafka, not in RAM. Pure.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from sendrail.events import EmailRouted


@dataclass(slots=True)
class Queued:
    offset: int
    routed: EmailRouted | None
    """None while the message is only a reference."""
    last_try: str | None = None
    """Why its last attempt did not go (a temporary refusal), for the reason it expires with."""


class ConnectionQueue:
    """The decoded messages come first, then the references: a reference is a bare offset
    (no object of its own), so a queued message that is not loaded costs a deque slot."""

    def __init__(self, *, loaded_limit: int) -> None:
        self._loaded_limit = loaded_limit
        self._loaded: deque[Queued] = deque()
        self._references: deque[int] = deque()

    def __len__(self) -> int:
        return len(self._loaded) + len(self._references)

    @property
    def loaded(self) -> int:
        return len(self._loaded)

    def has_room_loaded(self) -> bool:
        """Whether a message appended now would be kept decoded."""
        return not self._references and len(self._loaded) < self._loaded_limit

    def push(self, offset: int, routed: EmailRouted) -> None:
        """Append; kept decoded only while everything before it is decoded too and there is room."""
        if self.has_room_loaded():
            self._loaded.append(Queued(offset, routed))
        else:
            self._references.append(offset)

    def push_reference(self, offset: int) -> None:
        self._references.append(offset)

    def push_front(self, item: Queued) -> None:
        """Back to the head, for a message whose attempt must be repeated."""
        assert item.routed is not None
        self._loaded.appendleft(item)

    def head(self) -> Queued | None:
        if self._loaded:
            return self._loaded[0]
        return Queued(self._references[0], None) if self._references else None

    def pop(self) -> Queued:
        assert self._loaded, "a reference must be loaded before it is taken"
        return self._loaded.popleft()

    def references_to_load(self) -> list[int]:
        """Offsets of the references that may be loaded now, in order."""
        room = self._loaded_limit - len(self._loaded)
        if room <= 0:
            return []
        return [self._references[i] for i in range(min(room, len(self._references)))]

    def load(self, records: dict[int, EmailRouted]) -> None:
        """Fill in loaded references (in order, from the first still unloaded)."""
        while self._references and (routed := records.get(self._references[0])) is not None:
            self._loaded.append(Queued(self._references.popleft(), routed))

    def loaded_items(self) -> list[Queued]:
        return list(self._loaded)

    def drop_references(self, offsets: set[int]) -> None:
        """Forget references that will not be sent (unreadable, or settled without sending)."""
        self._references = deque(o for o in self._references if o not in offsets)
