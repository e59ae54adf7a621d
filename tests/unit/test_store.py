"""The partitioned table's contract, run against the in-memory table and the RocksDB one.

Time is an argument (`now_ms`), so a week's retention is tested by passing a later
number; the changelog is the in-memory one, so a restart or a reassignment recovers
from exactly the records the test put there.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from sendrail.store.changelog import ChangelogWriter, MemoryChangelog
from sendrail.store.entry import decode_entry, encode_entry
from sendrail.store.memory import MemoryTable
from sendrail.store.protocol import PartitionedTable, PartitionNotAssigned, prefix_end
from sendrail.store.recovery import LOGGED_PER_RECOVERY
from sendrail.store.rocks import RocksTable
from sendrail.store.state_dir import CREATING_GRACE_S, LOCK_FILE, ProcessStateDir, remove_dead

TOPIC = "sendrail.outbound.smtp.send-ids"
DAY_MS = 24 * 3600 * 1000
RETENTION_MS = 7 * DAY_MS
T0 = 1_780_000_000_000


@dataclass
class Harness:
    kind: str
    changelog: MemoryChangelog
    state_dir: Path
    table: PartitionedTable

    def new_table(self) -> PartitionedTable:
        """Another process's table over the same changelog (a restart, or the next owner)."""
        return make_table(self.kind, self.changelog, self.state_dir)


def make_table(kind: str, changelog: MemoryChangelog, state_dir: Path) -> PartitionedTable:
    if kind == "memory":
        return MemoryTable(changelog_topic=TOPIC, reader=changelog, retention_ms=RETENTION_MS)
    return RocksTable(changelog_topic=TOPIC, reader=changelog, retention_ms=RETENTION_MS,
                      state_dir=state_dir)


@pytest.fixture(params=["memory", "rocks"])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    changelog = MemoryChangelog(TOPIC)
    table = make_table(request.param, changelog, tmp_path)
    await table.start()
    try:
        yield Harness(request.param, changelog, tmp_path, table)
    finally:
        await table.stop()


# --- reading and writing -----------------------------------------------------------------


async def test_a_value_put_is_read_back_on_its_partition_only(harness: Harness) -> None:
    table = harness.table
    await table.assign({0, 1})

    table.put(0, b"send-1", b"done", T0, harness.changelog)

    assert table.get(0, b"send-1", T0) == b"done"
    assert table.get(1, b"send-1", T0) is None
    assert table.get(0, b"send-2", T0) is None
    assert table.assigned == {0, 1}


async def test_put_stages_its_changelog_record_on_the_same_partition_with_its_write_time(
    harness: Harness,
) -> None:
    await harness.table.assign({4})

    harness.table.put(4, b"send-1", b"v", T0 + 5, harness.changelog)

    [record] = harness.changelog.records[4]
    assert record.key == b"send-1"
    assert record.value is not None and decode_entry(record.value) == (T0 + 5, b"v")
    assert all(not records for p, records in harness.changelog.records.items() if p != 4)


async def test_an_entry_is_absent_once_the_retention_has_passed(harness: Harness) -> None:
    table = harness.table
    await table.assign({0})
    table.put(0, b"send-1", b"", T0, harness.changelog)

    assert table.get(0, b"send-1", T0 + RETENTION_MS - 1) == b""
    assert table.get(0, b"send-1", T0 + RETENTION_MS) is None


async def test_writing_again_renews_the_entry(harness: Harness) -> None:
    table = harness.table
    await table.assign({0})
    table.put(0, b"send-1", b"first", T0, harness.changelog)
    table.put(0, b"send-1", b"second", T0 + DAY_MS, harness.changelog)

    assert table.get(0, b"send-1", T0 + RETENTION_MS) == b"second"
    assert table.expire(T0 + RETENTION_MS) == 0
    assert table.get(0, b"send-1", T0 + RETENTION_MS) == b"second"
    assert table.expire(T0 + DAY_MS + RETENTION_MS) == 1
    assert table.get(0, b"send-1", T0) is None


async def test_a_partition_not_assigned_is_refused(harness: Harness) -> None:
    table = harness.table
    await table.assign({0})

    with pytest.raises(PartitionNotAssigned):
        table.get(1, b"send-1", T0)
    with pytest.raises(PartitionNotAssigned):
        table.put(1, b"send-1", b"", T0, harness.changelog)
    assert harness.changelog.records[1] == []


# --- expiry ------------------------------------------------------------------------------


async def test_expire_deletes_what_is_old_enough_and_keeps_the_rest(harness: Harness) -> None:
    table = harness.table
    await table.assign({0, 1})
    for day in range(10):
        table.put(day % 2, f"send-{day}".encode(), b"", T0 + day * DAY_MS, harness.changelog)

    now_ms = T0 + 9 * DAY_MS + 1
    assert table.expire(now_ms) == 3  # days 0, 1 and 2: at least seven days old

    for day in range(10):
        expected = None if day < 3 else b""
        assert table.get(day % 2, f"send-{day}".encode(), now_ms) == expected
        assert table.get(day % 2, f"send-{day}".encode(), T0) == expected
    assert table.expire(now_ms) == 0


async def test_expire_stops_at_max_entries_and_continues_on_the_next_call(harness: Harness) -> None:
    table = harness.table
    await table.assign({0, 1, 2})
    for n in range(30):
        table.put(n % 3, f"send-{n}".encode(), b"", T0 + n, harness.changelog)

    later_ms = T0 + RETENTION_MS + 100
    assert table.expire(later_ms, max_entries=12) == 12
    assert table.expire(later_ms, max_entries=12) == 12
    assert table.expire(later_ms, max_entries=12) == 6
    assert table.expire(later_ms) == 0


async def test_expire_before_the_first_retention_deletes_nothing(harness: Harness) -> None:
    await harness.table.assign({0})
    harness.table.put(0, b"send-1", b"", 5, harness.changelog)

    assert harness.table.expire(10) == 0
    assert harness.table.get(0, b"send-1", 10) == b""


# --- iterating and deleting --------------------------------------------------------------


async def test_items_come_in_key_order_within_a_prefix_and_bounds(harness: Harness) -> None:
    table = harness.table
    await table.assign({0, 1})
    for key in (b"b/2", b"a/9", b"b/1", b"b", b"c/1", b"b/3", b"b\xff"):
        table.put(0, key, key.upper(), T0, harness.changelog)
    table.put(1, b"b/0", b"elsewhere", T0, harness.changelog)

    assert [k for k, _ in table.items(0, T0, prefix=b"b/")] == [b"b/1", b"b/2", b"b/3"]
    assert table.items(0, T0, prefix=b"b/", limit=2) == [(b"b/1", b"B/1"), (b"b/2", b"B/2")]
    assert [k for k, _ in table.items(0, T0, prefix=b"b/", start=b"b/2")] == [b"b/2", b"b/3"]
    assert [k for k, _ in table.items(0, T0, prefix=b"b/", stop=b"b/3")] == [b"b/1", b"b/2"]
    assert [k for k, _ in table.items(0, T0, prefix=b"b")] == [b"b", b"b/1", b"b/2", b"b/3", b"b\xff"]
    assert [k for k, _ in table.items(0, T0, start=b"b/3", stop=b"c/1")] == [b"b/3", b"b\xff"]
    assert len(table.items(0, T0)) == 7
    assert table.items(0, T0, prefix=b"b/", start=b"c") == []
    assert table.items(0, T0, prefix=b"z") == []
    assert table.items(1, T0, prefix=b"b/") == [(b"b/0", b"elsewhere")]


async def test_items_leave_out_what_is_past_the_retention(harness: Harness) -> None:
    table = harness.table
    await table.assign({0})
    table.put(0, b"k/old", b"", T0, harness.changelog)
    table.put(0, b"k/new", b"", T0 + DAY_MS, harness.changelog)

    assert [k for k, _ in table.items(0, T0 + RETENTION_MS, prefix=b"k/")] == [b"k/new"]
    assert table.items(0, T0 + RETENTION_MS, prefix=b"k/", limit=1) == [(b"k/new", b"")]


async def test_delete_stages_a_tombstone_on_its_partition_and_is_idempotent(harness: Harness) -> None:
    table = harness.table
    await table.assign({0, 3})
    table.put(3, b"k/1", b"v", T0, harness.changelog)
    table.put(3, b"k/2", b"v", T0, harness.changelog)

    table.delete(3, b"k/1", harness.changelog)
    table.delete(3, b"k/never", harness.changelog)

    assert table.get(3, b"k/1", T0) is None
    assert [k for k, _ in table.items(3, T0)] == [b"k/2"]
    assert [(r.key, r.value) for r in harness.changelog.records[3][2:]] == [(b"k/1", None), (b"k/never", None)]
    assert harness.changelog.records[0] == []
    assert table.expire(T0 + RETENTION_MS) == 1  # only k/2 was left to expire
    with pytest.raises(PartitionNotAssigned):
        table.delete(1, b"k/2", harness.changelog)
    with pytest.raises(PartitionNotAssigned):
        table.items(1, T0)


async def test_a_deletion_is_recovered_from_the_changelog(harness: Harness) -> None:
    await harness.table.assign({0})
    for n in range(3):
        harness.table.put(0, f"k/{n}".encode(), b"v", T0, harness.changelog)
    harness.table.delete(0, b"k/1", harness.changelog)
    await harness.table.stop()

    restarted = harness.new_table()
    await restarted.start()
    try:
        await restarted.assign({0})
        assert [k for k, _ in restarted.items(0, T0)] == [b"k/0", b"k/2"]
    finally:
        await restarted.stop()


async def test_rocks_deletes_take_their_expiry_keys_with_them(tmp_path: Path) -> None:
    """Else every deleted entry would leave a key behind until its retention passed."""
    changelog = MemoryChangelog(TOPIC)
    table = make_table("rocks", changelog, tmp_path)
    await table.start()
    assert isinstance(table, RocksTable)
    try:
        await table.assign({0})
        table.put(0, b"k/1", b"v", T0, changelog)
        table.put(0, b"k/2", b"v", T0, changelog)
        table.delete(0, b"k/1", changelog)
        assert len(list(table._partitions[0].expiry.keys())) == 1
        table.revoke({0})
        changelog.append(0, b"k/3", encode_entry(b"v", T0))
        changelog.append(0, b"k/3", None)                  # written and deleted in one batch
        changelog.append(0, b"k/2", None)                  # deleted after an earlier batch
        await table.assign({0})
        assert list(table._partitions[0].expiry.keys()) == []
        assert table.items(0, T0) == []
    finally:
        await table.stop()


async def test_the_changelog_writer_sends_tombstones_on_the_chosen_partition_in_order() -> None:
    class Producer:
        def __init__(self) -> None:
            self.sent: list[tuple[str, bytes | None, bytes, int]] = []

        async def send(self, topic: str, value: bytes | None, *, key: bytes, partition: int) -> Any:
            self.sent.append((topic, value, key, partition))
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done

    producer = Producer()
    writer = ChangelogWriter(producer)  # type: ignore[arg-type]
    writer.stage_at(TOPIC, 4, b"k/1", b"v")
    writer.stage_tombstone_at(TOPIC, 4, b"k/1")
    assert producer.sent == []  # nothing before `confirm`

    await writer.confirm()
    await writer.confirm()

    assert producer.sent == [(TOPIC, b"v", b"k/1", 4), (TOPIC, None, b"k/1", 4)]


@pytest.mark.parametrize(("prefix", "end"), [
    (b"a", b"b"), (b"a/c\x00", b"a/c\x01"), (b"a\xff", b"b"), (b"\xff\xff", None), (b"", None),
])
def test_the_end_of_a_prefix_is_the_first_key_past_it(prefix: bytes, end: bytes | None) -> None:
    assert prefix_end(prefix) == end


# --- recovery ----------------------------------------------------------------------------


async def test_a_restarted_table_recovers_its_partitions_from_the_changelog(harness: Harness) -> None:
    await harness.table.assign({0, 3})
    harness.table.put(0, b"send-1", b"a", T0, harness.changelog)
    harness.table.put(3, b"send-2", b"b", T0 + 1, harness.changelog)
    await harness.table.stop()

    restarted = harness.new_table()
    await restarted.start()
    try:
        await restarted.assign({0, 3})
        assert restarted.get(0, b"send-1", T0 + 2) == b"a"
        assert restarted.get(3, b"send-2", T0 + 2) == b"b"
        assert restarted.get(0, b"send-2", T0 + 2) is None
        assert restarted.get(0, b"send-1", T0 + RETENTION_MS) is None  # recovered with its time
        assert restarted.expire(T0 + RETENTION_MS) == 1
    finally:
        await restarted.stop()


async def test_the_next_owner_sees_what_the_previous_one_wrote(harness: Harness) -> None:
    other = harness.new_table()
    await other.start()
    try:
        await harness.table.assign({2})
        harness.table.put(2, b"send-1", b"", T0, harness.changelog)
        harness.table.revoke({2})

        await other.assign({2})
        assert other.get(2, b"send-1", T0) == b""
        other.put(2, b"send-2", b"", T0, harness.changelog)
        other.revoke({2})

        await harness.table.assign({2})  # back: catches up on what the other wrote meanwhile
        assert harness.table.get(2, b"send-2", T0) == b""
        assert harness.table.get(2, b"send-1", T0) == b""
    finally:
        await other.stop()


async def test_a_partition_assigned_again_reads_from_where_its_last_recovery_ended(
    harness: Harness,
) -> None:
    for n in range(5):
        harness.changelog.append(1, f"send-{n}".encode(), encode_entry(b"", T0))
    await harness.table.assign({1})
    harness.table.put(1, b"send-5", b"", T0, harness.changelog)
    harness.table.revoke({1})
    with pytest.raises(PartitionNotAssigned):
        harness.table.get(1, b"send-0", T0)
    harness.changelog.append(1, b"send-9", encode_entry(b"", T0))  # the next owner's

    await harness.table.assign({1})

    # Its own write (offset 5) is read again: it does not know the offsets of its writes.
    assert harness.changelog.reads == [{1: 0}, {1: 5}]
    assert all(harness.table.get(1, f"send-{n}".encode(), T0) == b"" for n in (0, 1, 2, 3, 4, 5, 9))


async def test_assigning_a_partition_already_assigned_reads_nothing(harness: Harness) -> None:
    await harness.table.assign({0})
    await harness.table.assign({0})
    assert harness.changelog.reads == [{0: 0}]


async def test_hostile_changelog_records_are_skipped_and_counted_never_fatal(harness: Harness) -> None:
    changelog = harness.changelog
    good = encode_entry(b"ok", T0)
    changelog.append(0, b"send-1", good)
    changelog.append(0, None, good)                                   # no key
    changelog.append(0, b"", good)                                    # empty key
    changelog.append(0, b"send-2", b"")                               # empty value
    changelog.append(0, b"send-3", b"\x01\x00\x00")                   # cut short
    changelog.append(0, b"send-4", b"\x07" + good[1:])                # unknown format
    changelog.append(0, b"send-5", b"\x01" + b"\xff" * 8 + b"x")      # time out of range
    changelog.append(0, b"send-6", os.urandom(3))
    changelog.append(0, b"send-7", good)
    changelog.append(0, b"send-8", good)
    changelog.append(0, b"send-8", None)                              # a deletion

    await harness.table.assign({0})

    table = harness.table
    assert table.get(0, b"send-1", T0) == b"ok"
    assert table.get(0, b"send-7", T0) == b"ok"
    assert table.get(0, b"send-8", T0) is None
    for n in range(2, 7):
        assert table.get(0, f"send-{n}".encode(), T0) is None
    assert isinstance(table, MemoryTable | RocksTable)
    assert table.skipped.total == 7


async def test_a_flood_of_bad_records_logs_only_the_first_few(harness: Harness) -> None:
    for n in range(500):
        harness.changelog.append(0, f"send-{n}".encode(), b"junk")
    harness.changelog.append(0, b"send-ok", encode_entry(b"", T0))

    with capture_logs() as logs:
        await harness.table.assign({0})

    assert harness.table.get(0, b"send-ok", T0) == b""
    skipped = [e for e in logs if e["event"] == "changelog record skipped"]
    assert len(skipped) == LOGGED_PER_RECOVERY
    assert skipped[0]["offset"] == 0 and skipped[0]["topic"] == TOPIC
    assert isinstance(harness.table, MemoryTable | RocksTable)
    assert harness.table.skipped.total == 500


# --- the entry format --------------------------------------------------------------------


@pytest.mark.parametrize("written_at_ms", [0, 1, T0, 2**63 - 1])
def test_an_entry_carries_its_write_time_and_value(written_at_ms: int) -> None:
    assert decode_entry(encode_entry(b"\x00value", written_at_ms)) == (written_at_ms, b"\x00value")


@pytest.mark.parametrize("written_at_ms", [-1, 2**63])
def test_a_write_time_out_of_range_is_refused(written_at_ms: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        encode_entry(b"", written_at_ms)


# --- RocksDB's local state ---------------------------------------------------------------


async def test_rocks_keeps_its_state_in_a_directory_of_its_own_and_removes_it_on_stop(
    tmp_path: Path,
) -> None:
    changelog = MemoryChangelog(TOPIC)
    first = make_table("rocks", changelog, tmp_path)
    second = make_table("rocks", changelog, tmp_path)  # a second replica on the same host
    await first.start()
    await second.start()
    assert isinstance(first, RocksTable) and isinstance(second, RocksTable)
    try:
        await first.assign({0})
        await second.assign({1})
        first.put(0, b"send-1", b"", T0, changelog)
        first_path = first.path
        assert first_path != second.path and first_path.parent == second.path.parent == tmp_path
        assert (first_path / "partition-0").is_dir()
    finally:
        await first.stop()
    assert os.listdir(tmp_path) == [second.path.name]
    await second.stop()
    assert os.listdir(tmp_path) == []


async def test_rocks_entries_survive_a_revoke_on_disk(tmp_path: Path) -> None:
    """Without a write-ahead log, a revoked partition's memtable must reach disk before its
    database closes; a reader that would return nothing proves it."""

    class Silent(MemoryChangelog):
        async def read(self, start_offsets, apply):
            self.reads.append(dict(start_offsets))
            return {p: len(self.records[p]) for p in start_offsets}

    changelog = Silent(TOPIC)
    table = RocksTable(changelog_topic=TOPIC, reader=changelog, retention_ms=RETENTION_MS,
                       state_dir=tmp_path)
    await table.start()
    try:
        await table.assign({0})
        for n in range(1000):
            table.put(0, f"send-{n}".encode(), b"x", T0, changelog)
        table.revoke({0})
        await table.assign({0})
        assert all(table.get(0, f"send-{n}".encode(), T0) == b"x" for n in range(1000))
        assert len(changelog.reads) == 2
    finally:
        await table.stop()


def _dead_directory(root: Path, name: str) -> Path:
    path = root / name
    path.mkdir(parents=True)
    (path / LOCK_FILE).write_bytes(b"")
    (path / "partition-0").mkdir()
    return path


def test_directories_of_dead_processes_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    live = ProcessStateDir(tmp_path, TOPIC)
    live_path = live.claim()  # holds its lock, as a running process does
    dead = _dead_directory(tmp_path, f"{TOPIC}.pid123.0a1b2c3d")
    foreign = tmp_path / "not-ours"
    foreign.mkdir()
    lookalike = _dead_directory(tmp_path, "no-pid-in-its-name.0a1b2c3d")
    old_half_made = tmp_path / f"{TOPIC}.pid7.00000000.new"
    old_half_made.mkdir()
    young_half_made = tmp_path / f"{TOPIC}.pid8.11111111.new"
    young_half_made.mkdir()
    os.utime(old_half_made, (time.time() - CREATING_GRACE_S - 1,) * 2)
    try:
        removed = remove_dead(tmp_path)

        assert sorted(removed) == sorted([dead, old_half_made])
        assert live_path.is_dir() and foreign.is_dir() and lookalike.is_dir() and young_half_made.is_dir()
    finally:
        live.release()
    assert not live_path.exists()


def test_a_directory_locked_by_another_open_file_is_not_removed(tmp_path: Path) -> None:
    path = _dead_directory(tmp_path, f"{TOPIC}.pid99.deadbeef")
    with (path / LOCK_FILE).open("rb") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert remove_dead(tmp_path) == []
    assert remove_dead(tmp_path) == [path]


def test_claiming_removes_what_dead_processes_left(tmp_path: Path) -> None:
    dead = _dead_directory(tmp_path, f"{TOPIC}.pid1.cafef00d")
    state = ProcessStateDir(tmp_path, TOPIC)
    path = state.claim()
    try:
        assert not dead.exists()
        assert path.name.startswith(f"{TOPIC}.pid{os.getpid()}.")
    finally:
        state.release()


def test_a_state_directory_name_is_a_plain_name() -> None:
    with pytest.raises(ValueError):
        ProcessStateDir(Path("/tmp"), "../elsewhere")
