"""A request published again is the same send: the senders remember which send ids they finished.

Upstream systems retry what they are unsure of, and the router itself is at-least-once,
so the same send (one tenant, one idempotency key, hence one send id) can reach a
sender's topic more than once. Its mail is keyed by connection, so every copy of a send
lands on the same partition, whose one owner in the consumer group keeps a table of the
send ids finished from it (a `PartitionedTable`, co-partitioned with the topic and
recovered from its changelog). A copy whose send id is already there is not sent: it
gets a `duplicate` delivery event that names the original. Copies queued at the same
time never go out in one turn: the later waits for the next, when the first is finished.

Held mail is finished at its offset (not sent again if that offset is read again), but it
comes back on the topic at a new offset when its connection is reconnected, and is then
the same send, not a repeat.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

from sendrail.events import DeliveryStatus
from sendrail.store.protocol import ChangelogSink, PartitionedTable

REMEMBERED_STATUSES = frozenset({DeliveryStatus.SENT, DeliveryStatus.FAILED})
"""Outcomes a repeat must not undo: sent (never twice) and failed (the same request fails the
same way; the upstream system publishes a new one to try again)."""


@dataclass(frozen=True, slots=True)
class FinishedSend:
    """A record of the topic that needs nothing more: sent, failed, or held."""

    partition: int
    offset: int
    send_id: uuid.UUID
    status: DeliveryStatus


@dataclass(frozen=True, slots=True)
class Finished:
    """What the table knows of a send id: the offset that finished it, and how."""

    offset: int
    status: str

    @property
    def remembered(self) -> bool:
        """A copy elsewhere repeats this send (not so for held mail, which comes back)."""
        return self.status in REMEMBERED_STATUSES


def _encode(offset: int, status: DeliveryStatus) -> bytes:
    return json.dumps({"offset": offset, "status": status.value}, separators=(",", ":")).encode()


def _decode(raw: bytes) -> Finished | None:
    """None for a value that is not one this table wrote (a hostile changelog record)."""
    try:
        fields = json.loads(raw)
        offset, status = fields["offset"], fields["status"]
    except (ValueError, TypeError, KeyError, RecursionError):
        return None
    if not isinstance(offset, int) or not isinstance(status, str):
        return None
    return Finished(offset, status)


class RepeatedSends:
    """The sends one replica has finished, per partition of its topic."""

    def __init__(self, table: PartitionedTable) -> None:
        self._table = table

    async def assign(self, partitions: set[int]) -> None:
        """Recovers what these partitions' previous owners finished, before their mail is read."""
        await self._table.assign(partitions)

    def revoke(self, partitions: set[int]) -> None:
        self._table.revoke(partitions)

    def expire(self, now_ms: int, *, max_entries: int) -> None:
        """Forgets sends past the deduplication window, at most `max_entries` at a time."""
        self._table.expire(now_ms, max_entries=max_entries)

    def lookup(self, partition: int, send_id: uuid.UUID, now_ms: int) -> Finished | None:
        """How the send was finished from this partition, if it was (and the table is there)."""
        if partition not in self._table.assigned:
            return None
        raw = self._table.get(partition, send_id.bytes, now_ms)
        return _decode(raw) if raw is not None else None

    def record(self, finished: FinishedSend, now_ms: int, publisher: ChangelogSink) -> None:
        """Remembered with the turn's events (`publisher`), which are confirmed before the
        offset is committed. A record read again after a restart is then skipped, and a copy
        of a sent or failed send is a repeat."""
        if finished.partition in self._table.assigned:
            self._table.put(finished.partition, finished.send_id.bytes,
                            _encode(finished.offset, finished.status), now_ms, publisher)
