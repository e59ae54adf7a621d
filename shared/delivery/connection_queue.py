"""One connection's queue of mail, in partition order, holding little in memory.

The first `loaded_limit` messages are kept decoded; the rest are only references
(partition offsets, a few bytes each), decoded when read again from Kafka as their turn
comes, so a backlog of any size lives in Kafka, not in RAM. All queues of a sender share
one `DecodedBudget`: decoded messages cost kilobytes each, and 10,000 connections with a
full decoded head each would hold gigabytes. Pure.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from sendrail.events import EmailRouted


@dataclass
class DecodedBudget:
    """How many queued messages all of a sender's connections keep decoded together. Soft
    by what running turns hold: a turn reads what it may send whatever the budget says, and
    what it did not send goes back to being offsets if the connection then waits."""

    limit: int
    used: int = 0

    @property
    def spare(self) -> int:
        return max(self.limit - self.used, 0)


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

    def __init__(self, *, loaded_limit: int, budget: DecodedBudget | None = None) -> None:
        self._loaded_limit = loaded_limit
        self._budget = budget if budget is not None else DecodedBudget(limit=loaded_limit)
        self._loaded: deque[Queued] = deque()
        self._references: deque[int] = deque()

    def __len__(self) -> int:
        return len(self._loaded) + len(self._references)

    @property
    def loaded(self) -> int:
        return len(self._loaded)

    def has_room_loaded(self) -> bool:
        """Whether a message appended now would be kept decoded."""
        return (not self._references and len(self._loaded) < self._loaded_limit
                and self._budget.spare > 0)

    def push(self, offset: int, routed: EmailRouted) -> None:
        """Append; kept decoded only while everything before it is decoded too and there is room."""
        if self.has_room_loaded():
            self._loaded.append(Queued(offset, routed))
            self._budget.used += 1
        else:
            self._references.append(offset)

    def push_reference(self, offset: int) -> None:
        self._references.append(offset)

    def push_front(self, item: Queued) -> None:
        """Back to the head, for a message whose attempt must be repeated."""
        assert item.routed is not None
        self._loaded.appendleft(item)
        self._budget.used += 1

    def head(self) -> Queued | None:
        if self._loaded:
            return self._loaded[0]
        return Queued(self._references[0], None) if self._references else None

    def pop(self) -> Queued:
        assert self._loaded, "a reference must be loaded before it is taken"
        self._budget.used -= 1
        return self._loaded.popleft()

    def references_to_load(self, *, at_least: int = 0) -> list[int]:
        """Offsets of the references that may be loaded now, in order: up to the queue's limit
        while the budget has room, and `at_least` decoded in any case (what a turn sends)."""
        loaded = len(self._loaded)
        room = max(min(self._loaded_limit - loaded, self._budget.spare), at_least - loaded)
        return [self._references[i] for i in range(min(max(room, 0), len(self._references)))]

    def load(self, records: dict[int, EmailRouted]) -> None:
        """Fill in loaded references (in order, from the first still unloaded)."""
        while self._references and (routed := records.get(self._references[0])) is not None:
            self._loaded.append(Queued(self._references.popleft(), routed))
            self._budget.used += 1

    def shed(self) -> None:
        """While the budget is overspent, decoded messages from the tail become offsets again
        (read again when their turn comes); one tried before keeps its place, decoded, with
        the reason its last try failed."""
        while (self._budget.used > self._budget.limit and self._loaded
               and self._loaded[-1].last_try is None):
            self._references.appendleft(self._loaded.pop().offset)
            self._budget.used -= 1

    def release(self) -> None:
        """The queue is forgotten (its partition revoked): its decoded messages leave the budget."""
        self._budget.used -= len(self._loaded)
        self._loaded.clear()
        self._references.clear()

    def loaded_items(self) -> list[Queued]:
        return list(self._loaded)

    def drop_references(self, offsets: set[int]) -> None:
        """Forget references that will not be sent (unreadable, or settled without sending)."""
        self._references = deque(o for o in self._references if o not in offsets)
