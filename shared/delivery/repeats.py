"""A request published again is the same send: the senders remember which send ids they finished.

Upstream systems retry what they are unsure of, and the router itself is at-least-once,
so the same send (one tenant, one idempotency key, hence one send id) can reach a
sender's topic more than once. Its mail is keyed by connection, so every copy of a send
lands on the same partition, whose one owner in the consumer group keeps a table of the
send ids finished from it (a `PartitionedTable`, co-partitioned with the topic and
recovered from its changelog). A copy whose send id is already there is not sent: it
gets a `duplicate` delivery event that names the original. Copies queued at the same
time never go out in one turn: the later waits for the next, when the first is finished.

Held mail is not finished: it comes back on the topic at a new offset when its connection
is reconnected, and is then the same send, not a repeat.
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


@dataclass(frozen=True)
class Original:
    """Where the first copy of a send is, and what became of it (or that it is still queued)."""

    partition: int
    offset: int
    status: str
    """`sent` or `failed`."""

    def describe(self, topic: str) -> str:
        return f"{topic}/{self.partition}/{self.offset}"


def _encode(offset: int, status: DeliveryStatus) -> bytes:
    return json.dumps({"offset": offset, "status": status.value}, separators=(",", ":")).encode()


def _decode(partition: int, raw: bytes) -> Original | None:
    """None for a value that is not one this table wrote (a hostile changelog record)."""
    try:
        fields = json.loads(raw)
        offset, status = fields["offset"], fields["status"]
    except (ValueError, TypeError, KeyError, RecursionError):
        return None
    if not isinstance(offset, int) or not isinstance(status, str):
        return None
    return Original(partition, offset, status)


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

    def original_of(self, partition: int, offset: int, send_id: uuid.UUID, now_ms: int) -> Original | None:
        """The finished earlier copy of this send, or None if the record at `offset` is the
        first (or is the first read again, after a restart or a rebalance)."""
        if partition not in self._table.assigned:
            return None
        raw = self._table.get(partition, send_id.bytes, now_ms)
        original = _decode(partition, raw) if raw is not None else None
        return original if original is not None and original.offset != offset else None

    def finished(self, partition: int, offset: int, send_id: uuid.UUID, status: DeliveryStatus,
                 now_ms: int, publisher: ChangelogSink) -> None:
        """Remembered with the turn's events (`publisher`), which are confirmed before the
        offset is committed."""
        if status in REMEMBERED_STATUSES and partition in self._table.assigned:
            self._table.put(partition, send_id.bytes, _encode(offset, status), now_ms, publisher)
