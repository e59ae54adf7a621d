"""The in-memory table: `RocksTable`'s behaviour without a disk, for tests of its callers."""

from __future__ import annotations

from collections.abc import Set

from sendrail.store.entry import decode_entry, encode_entry
from sendrail.store.protocol import (
    ChangelogReader,
    ChangelogRecord,
    ChangelogSink,
    PartitionNotAssigned,
    TombstoneSink,
    key_range,
)
from sendrail.store.recovery import SkippedRecords, changes


class MemoryTable:
    """Same contract as `RocksTable`: recovers from its changelog reader on assignment,
    keeps a revoked partition's entries to catch up on if it comes back, and forgets
    everything local on `stop` (a new process starts from the changelog)."""

    def __init__(self, *, changelog_topic: str, reader: ChangelogReader, retention_ms: int) -> None:
        if retention_ms <= 0:
            raise ValueError("retention_ms must be positive")
        self.retention_ms = retention_ms
        self.changelog_topic = changelog_topic
        self._reader = reader
        self._entries: dict[int, dict[bytes, tuple[int, bytes]]] = {}
        self._next_offsets: dict[int, int] = {}
        self._assigned: set[int] = set()
        self.skipped = SkippedRecords(changelog_topic)

    async def start(self) -> None:
        await self._reader.start()

    async def stop(self) -> None:
        self._assigned.clear()
        self._entries.clear()
        self._next_offsets.clear()
        await self._reader.stop()

    @property
    def assigned(self) -> frozenset[int]:
        return frozenset(self._assigned)

    async def assign(self, partitions: Set[int]) -> None:
        new = set(partitions) - self._assigned
        if not new:
            return
        self.skipped.new_recovery()
        for partition in new:
            self._entries.setdefault(partition, {})
        ends = await self._reader.read({p: self._next_offsets.get(p, 0) for p in new}, self._apply)
        self._next_offsets.update(ends)
        self._assigned |= new

    def revoke(self, partitions: Set[int]) -> None:
        self._assigned -= set(partitions)

    def get(self, partition: int, key: bytes, now_ms: int) -> bytes | None:
        found = self._partition(partition).get(key)
        if found is None or now_ms - found[0] >= self.retention_ms:
            return None
        return found[1]

    def put(self, partition: int, key: bytes, value: bytes, now_ms: int, publisher: ChangelogSink) -> None:
        entries = self._partition(partition)
        entry = encode_entry(value, now_ms)
        entries[key] = (now_ms, value)
        publisher.stage_at(self.changelog_topic, partition, key, entry)

    def delete(self, partition: int, key: bytes, publisher: TombstoneSink) -> None:
        self._partition(partition).pop(key, None)
        publisher.stage_tombstone_at(self.changelog_topic, partition, key)

    def items(self, partition: int, now_ms: int, *, prefix: bytes = b"", start: bytes | None = None,
              stop: bytes | None = None, limit: int | None = None) -> list[tuple[bytes, bytes]]:
        entries = self._partition(partition)
        lower, upper = key_range(prefix, start, stop)
        found: list[tuple[bytes, bytes]] = []
        for key in sorted(k for k in entries if k >= lower and (upper is None or k < upper)):
            if limit is not None and len(found) >= limit:
                break
            written_ms, value = entries[key]
            if now_ms - written_ms < self.retention_ms:
                found.append((key, value))
        return found

    def expire(self, now_ms: int, *, max_entries: int | None = None) -> int:
        cutoff_ms = now_ms - self.retention_ms
        deleted = 0
        for partition in sorted(self._assigned):
            entries = self._entries[partition]
            for key in [k for k, (written_ms, _) in entries.items() if written_ms <= cutoff_ms]:
                if max_entries is not None and deleted >= max_entries:
                    return deleted
                del entries[key]
                deleted += 1
        return deleted

    def _partition(self, partition: int) -> dict[bytes, tuple[int, bytes]]:
        if partition not in self._assigned:
            raise PartitionNotAssigned(f"partition {partition} of {self.changelog_topic} is not assigned")
        return self._entries[partition]

    def _apply(self, partition: int, records: list[ChangelogRecord]) -> None:
        entries = self._entries[partition]
        for change in changes(partition, records, self.skipped):
            if change.entry is None:
                entries.pop(change.key, None)
            else:
                entries[change.key] = decode_entry(change.entry)
