"""The table on RocksDB: one database per assigned partition, in a directory of this process.

Each partition's database has two column families:

    default:  key -> the entry (format byte, write time, value)
    expiry:   write time (8 bytes, big-endian) + key -> b""

so `expire` reads only what is old enough to go, however many entries there are, and
point lookups consult bloom filters of the entries alone. A key written again leaves
its older expiry key behind; `expire` deletes an entry only through the expiry key of
its own write time, and drops stale expiry keys as it passes them. A deleted key takes
its expiry key with it.

The database is a cache of the changelog, never the only copy: it has no write-ahead
log, a new process starts empty and recovers from the changelog, and a partition
revoked and assigned again reads only what was written to the changelog since.
"""

from __future__ import annotations

import struct
from collections.abc import Set
from dataclasses import dataclass
from pathlib import Path

import rocksdict
import structlog

from sendrail.store.entry import HEADER_BYTES, encode_entry, written_at_ms
from sendrail.store.protocol import (
    ChangelogReader,
    ChangelogRecord,
    ChangelogSink,
    PartitionNotAssigned,
    TombstoneSink,
    key_range,
)
from sendrail.store.recovery import SkippedRecords, changes
from sendrail.store.state_dir import ProcessStateDir

log = structlog.get_logger(__name__)

_EXPIRY = "expiry"
_TIME = struct.Struct(">Q")
_MIB = 1024 * 1024


@dataclass(frozen=True)
class RocksMemory:
    """What RocksDB may hold in memory, for all of a process's partitions together: at most
    `block_cache_bytes + write_buffers_bytes` (48 MiB by default), however many entries.

    Index and filter blocks are kept in the block cache, not beside it, so they do not grow
    with the entries; they are partitioned (RocksDB's "partitioned index/filters"), so a
    lookup whose filter is not cached reads one 4 KiB partition, not a file's whole filter.
    10 million send ids take about 12 MiB of bloom filters and 460 MiB on disk.
    """

    block_cache_bytes: int = 32 * _MIB
    """Shared by every partition's database: data, index and bloom filter blocks."""
    write_buffers_bytes: int = 16 * _MIB
    """All memtables together; past it, the largest is flushed to disk early."""
    memtable_bytes: int = 4 * _MIB
    """One column family's memtable before it is flushed (at most two at a time)."""
    max_open_files: int = 256
    """Per partition's database; beyond it, files are reopened as they are read."""


class _Partition:
    """One partition's database and its expiry column family."""

    def __init__(self, path: Path, entries: rocksdict.Options, expiry: rocksdict.Options) -> None:
        self.db = rocksdict.Rdict(str(path), entries, column_families={_EXPIRY: expiry})
        self.expiry = self.db.get_column_family(_EXPIRY)
        self.expiry_handle = self.db.get_column_family_handle(_EXPIRY)

    def close(self, *, flush: bool) -> None:
        if flush:  # no write-ahead log: the memtables reach disk here, or never
            self.db.flush()
            self.expiry.flush()
        # The column family's objects go first: dropped after the database is closed,
        # rocksdict takes a second to let go of them.
        del self.expiry, self.expiry_handle
        self.db.close()


class RocksTable:
    """A `PartitionedTable` on RocksDB (rocksdict), recovered from a Kafka changelog."""

    def __init__(self, *, changelog_topic: str, reader: ChangelogReader, retention_ms: int,
                 state_dir: Path, memory: RocksMemory | None = None) -> None:
        if retention_ms <= 0:
            raise ValueError("retention_ms must be positive")
        self.retention_ms = retention_ms
        self.changelog_topic = changelog_topic
        self._reader = reader
        self._memory = memory or RocksMemory()
        self._dir = ProcessStateDir(state_dir, changelog_topic)
        self._cache = rocksdict.Cache(self._memory.block_cache_bytes)
        self._write_buffers = rocksdict.WriteBufferManager(self._memory.write_buffers_bytes, False)
        self._write = rocksdict.WriteOptions()
        # rocksdict's stub declares `disable_wal` a method; it is a property.
        self._write.disable_wal = True  # type: ignore[method-assign,assignment]
        self._partitions: dict[int, _Partition] = {}
        self._next_offsets: dict[int, int] = {}
        self._assigned: set[int] = set()
        self.skipped = SkippedRecords(changelog_topic)

    async def start(self) -> None:
        self._dir.claim()
        await self._reader.start()

    async def stop(self) -> None:
        for partition in self._partitions.values():
            partition.close(flush=False)
        self._partitions.clear()
        self._assigned.clear()
        self._next_offsets.clear()
        try:
            await self._reader.stop()
        finally:
            self._dir.release()

    @property
    def assigned(self) -> frozenset[int]:
        return frozenset(self._assigned)

    @property
    def path(self) -> Path:
        return self._dir.path

    @property
    def cached_bytes(self) -> int:
        """What the block cache holds now, for all partitions."""
        return self._cache.get_usage()

    async def assign(self, partitions: Set[int]) -> None:
        new = set(partitions) - self._assigned
        if not new:
            return
        for partition in new:
            if partition not in self._partitions:
                self._partitions[partition] = self._open(partition)
        self.skipped.new_recovery()
        skipped_before = self.skipped.total
        starts = {p: self._next_offsets.get(p, 0) for p in new}
        ends = await self._reader.read(starts, self._apply)
        self._next_offsets.update(ends)
        self._assigned |= new
        log.info("table partitions recovered", topic=self.changelog_topic, partitions=sorted(new),
                 records=sum(ends[p] - starts[p] for p in new),
                 skipped=self.skipped.total - skipped_before)

    def revoke(self, partitions: Set[int]) -> None:
        """Closes their databases but keeps them: if a partition comes back, only what the
        changelog received meanwhile is read."""
        for partition in set(partitions) & self._assigned:
            self._assigned.discard(partition)
            self._partitions.pop(partition).close(flush=True)

    def get(self, partition: int, key: bytes, now_ms: int) -> bytes | None:
        raw = self._partition(partition).db.get(key)
        if raw is None or now_ms - written_at_ms(raw) >= self.retention_ms:
            return None
        return bytes(raw[HEADER_BYTES:])

    def put(self, partition: int, key: bytes, value: bytes, now_ms: int, publisher: ChangelogSink) -> None:
        tables = self._partition(partition)
        entry = encode_entry(value, now_ms)
        tables.expiry.put(_TIME.pack(now_ms) + key, b"", self._write)
        tables.db.put(key, entry, self._write)
        publisher.stage_at(self.changelog_topic, partition, key, entry)

    def delete(self, partition: int, key: bytes, publisher: TombstoneSink) -> None:
        tables = self._partition(partition)
        batch = rocksdict.WriteBatch(raw_mode=True)
        stored = tables.db.get(key)
        if stored is not None:
            batch.delete(_TIME.pack(written_at_ms(stored)) + key, tables.expiry_handle)
        batch.delete(key)
        tables.db.write(batch, self._write)
        publisher.stage_tombstone_at(self.changelog_topic, partition, key)

    def items(self, partition: int, now_ms: int, *, prefix: bytes = b"", start: bytes | None = None,
              stop: bytes | None = None, limit: int | None = None) -> list[tuple[bytes, bytes]]:
        tables = self._partition(partition)
        lower, upper = key_range(prefix, start, stop)
        if upper is not None and lower >= upper:
            return []
        read = rocksdict.ReadOptions()  # holds the bound: it must outlive the cursor
        if upper is not None:
            read.set_iterate_upper_bound(upper)
        cursor = tables.db.iter(read)
        cursor.seek(lower)
        found: list[tuple[bytes, bytes]] = []
        while cursor.valid() and (limit is None or len(found) < limit):
            raw: bytes = cursor.value()
            if now_ms - written_at_ms(raw) < self.retention_ms:
                found.append((bytes(cursor.key()), bytes(raw[HEADER_BYTES:])))
            cursor.next()
        del cursor
        return found

    def expire(self, now_ms: int, *, max_entries: int | None = None) -> int:
        cutoff_ms = now_ms - self.retention_ms
        if cutoff_ms < 0:
            return 0
        deleted = 0
        for partition in sorted(self._assigned):
            deleted += self._expire(self._partitions[partition], cutoff_ms,
                                    None if max_entries is None else max_entries - deleted)
            if max_entries is not None and deleted >= max_entries:
                break
        return deleted

    def _expire(self, tables: _Partition, cutoff_ms: int, max_entries: int | None) -> int:
        read = rocksdict.ReadOptions()
        read.set_iterate_upper_bound(_TIME.pack(cutoff_ms + 1))
        cursor = tables.expiry.iter(read)
        cursor.seek_to_first()
        batch = rocksdict.WriteBatch(raw_mode=True)
        deleted = 0
        while cursor.valid() and (max_entries is None or deleted < max_entries):
            expiry_key: bytes = cursor.key()
            key = expiry_key[_TIME.size:]
            stored = tables.db.get(key)
            if stored is not None and written_at_ms(stored) == _TIME.unpack_from(expiry_key)[0]:
                batch.delete(key)
                deleted += 1
            batch.delete(expiry_key, tables.expiry_handle)
            cursor.next()
        del cursor
        tables.db.write(batch, self._write)
        return deleted

    def _partition(self, partition: int) -> _Partition:
        if partition not in self._assigned:
            raise PartitionNotAssigned(f"partition {partition} of {self.changelog_topic} is not assigned")
        return self._partitions[partition]

    def _open(self, partition: int) -> _Partition:
        return _Partition(self._dir.path / f"partition-{partition}", self._options(bloom=True),
                          self._options(bloom=False))

    def _options(self, *, bloom: bool) -> rocksdict.Options:
        memory = self._memory
        table = rocksdict.BlockBasedOptions()
        table.set_block_cache(self._cache)
        if bloom:  # the expiry keys are only ever scanned in order
            table.set_bloom_filter(10, False)  # ~1% false positives: a miss rarely reads a block
        table.set_index_type(rocksdict.BlockBasedIndexType.two_level_index_search())
        table.set_partition_filters(True)
        table.set_metadata_block_size(4096)
        table.set_cache_index_and_filter_blocks(True)
        table.set_pin_top_level_index_and_filter(True)
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
        options = rocksdict.Options(raw_mode=True)
        options.create_if_missing(True)
        options.create_missing_column_families(True)
        options.set_block_based_table_factory(table)
        options.set_write_buffer_manager(self._write_buffers)
        options.set_write_buffer_size(memory.memtable_bytes)
        options.set_max_write_buffer_number(2)
        options.set_max_open_files(memory.max_open_files)
        options.set_max_background_jobs(2)
        return options

    def _apply(self, partition: int, records: list[ChangelogRecord]) -> None:
        tables = self._partitions[partition]
        batch = rocksdict.WriteBatch(raw_mode=True)
        written: dict[bytes, int] = {}
        """This batch's write times, which the database does not show before the batch is written."""
        for change in changes(partition, records, self.skipped):
            if change.entry is None:
                at_ms = written.pop(change.key, None)
                if at_ms is None and (stored := tables.db.get(change.key)) is not None:
                    at_ms = written_at_ms(stored)
                if at_ms is not None:
                    batch.delete(_TIME.pack(at_ms) + change.key, tables.expiry_handle)
                batch.delete(change.key)
            else:
                written[change.key] = change.written_at_ms
                batch.put(_TIME.pack(change.written_at_ms) + change.key, b"", tables.expiry_handle)
                batch.put(change.key, change.entry)
        tables.db.write(batch, self._write)
