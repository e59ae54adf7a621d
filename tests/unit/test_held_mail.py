"""What becomes of mail held for a broken connection: kept once, released in held order, or expired.

The releaser runs here on the in-memory table and changelog, a registry view the test
writes and a publisher that records what it staged; time is the test's.
"""

from __future__ import annotations

import uuid
from collections.abc import Set
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import ConsumerRecord
from pydantic import BaseModel

from sendrail.bus.codec import encode
from sendrail.events import (
    ChannelKind,
    ConnectionHealthChanged,
    DeliveryEvent,
    DeliveryStatus,
    EmailRequested,
    EmailRouted,
    RegistryRecord,
    RequestDeadLettered,
    Source,
    registry_key,
)
from sendrail.registry.view import RegistryView
from sendrail.services.router import held as held_module
from sendrail.services.router.held import (
    HeldFate,
    HeldMailReleaser,
    WaitingMail,
    age_key,
    connection_of,
    connection_prefix,
    held_fate,
    split_age_key,
    waiting_key,
)
from sendrail.store.changelog import MemoryChangelog
from sendrail.store.entry import encode_entry
from sendrail.store.memory import MemoryTable
from sendrail.topics import DEAD_LETTER, DELIVERY, HELD, OUTBOUND_GMAIL, OUTBOUND_SMTP, connection_key

HELD_AT = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
EXPIRY = timedelta(days=3)
TENANT = "acme"
CHANGELOG = "sendrail.held.waiting"


# --- the decision (pure) ---------------------------------------------------------------------


@pytest.mark.parametrize(("healthy", "after", "fate"), [
    (True, timedelta(0), HeldFate.RELEASE),
    (True, timedelta(days=5), HeldFate.RELEASE),  # reconnected: sent, however long it waited
    (False, timedelta(0), HeldFate.KEEP),
    (False, EXPIRY - timedelta(seconds=1), HeldFate.KEEP),
    (False, EXPIRY, HeldFate.EXPIRE),
    (False, EXPIRY + timedelta(hours=1), HeldFate.EXPIRE),
])
def test_held_mail_is_released_kept_or_expired(healthy: bool, after: timedelta, fate: HeldFate) -> None:
    assert held_fate(healthy=healthy, held_since=HELD_AT, now=HELD_AT + after, expiry=EXPIRY) is fate


# --- the keys (pure) -------------------------------------------------------------------------


def test_one_connections_mail_sorts_in_held_order() -> None:
    offsets = [0, 1, 9, 10, 255, 256, 70_000, 2**40]
    keys = [waiting_key(TENANT, "alice-gmail", offset) for offset in offsets]
    assert sorted(keys) == keys
    assert sorted(reversed(keys)) == keys


@pytest.mark.parametrize("other", ["alice-gmail2", "alice-gmail.old", "alice-gmail-2", "alice-gmai"])
def test_a_connections_prefix_covers_its_mail_and_no_other_connections(other: str) -> None:
    prefix = connection_prefix(TENANT, "alice-gmail")
    assert waiting_key(TENANT, "alice-gmail", 7).startswith(prefix)
    assert not waiting_key(TENANT, other, 7).startswith(prefix)
    assert not waiting_key("acme2", "alice-gmail", 7).startswith(prefix)


def test_a_waiting_key_names_its_connection() -> None:
    assert connection_of(waiting_key(TENANT, "alice-gmail", 3)) == (TENANT, "alice-gmail")


@pytest.mark.parametrize("key", [
    b"", b"w", b"wacme/alice", b"wacme/alice\x00\x01", b"wacme\x00" + bytes(8), b"w/alice\x00" + bytes(8),
    b"wacme/\x00" + bytes(8), b"w\xff/alice\x00" + bytes(8), b"a" + bytes(8) + b"wacme/alice\x00" + bytes(8),
])
def test_a_key_this_table_does_not_write_names_no_connection(key: bytes) -> None:
    assert connection_of(key) is None


def test_the_age_index_sorts_by_routing_time_and_names_its_email() -> None:
    key = waiting_key(TENANT, "alice-gmail", 3)
    assert age_key(5, key) < age_key(6, waiting_key(TENANT, "a", 0)) < age_key(2**40, key)
    assert split_age_key(age_key(1234, key)) == (1234, key)
    assert split_age_key(key) is None
    assert split_age_key(b"a" + bytes(8)) is None


# --- the releaser, on the in-memory table ----------------------------------------------------


class Journal(list[tuple[str, Any]]):
    """What reached the broker, in order: ("publish", (topic, event)), ("confirm", None),
    ("changelog", (partition, key, value)), ("tombstone", (partition, key)), ("deleted", None)."""


class FakePublisher:
    def __init__(self, journal: Journal, changelog: MemoryChangelog) -> None:
        self._journal = journal
        self._changelog = changelog

    def stage(self, topic: Any, event: BaseModel, *, key: bytes | None) -> None:
        self._journal.append(("publish", (topic.name, event, key)))

    def stage_at(self, topic_name: str, partition: int, key: bytes, value: bytes) -> None:
        self._changelog.stage_at(topic_name, partition, key, value)
        self._journal.append(("changelog", (partition, key, value)))

    async def confirm(self) -> None:
        self._journal.append(("confirm", None))


class FakeDeletions(MemoryChangelog):
    def __init__(self, journal: Journal, changelog: MemoryChangelog) -> None:
        super().__init__(changelog.topic_name)
        self._journal = journal
        self._changelog = changelog

    def stage_tombstone_at(self, topic_name: str, partition: int, key: bytes) -> None:
        self._changelog.stage_tombstone_at(topic_name, partition, key)
        self._journal.append(("tombstone", (partition, key)))

    async def confirm(self) -> None:
        self._journal.append(("deleted", None))


class FakeRegistry:
    def __init__(self) -> None:
        self.view = RegistryView()
        self.refreshed = 0

    async def refresh(self) -> None:
        self.refreshed += 1

    def set_health(self, connection_id: str, healthy: bool | None, at: datetime = HELD_AT) -> RegistryRecord:
        record = ConnectionHealthChanged(tenant_id=TENANT, connection_id=connection_id, healthy=bool(healthy),
                                         reason=None if healthy else "token revoked", changed_at=at)
        self.view.apply(registry_key(record), None if healthy is None else record)
        return record


class Clock:
    def __init__(self) -> None:
        self.now = HELD_AT

    def __call__(self) -> datetime:
        return self.now


class Harness:
    def __init__(self, changelog: MemoryChangelog | None = None) -> None:
        self.changelog = changelog or MemoryChangelog(CHANGELOG)
        self.journal = Journal()
        self.registry = FakeRegistry()
        self.clock = Clock()
        self.table = MemoryTable(changelog_topic=CHANGELOG, reader=self.changelog,
                                 retention_ms=held_module.TABLE_RETENTION_MS)
        self.releaser = HeldMailReleaser(
            self.registry, None, self.table, FakePublisher(self.journal, self.changelog),  # type: ignore[arg-type]
            FakeDeletions(self.journal, self.changelog), self.clock,
            expiry_s=EXPIRY.total_seconds(), recheck_s=30.0)
        self._offsets: dict[int, int] = {}

    async def start(self, partitions: Set[int] = frozenset({0, 1})) -> Harness:
        await self.table.start()
        await self.table.assign(partitions)
        return self

    def record(self, routed: EmailRouted | bytes, partition: int = 0) -> ConsumerRecord[bytes, bytes]:
        offset = self._offsets.get(partition, 0)
        self._offsets[partition] = offset + 1
        value = routed if isinstance(routed, bytes) else encode(routed)
        key = (b"x" if isinstance(routed, bytes)
               else connection_key(routed.request.tenant_id, routed.connection_id))
        return ConsumerRecord(HELD.name, partition, offset, 0, 0, key, value, None, 0, 0, ())

    def publishes(self) -> list[tuple[str, Any, bytes | None]]:
        return [entry for kind, entry in self.journal if kind == "publish"]

    def published(self, topic: str) -> list[Any]:
        return [event for name, event, _ in self.publishes() if name == topic]

    def released(self) -> list[uuid.UUID]:
        return [routed.send_id for routed in self.published(OUTBOUND_GMAIL.name)]

    def statuses(self, status: DeliveryStatus) -> list[DeliveryEvent]:
        return [e for e in self.published(DELIVERY.name) if e.status is status]

    def waiting(self, connection_id: str = "alice-gmail") -> list[uuid.UUID]:
        mail = WaitingMail(self.table).of_connection((TENANT, connection_id), self.now_ms, limit=10_000)
        return [w.routed.send_id for w in mail if w.routed is not None]

    @property
    def now_ms(self) -> int:
        return int(self.clock.now.timestamp() * 1000)


def routed(connection_id: str = "alice-gmail", *, routed_at: datetime = HELD_AT,
           channel: ChannelKind = ChannelKind.GMAIL) -> EmailRouted:
    request = EmailRequested(idempotency_key=uuid.uuid4().hex, tenant_id=TENANT, user_id="alice",
                             identity="alice@acme.example.com", source=Source.API, to=["lee@example.org"],
                             subject="Hello", text="Hello there.", requested_at=routed_at)
    return EmailRouted(send_id=request.send_id, channel=channel, connection_id=connection_id,
                       request=request, routed_at=routed_at)


async def test_mail_of_a_broken_connection_is_kept_once_and_nothing_goes_out() -> None:
    h = await Harness().start()
    h.registry.set_health("alice-gmail", False)
    mail = [routed() for _ in range(3)]

    await h.releaser.hold([h.record(m) for m in mail])
    await h.releaser.release_due()
    assert await h.releaser.look_over() is False

    assert h.waiting() == [m.send_id for m in mail]
    assert h.published(OUTBOUND_GMAIL.name) == [] and h.published(HELD.name) == []
    assert h.published(DELIVERY.name) == []
    # Two changelog records per email (the email and its index entry), acknowledged before
    # the held offsets are committed.
    assert [kind for kind, _ in h.journal] == ["changelog"] * 6 + ["confirm"]


async def test_a_reconnect_releases_the_mail_in_held_order_then_deletes_it() -> None:
    h = await Harness().start()
    h.registry.set_health("alice-gmail", False)
    mail = [routed(routed_at=HELD_AT - timedelta(minutes=n % 3)) for n in range(5)]
    await h.releaser.hold([h.record(m) for m in mail])
    h.journal.clear()

    h.releaser.registry_changed(h.registry.set_health("alice-gmail", True))
    await h.releaser.release_due()

    assert h.released() == [m.send_id for m in mail]
    queued = h.statuses(DeliveryStatus.QUEUED)
    assert [e.send_id for e in queued] == [m.send_id for m in mail]
    assert all("released" in (e.reason or "") for e in queued)
    outbound_keys = {key for name, _, key in h.publishes() if name == OUTBOUND_GMAIL.name}
    assert outbound_keys == {connection_key(TENANT, "alice-gmail")}
    # Deleted only once the releases are acknowledged: at-least-once.
    kinds = [kind for kind, _ in h.journal]
    assert kinds.index("tombstone") > kinds.index("confirm")
    assert kinds[-1] == "deleted" and kinds.count("tombstone") == 10
    assert h.waiting() == [] and h.table.items(0, h.now_ms) == []
    assert h.registry.refreshed >= 1


async def test_only_the_reconnected_connections_mail_goes() -> None:
    h = await Harness().start()
    h.registry.set_health("alice-gmail", False)
    h.registry.set_health("alice-smtp", False)
    gmail, smtp = routed(), routed("alice-smtp", channel=ChannelKind.CUSTOM_SMTP)
    await h.releaser.hold([h.record(gmail), h.record(smtp)])

    h.releaser.registry_changed(h.registry.set_health("alice-smtp", True))
    await h.releaser.release_due()

    assert [r.send_id for r in h.published(OUTBOUND_SMTP.name)] == [smtp.send_id]
    assert h.released() == [] and h.waiting() == [gmail.send_id]


async def test_a_large_backlog_goes_out_in_rounds_in_held_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(held_module, "RELEASED_PER_ROUND", 4)
    h = await Harness().start()
    h.registry.set_health("alice-gmail", False)
    mail = [routed() for _ in range(10)]
    await h.releaser.hold([h.record(m) for m in mail])
    h.releaser.registry_changed(h.registry.set_health("alice-gmail", True))

    await h.releaser.release_due()
    assert h.released() == [m.send_id for m in mail[:4]]
    more = [routed() for _ in range(2)]  # held meanwhile: after the rest, not before
    await h.releaser.hold([h.record(m) for m in more])
    for _ in range(3):
        await h.releaser.release_due()

    assert h.released() == [m.send_id for m in mail + more]
    assert h.waiting() == []


async def test_mail_arriving_for_a_connection_already_back_is_released() -> None:
    """Held by a sender a moment before the user reconnected: the reconnect was announced
    before this mail reached the table."""
    h = await Harness().start()
    h.registry.set_health("alice-gmail", True)
    late = routed()

    await h.releaser.hold([h.record(late)])
    await h.releaser.release_due()

    assert h.released() == [late.send_id] and h.waiting() == []


async def test_a_held_record_seen_again_after_a_crash_is_kept_once() -> None:
    """Its offset is the key: the same record consumed twice is one email in the table."""
    h = await Harness().start()
    h.registry.set_health("alice-gmail", False)
    record = h.record(routed())

    await h.releaser.hold([record])
    await h.releaser.hold([record])

    assert len(h.waiting()) == 1


async def test_expired_mail_fails_and_the_rest_waits() -> None:
    h = await Harness().start()
    h.registry.set_health("alice-gmail", False)
    old, young = routed(routed_at=HELD_AT - EXPIRY), routed(routed_at=HELD_AT - EXPIRY + timedelta(seconds=1))
    await h.releaser.hold([h.record(young), h.record(old)])
    h.journal.clear()

    await h.releaser.look_over()

    [failed] = h.statuses(DeliveryStatus.FAILED)
    assert failed.send_id == old.send_id
    assert "expired" in (failed.reason or "") and "token revoked" in (failed.reason or "")
    assert h.waiting() == [young.send_id] and h.released() == []
    kinds = [kind for kind, _ in h.journal]
    assert kinds.index("tombstone") > kinds.index("confirm")

    h.clock.now += timedelta(seconds=1)
    await h.releaser.look_over()
    assert [e.send_id for e in h.statuses(DeliveryStatus.FAILED)] == [old.send_id, young.send_id]
    assert h.table.items(0, h.now_ms) == []  # index entries gone too


async def test_mail_past_its_expiry_is_released_not_failed_once_reconnected() -> None:
    h = await Harness().start()
    h.registry.set_health("alice-gmail", False)
    old = routed(routed_at=HELD_AT - EXPIRY - timedelta(days=1))
    await h.releaser.hold([h.record(old)])
    h.registry.set_health("alice-gmail", True)  # and the router was not told

    await h.releaser.look_over()
    await h.releaser.release_due()

    assert h.statuses(DeliveryStatus.FAILED) == [] and h.released() == [old.send_id]


async def test_expiry_is_looked_at_a_bounded_slice_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(held_module, "EXPIRED_PER_LOOK", 3)
    h = await Harness().start()
    h.registry.set_health("alice-gmail", False)
    await h.releaser.hold([h.record(routed(routed_at=HELD_AT - EXPIRY - timedelta(minutes=n)))
                           for n in range(5)])

    assert await h.releaser.look_over() is True  # stopped at its limit: the next look comes at once
    assert len(h.statuses(DeliveryStatus.FAILED)) == 3
    assert await h.releaser.look_over() is False
    assert len(h.statuses(DeliveryStatus.FAILED)) == 5 and h.waiting() == []


async def test_a_reconnect_no_one_announced_is_found_by_the_look_over_held_mail() -> None:
    """The health record was deleted (a tombstone calls no listener), or the reconnect came
    while no replica owned the partition: the look that follows an assignment finds it."""
    first = await Harness().start({0})
    first.registry.set_health("alice-gmail", False)
    mail = [routed() for _ in range(3)]
    await first.releaser.hold([first.record(m) for m in mail])
    await first.table.stop()

    # The next owner recovers the table from the changelog; the registry says nothing new.
    second = await Harness(first.changelog).start({0})
    second.registry.set_health("alice-gmail", None)
    await second.releaser.release_due()
    assert second.released() == []

    await second.releaser.look_over()
    await second.releaser.release_due()

    assert second.released() == [m.send_id for m in mail] and second.waiting() == []


async def test_the_look_over_connections_goes_on_where_it_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(held_module, "CONNECTIONS_PER_LOOK", 2)
    h = await Harness().start({0})
    names = [f"user{n}-gmail" for n in range(5)]
    for name in names:
        h.registry.set_health(name, False)
    await h.releaser.hold([h.record(routed(name)) for name in names for _ in range(2)])
    mail = WaitingMail(h.table)

    assert mail.connections(0, h.now_ms, limit=10) == [(TENANT, n) for n in names]
    assert mail.connections(0, h.now_ms, after=(TENANT, names[1]), limit=2) == [(TENANT, n) for n in names[2:4]]
    for name in names:
        h.registry.set_health(name, None)
    assert await h.releaser.look_over() is True
    assert await h.releaser.look_over() is True
    assert await h.releaser.look_over() is False
    await h.releaser.release_due()
    assert len(h.released()) == 10


async def test_an_undecodable_held_record_is_dead_lettered_and_the_rest_kept() -> None:
    h = await Harness().start()
    h.registry.set_health("alice-gmail", False)
    good = routed()

    await h.releaser.hold([h.record(b'{"send_id": "not a uuid"}'), h.record(good)])

    [entry] = h.published(DEAD_LETTER.name)
    assert isinstance(entry, RequestDeadLettered)
    assert entry.kind == "invalid" and entry.consumer == "sendrail-router-held"
    assert h.waiting() == [good.send_id]


async def test_a_held_email_too_large_to_keep_is_dead_lettered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(held_module, "MAX_KEPT_BYTES", 100)
    h = await Harness().start()

    await h.releaser.hold([h.record(routed())])

    [entry] = h.published(DEAD_LETTER.name)
    assert entry.kind == "handling_failed" and "more than a held email" in entry.reason
    assert h.waiting() == []


async def test_hostile_table_entries_are_deleted_not_released_nor_fatal() -> None:
    changelog = MemoryChangelog(CHANGELOG)
    junk_key = waiting_key(TENANT, "alice-gmail", 0)
    changelog.append(0, junk_key, encode_entry(b"not an email", 0))
    changelog.append(0, age_key(0, waiting_key(TENANT, "alice-gmail", 99)), encode_entry(b"", 0))  # no email
    changelog.append(0, b"a" + bytes(8), encode_entry(b"", 0))  # an index key without its email's
    h = await Harness(changelog).start({0})
    h.registry.set_health("alice-gmail", False)
    good = routed()
    await h.releaser.hold([h.record(good)])  # offset 0 again: takes the junk's place
    changelog.append(0, waiting_key(TENANT, "alice-gmail", 5), encode_entry(b"junk", 0))
    await h.table.stop()
    h = await Harness(changelog).start({0})

    await h.releaser.look_over()
    h.releaser.registry_changed(h.registry.set_health("alice-gmail", True))
    await h.releaser.release_due()

    assert h.released() == [good.send_id]
    assert h.statuses(DeliveryStatus.FAILED) == []
    assert h.table.items(0, h.now_ms) == []
