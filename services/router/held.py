"""Mail held for broken connections: waiting in a table, released in order when the user reconnects.

A broken connection's mail is published to `sendrail.held` once (by the sender that met
the broken credentials, or by the router when the registry already said so), keyed by
connection, so one connection's held mail is on one partition in the order it was held.
The router's held consumer writes each record into a table co-partitioned with that
topic (a `PartitionedTable` whose changelog is `sendrail.held.waiting`) and commits its
offset once the table's changelog record is acknowledged. The mail then waits there,
written once: nothing goes round the topic again, and a restart or a rebalance loses
nothing (the partition's next owner recovers the table).

When the connection is healthy again (a registry change says so, or the look over held
mail every `held_recheck_s`, which also runs when a partition is assigned: a reconnect
may have happened while no one owned it), its mail is published to its channel's topic
in held order with a `queued` event, and deleted from the table (tombstones) only once
those are acknowledged. That is at-least-once: a release repeated after a crash is the
same send to the senders, which drop repeats of a send id. Mail still held
`held_expiry_s` after it was routed fails with a `failed` event, found through an index
of the table ordered by that time, a bounded slice per look.

The table's keys:

    w tenant/connection NUL offset (8 bytes, big-endian)  -> the EmailRouted, as JSON
    a routed-at ms (8 bytes, big-endian) + the w... key   -> b""  (the index by age)

Tenant and connection ids never contain NUL or `/` (`Identifier`), so a connection's
prefix covers its mail and no other connection's, and its mail iterates in offset order.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Protocol

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from pydantic import ValidationError

from sendrail.bus.codec import decode, encode
from sendrail.bus.dead_letter import stage_dead_letter, unusable_for
from sendrail.bus.publisher import Publisher
from sendrail.events import (
    ConnectionConfigured,
    ConnectionHealthChanged,
    DeliveryEvent,
    DeliveryStatus,
    EmailRouted,
    RegistryRecord,
)
from sendrail.registry.store import RegistryStore
from sendrail.store.protocol import ChangelogSink, PartitionedTable, TombstoneSink, prefix_end
from sendrail.topics import DELIVERY, OUTBOUND_BY_CHANNEL, connection_key

log = structlog.get_logger(__name__)

Connection = tuple[str, str]
"""(tenant_id, connection_id)."""

TABLE_RETENTION_MS = 365 * 24 * 3600 * 1000
"""Held mail leaves the table by release or expiry, never by age: far beyond the longest
`held_expiry_s` the settings allow (30 days), so a router down for weeks still fails
what expired meanwhile instead of forgetting it."""
MAX_KEPT_BYTES = 1_000_000
"""A held email larger than this is not kept (its changelog record would pass Kafka's 1 MiB
record limit); the router's own requests are at most 900 KiB."""
RELEASED_PER_ROUND = 100
"""Held emails published per round of releases: a large backlog goes out in rounds, with
newly held mail taken in between. Each email is read into memory whole (up to 900 KiB), so
a round holds at most about 90 MB."""
EXPIRED_PER_LOOK = 100
"""Expired emails failed per look, read whole like a round of releases; a look that stops
at this limit is followed by the next at once."""
CONNECTIONS_PER_LOOK = 1_000
"""Connections with held mail whose health one look checks, per partition (one seek each)."""
POLL_MS = 200

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_WAITING = b"w"
_BY_AGE = b"a"
_END = b"\x00"
_U64 = struct.Struct(">Q")


# --- the table's keys (pure) ---------------------------------------------------------------


def connection_prefix(tenant_id: str, connection_id: str) -> bytes:
    """Every waiting key of one connection starts with this, and no other connection's does."""
    return _WAITING + connection_key(tenant_id, connection_id) + _END


def waiting_key(tenant_id: str, connection_id: str, offset: int) -> bytes:
    """One held email: its connection, then its offset on `sendrail.held`, big-endian so that
    one connection's mail sorts in the order it was held."""
    return connection_prefix(tenant_id, connection_id) + _U64.pack(offset)


def connection_of(key: bytes) -> Connection | None:
    """The connection a waiting key names; None for a key this table does not write."""
    if not key.startswith(_WAITING):
        return None
    name, end, offset = key[len(_WAITING):].partition(_END)
    if not end or len(offset) != _U64.size:
        return None
    try:
        tenant_id, slash, connection_id = name.decode("ascii").partition("/")
    except UnicodeDecodeError:
        return None
    return (tenant_id, connection_id) if slash and tenant_id and connection_id else None


def held_since_ms(routed: EmailRouted) -> int:
    """When expiry counts from: when the email was routed (PRODUCT.md section 1: it waits
    until the user reconnects or it expires), not when it was held."""
    return max(0, int(routed.routed_at.timestamp() * 1000))


def age_key(since_ms: int, key: bytes) -> bytes:
    return _BY_AGE + _U64.pack(since_ms) + key


def aged_up_to(since_ms: int) -> bytes:
    """The first index key past every email held since `since_ms` or earlier."""
    return _BY_AGE + _U64.pack(since_ms + 1)


def split_age_key(key: bytes) -> tuple[int, bytes] | None:
    """(held since, in ms; the waiting key) of an index key; None for another key."""
    if not key.startswith(_BY_AGE) or len(key) <= len(_BY_AGE) + _U64.size:
        return None
    return _U64.unpack_from(key, len(_BY_AGE))[0], key[len(_BY_AGE) + _U64.size:]


# --- what becomes of held mail (pure) --------------------------------------------------------


class HeldFate(Enum):
    RELEASE = "release"
    EXPIRE = "expire"
    KEEP = "keep"


def held_fate(*, healthy: bool, held_since: datetime, now: datetime, expiry: timedelta) -> HeldFate:
    """A reconnected connection gets its mail back; mail held past `expiry` fails (PRODUCT.md
    section 1: it waits until the user reconnects or the mail expires); the rest waits."""
    if healthy:
        return HeldFate.RELEASE
    if now - held_since >= expiry:
        return HeldFate.EXPIRE
    return HeldFate.KEEP


# --- the table -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Waiting:
    """One held email as the table has it."""

    partition: int
    routed: EmailRouted | None
    """None: nothing usable is stored (a value this table did not write, or an index entry
    whose email is gone): it is only deleted."""
    keys: tuple[bytes, ...]
    """What leaves the table with it: its email first, then its index entry, so that a crash
    in between leaves an index entry without an email (dropped by the next look), never an
    email that no look would find."""


def _decoded(value: bytes) -> EmailRouted | None:
    try:
        return decode(EmailRouted, value)
    except ValidationError:
        return None


class WaitingMail:
    """The held mail of the partitions one replica owns, in its table."""

    def __init__(self, table: PartitionedTable) -> None:
        self._table = table

    @property
    def partitions(self) -> frozenset[int]:
        return self._table.assigned

    def keep(self, partition: int, offset: int, routed: EmailRouted, now_ms: int,
             sink: ChangelogSink) -> None:
        """Written locally; the changelog records are staged on `sink` (acknowledged before
        the held record's offset is committed)."""
        value = encode(routed)
        if len(value) > MAX_KEPT_BYTES:
            raise ValueError(f"{len(value)} bytes is more than a held email may have ({MAX_KEPT_BYTES})")
        key = waiting_key(routed.request.tenant_id, routed.connection_id, offset)
        self._table.put(partition, key, value, now_ms, sink)
        self._table.put(partition, age_key(held_since_ms(routed), key), b"", now_ms, sink)

    def of_connection(self, connection: Connection, now_ms: int, *, limit: int) -> list[Waiting]:
        """The connection's held mail in held order, at most `limit`. It is on the partition its
        key hashes to; a record published there under another key is found all the same."""
        prefix = connection_prefix(*connection)
        found: list[Waiting] = []
        for partition in sorted(self._table.assigned):
            for key, value in self._table.items(partition, now_ms, prefix=prefix,
                                                limit=limit - len(found)):
                routed = _decoded(value)
                keys = (key,) if routed is None else (key, age_key(held_since_ms(routed), key))
                found.append(Waiting(partition, routed, keys))
            if len(found) >= limit:
                break
        return found

    def connections(self, partition: int, now_ms: int, *, after: Connection | None = None,
                    limit: int) -> list[Connection]:
        """The connections with held mail on `partition`, after `after`, at most `limit`: one
        seek per connection, however much mail each has."""
        found: list[Connection] = []
        start = prefix_end(connection_prefix(*after)) if after is not None else _WAITING
        while len(found) < limit:
            first = self._table.items(partition, now_ms, prefix=_WAITING, start=start, limit=1)
            if not first:
                break
            key = first[0][0]
            connection = connection_of(key)
            if connection is None:  # not a key this table writes: step over it
                start = key + b"\x00"
                continue
            found.append(connection)
            start = prefix_end(key[:-_U64.size])  # past the rest of this connection's mail
        return found

    def expired(self, since_ms: int, now_ms: int, *, limit: int) -> list[tuple[int, Waiting]]:
        """(held since, in ms; the email) of mail held since `since_ms` or earlier, oldest first
        per partition, at most `limit`."""
        found: list[tuple[int, Waiting]] = []
        for partition in sorted(self._table.assigned):
            for index, _ in self._table.items(partition, now_ms, prefix=_BY_AGE,
                                              stop=aged_up_to(since_ms), limit=limit - len(found)):
                split = split_age_key(index)
                if split is None:
                    found.append((0, Waiting(partition, None, (index,))))
                    continue
                held_ms, key = split
                value = self._table.get(partition, key, now_ms)
                routed = None if value is None else _decoded(value)
                keys = (index,) if value is None else (key, index)
                found.append((held_ms, Waiting(partition, routed, keys)))
            if len(found) >= limit:
                break
        return found

    def remove(self, mail: Iterable[Waiting], sink: TombstoneSink) -> None:
        for waiting in mail:
            for key in waiting.keys:
                self._table.delete(waiting.partition, key, sink)


# --- the held consumer -----------------------------------------------------------------------


class Deletions(TombstoneSink, Protocol):
    """Where tombstones go, confirmed on their own (`sendrail.store.changelog.ChangelogWriter`)."""

    async def confirm(self) -> None: ...


class HeldMailReleaser(ConsumerRebalanceListener):  # type: ignore[misc]
    """Consumes `sendrail.held` into the table and lets the mail out: released, or failed.

    One loop does everything in turn (take what was fetched, look over the table when due,
    release what is due), under a lock the rebalance listener takes too, so a partition is
    never recovered or revoked in the middle of a round.
    """

    def __init__(self, registry: RegistryStore, consumer: AIOKafkaConsumer, table: PartitionedTable,
                 publisher: Publisher, deletions: Deletions, clock: Callable[[], datetime], *,
                 expiry_s: float, recheck_s: float, consumer_name: str = "sendrail-router-held") -> None:
        self._registry = registry
        self._consumer = consumer
        self._table = table
        self._mail = WaitingMail(table)
        self._publisher = publisher
        self._deletions = deletions
        self._clock = clock
        self._expiry = timedelta(seconds=expiry_s)
        self._recheck_s = recheck_s
        self._consumer_name = consumer_name
        self._due: set[Connection] = set()
        """Connections that may be healthy again: their mail is released at the next round."""
        self._next_look_s = 0.0
        self._looked_after: dict[int, Connection | None] = {}
        """Per partition, the last connection the previous look checked, when it stopped at
        its limit; the next look goes on from there."""
        self._lock = asyncio.Lock()
        self._failure: BaseException | None = None

    # --- the loop --------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop`; each step finishes (and its offsets are committed) before it returns."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            if self._failure is not None:
                raise self._failure
            busy = bool(self._due) or loop.time() >= self._next_look_s
            fetched = await self._consumer.getmany(timeout_ms=0 if busy else POLL_MS)
            async with self._lock:
                await self._take(fetched)
                if loop.time() >= self._next_look_s:
                    more = await self.look_over()
                    self._next_look_s = loop.time() + (0.0 if more else self._recheck_s)
                await self.release_due()

    async def _take(self, fetched: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        assigned = self._consumer.assignment()
        records: list[ConsumerRecord[bytes, bytes]] = []
        offsets: dict[TopicPartition, int] = {}
        for tp, batch in fetched.items():
            if not batch or tp not in assigned:
                continue  # revoked while fetching: its next owner reads it
            if tp.partition not in self._table.assigned:
                # Fetched before the listener recovered its table partition: read it again once
                # that is done (the listener resumes it).
                self._consumer.seek(tp, batch[0].offset)
                self._consumer.pause(tp)
                continue
            records.extend(batch)
            offsets[tp] = batch[-1].offset + 1
        if not records:
            return
        await self.hold(records)
        await self._commit(offsets)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        owned = {tp: offset for tp, offset in offsets.items() if tp in self._consumer.assignment()}
        if not owned:
            return
        try:
            await self._consumer.commit(owned)
        except (CommitFailedError, IllegalStateError):
            # Read again by the partition's next owner, and kept again under the same keys.
            log.warning("held offsets not committed: a rebalance is under way", partitions=len(owned))

    # --- the steps (also what the unit tests drive) ----------------------------------------

    async def hold(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        """Keeps each record in the table (dead-letters what cannot be kept) and waits until
        the changelog and the dead-letter entries are acknowledged."""
        now = self._clock()
        now_ms = _ms(now)
        view = self._registry.view
        for record in records:
            try:
                routed = decode(EmailRouted, record.value or b"")
                self._mail.keep(record.partition, record.offset, routed, now_ms, self._publisher)
            except (TimeoutError, KafkaError):
                raise  # the bus, not the message: the router starts again from its offsets
            except Exception as error:  # confined to this record, kept with its reason
                if not isinstance(error, ValidationError):
                    log.exception("held message could not be kept", offset=record.offset)
                stage_dead_letter(self._publisher, record, unusable_for(record.value, error),
                                  consumer=self._consumer_name, now=now)
                continue
            connection = (routed.request.tenant_id, routed.connection_id)
            if view.is_healthy(*connection):
                self._due.add(connection)  # reconnected before its mail got here
        await self._publisher.confirm()

    def registry_changed(self, record: RegistryRecord) -> None:
        """Called by the registry follower for every record: a connection marked healthy (or
        configured again) gets its held mail released at the next round."""
        if ((isinstance(record, ConnectionHealthChanged) and record.healthy)
                or isinstance(record, ConnectionConfigured)):
            self._due.add((record.tenant_id, record.connection_id))

    async def release_due(self) -> None:
        """Publishes held mail of the due connections that are healthy, in held order, at most
        `RELEASED_PER_ROUND`; deletes it from the table once that is acknowledged."""
        if not self._due:
            return
        # A sender publishes a connection's broken health with the mail it holds: caught up with
        # the registry, mail held a moment ago is not taken for a reconnected connection's.
        await self._registry.refresh()
        now = self._clock()
        now_ms = _ms(now)
        view = self._registry.view
        budget = RELEASED_PER_ROUND
        released: list[Waiting] = []
        for connection in sorted(self._due):
            if budget <= 0:
                break
            if not self._mail.partitions or not view.is_healthy(*connection):
                self._due.discard(connection)
                continue
            mail = self._mail.of_connection(connection, now_ms, limit=budget)
            if len(mail) < budget:
                self._due.discard(connection)  # all of it in this round
            budget -= len(mail)
            for waiting in mail:
                routed = waiting.routed
                if routed is None or (routed.request.tenant_id, routed.connection_id) != connection:
                    # Not what this table wrote (a hostile changelog record): deleted, not sent.
                    log.warning("unusable held entry dropped", partition=waiting.partition)
                    continue
                self._publisher.stage(OUTBOUND_BY_CHANNEL[routed.channel], routed,
                                      key=connection_key(*connection))
                self._publisher.stage(DELIVERY, DeliveryEvent.for_routed(
                    routed, DeliveryStatus.QUEUED, now, reason="released: the connection is back"),
                    key=str(routed.send_id).encode())
            released.extend(mail)
        if not released:
            return
        await self._publisher.confirm()
        self._mail.remove(released, self._deletions)
        await self._deletions.confirm()
        log.info("held mail released", entries=len(released))

    async def look_over(self) -> bool:
        """Finds connections healthy again that no registry change announced (a deleted health
        record, a reconnect while no one owned the partition), and fails mail held past its
        expiry. Returns True if it stopped at a limit (the next look should come at once)."""
        now = self._clock()
        now_ms = _ms(now)
        view = self._registry.view
        more = False
        for partition in sorted(self._mail.partitions):
            found = self._mail.connections(partition, now_ms, after=self._looked_after.get(partition),
                                           limit=CONNECTIONS_PER_LOOK)
            at_limit = len(found) >= CONNECTIONS_PER_LOOK
            self._looked_after[partition] = found[-1] if at_limit else None
            more |= at_limit
            self._due.update(c for c in found if view.is_healthy(*c))
        expired = self._mail.expired(now_ms - int(self._expiry.total_seconds() * 1000), now_ms,
                                     limit=EXPIRED_PER_LOOK)
        more |= len(expired) >= EXPIRED_PER_LOOK
        failed: list[Waiting] = []
        for since_ms, waiting in expired:
            routed = waiting.routed
            if routed is None:
                failed.append(waiting)  # nothing to tell anyone about: only deleted
                continue
            tenant_id, connection_id = routed.request.tenant_id, routed.connection_id
            fate = held_fate(healthy=view.is_healthy(tenant_id, connection_id),
                             held_since=_EPOCH + timedelta(milliseconds=since_ms), now=now,
                             expiry=self._expiry)
            if fate is not HeldFate.EXPIRE:
                self._due.add((tenant_id, connection_id))  # healthy: released instead
                continue
            reason = view.broken_reason(tenant_id, connection_id)
            self._publisher.stage(DELIVERY, DeliveryEvent.for_routed(
                routed, DeliveryStatus.FAILED, now,
                reason=f"expired while connection {connection_id} stayed broken ({reason}); "
                       "nothing was sent"), key=str(routed.send_id).encode())
            failed.append(waiting)
        if failed:
            await self._publisher.confirm()
            self._mail.remove(failed, self._deletions)
            await self._deletions.confirm()
            log.info("held mail expired", emails=sum(w.routed is not None for w in failed))
        return more

    # --- rebalancing -----------------------------------------------------------------------

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._lock:
            partitions = {tp.partition for tp in revoked}
            self._table.revoke(partitions)
            for partition in partitions:
                self._looked_after.pop(partition, None)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """aiokafka only logs what a listener raises: a failure to recover would leave the
        partitions paused for good, so it ends `run` instead."""
        try:
            async with self._lock:
                await self._table.assign({tp.partition for tp in assigned})
                self._next_look_s = 0.0  # a reconnect may have happened while no one owned them
            self._consumer.resume(*assigned)
        except Exception as error:
            log.exception("taking over held mail failed; the router starts again")
            self._failure = error


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
