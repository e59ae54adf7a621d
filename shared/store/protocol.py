"""What a partitioned table is, and its two edges: where its changelog goes and where it comes from.

A table is co-partitioned with the topic its owner consumes: partition `p` of the table
holds what was written while handling partition `p` of that topic, and its changelog
records go to partition `p` of the changelog topic. Whoever owns an input partition in
the consumer group owns the table's partition, so no two replicas write the same one.

The owner calls `assign` from its consumer's rebalance listener. aiokafka runs the
listener beside the owner's own `getmany`, which can hand over records of a new
partition while its recovery is still under way: those must wait until `assign` has
returned (the partition is then in `assigned`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Set
from typing import NamedTuple, Protocol

from sendrail.errors import SendrailError


class PartitionNotAssigned(SendrailError):
    """The table was asked about a partition this process does not own (or not yet)."""


class ChangelogRecord(NamedTuple):
    offset: int
    key: bytes | None
    value: bytes | None
    """None is a tombstone: the key was deleted."""


ApplyRecords = Callable[[int, list[ChangelogRecord]], None]
"""Called with (partition, records) for each fetched batch, in offset order per partition."""


class ChangelogSink(Protocol):
    """Where a table stages its changelog records. `Publisher` is one: the records are then
    acknowledged together with the events of the batch that wrote them."""

    def stage_at(self, topic_name: str, partition: int, key: bytes, value: bytes) -> None: ...


class TombstoneSink(Protocol):
    """Where a table stages the deletion of a key: a record without a value, which compaction
    then removes from the changelog with every earlier record of the key."""

    def stage_tombstone_at(self, topic_name: str, partition: int, key: bytes) -> None: ...


class ChangelogReader(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def read(self, start_offsets: Mapping[int, int], apply: ApplyRecords) -> dict[int, int]:
        """Every record of these partitions from its start offset to where the partition ended
        when called; returns, per partition, the offset to start from next time."""
        ...


class PartitionedTable(Protocol):
    """Keys with values, per partition, forgotten `retention_ms` after they were written."""

    retention_ms: int

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def assign(self, partitions: Set[int]) -> None:
        """Recover each partition from its changelog; returns when they can be read."""
        ...

    def revoke(self, partitions: Set[int]) -> None: ...

    @property
    def assigned(self) -> frozenset[int]: ...

    def get(self, partition: int, key: bytes, now_ms: int) -> bytes | None:
        """The value, or None if it was never written or was written `retention_ms` or more ago."""
        ...

    def put(self, partition: int, key: bytes, value: bytes, now_ms: int, publisher: ChangelogSink) -> None:
        """Write locally and stage the changelog record on the same partition number."""
        ...

    def delete(self, partition: int, key: bytes, publisher: TombstoneSink) -> None:
        """Delete locally and stage the tombstone on the same partition number (also for a key
        that is not there: deleting is idempotent)."""
        ...

    def items(self, partition: int, now_ms: int, *, prefix: bytes = b"", start: bytes | None = None,
              stop: bytes | None = None, limit: int | None = None) -> list[tuple[bytes, bytes]]:
        """(key, value) of the entries whose key starts with `prefix`, is at least `start` and
        below `stop`, in the order of the keys' bytes; at most `limit`. Like `get`, it leaves
        out entries written `retention_ms` or more ago."""
        ...

    def expire(self, now_ms: int, *, max_entries: int | None = None) -> int:
        """Delete the assigned partitions' entries `retention_ms` or more old (at most
        `max_entries`, so a caller can yield between rounds); returns how many went. Locally
        only: the changelog forgets them by its own retention."""
        ...


def prefix_end(prefix: bytes) -> bytes | None:
    """The first key after every key that starts with `prefix` (None: there is none, the
    prefix is empty or all 0xff)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


def key_range(prefix: bytes, start: bytes | None, stop: bytes | None) -> tuple[bytes, bytes | None]:
    """The keys `items` reads, as [lower, upper): `upper` None is unbounded."""
    lower = max(prefix, start) if start is not None else prefix
    end = prefix_end(prefix) if prefix else None
    if stop is not None:
        end = stop if end is None else min(end, stop)
    return lower, end
