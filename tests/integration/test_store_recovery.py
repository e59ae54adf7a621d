"""The RocksDB table on a real broker: its changelog, recovery after a restart, handover."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from sendrail.bus.clients import ensure_topics, make_producer
from sendrail.bus.publisher import Publisher
from sendrail.settings import KafkaSettings
from sendrail.store.changelog import KafkaChangelogReader
from sendrail.store.entry import encode_entry
from sendrail.store.rocks import RocksTable
from sendrail.topics import OUTBOUND_SMTP, OUTBOUND_SMTP_SEND_IDS, SEND_ID_RETENTION_MS, Topic

T0 = 1_780_000_000_000


@pytest.fixture
async def changelog(kafka: KafkaSettings) -> Topic:
    """A fresh topic shaped like the senders' changelogs, so tests do not see each other's."""
    topic = Topic(f"test.send-ids.{secrets.token_hex(4)}", OUTBOUND_SMTP_SEND_IDS.event, "send_id",
                  "test changelog", partitions=6, compacted=True,
                  configs=OUTBOUND_SMTP_SEND_IDS.configs)
    await ensure_topics(kafka, [topic])
    return topic


@pytest.fixture
async def producer(kafka: KafkaSettings) -> AsyncIterator[AIOKafkaProducer]:
    producer = make_producer(kafka, client_id="test-store")
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


def rocks_table(kafka: KafkaSettings, topic: Topic, state_dir: Path, name: str) -> RocksTable:
    reader = KafkaChangelogReader(kafka, topic.name, client_id=f"test-store-{name}")
    return RocksTable(changelog_topic=topic.name, reader=reader, retention_ms=SEND_ID_RETENTION_MS,
                      state_dir=state_dir)


async def test_the_changelog_topics_forget_a_day_after_the_table(kafka: KafkaSettings) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await admin.start()
    try:
        described = await admin.describe_topics([OUTBOUND_SMTP_SEND_IDS.name])
        configs = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, OUTBOUND_SMTP_SEND_IDS.name)])
    finally:
        await admin.close()
    config = {entry[0]: entry[1] for entry in configs[0].resources[0][4]}
    assert config["cleanup.policy"] == "compact,delete"
    assert int(config["retention.ms"]) == SEND_ID_RETENTION_MS + 24 * 3600 * 1000
    assert len(described[0]["partitions"]) == OUTBOUND_SMTP.partitions


async def test_a_restarted_table_recovers_from_the_changelog_and_skips_hostile_records(
    kafka: KafkaSettings, changelog: Topic, producer: AIOKafkaProducer, tmp_path: Path,
) -> None:
    first = rocks_table(kafka, changelog, tmp_path, "first")
    await first.start()
    try:
        await first.assign(set(range(6)))
        publisher = Publisher(producer)
        for n in range(300):
            first.put(n % 6, f"send-{n}".encode(), b"", T0 + n, publisher)
        await publisher.confirm()  # what a sender does before committing its offsets
    finally:
        await first.stop()  # the process ends; its local state goes with it
    # Records nobody should have written, between good ones (a compacted topic itself
    # refuses records without a key).
    for value in (b"", b"junk", b"\x09" + bytes(8)):
        await (await producer.send(changelog.name, value, key=b"hostile", partition=3))
    await (await producer.send(changelog.name, encode_entry(b"late", T0), key=b"send-late",
                               partition=3))

    restarted = rocks_table(kafka, changelog, tmp_path, "restarted")
    await restarted.start()
    try:
        await restarted.assign({0, 3})

        for n in range(0, 300, 3):  # partitions 0 and 3
            assert restarted.get(n % 6, f"send-{n}".encode(), T0 + 300) == b"", n
            assert restarted.get(n % 6, f"send-{n + 1}".encode(), T0 + 300) is None  # partition 1 or 4's
        assert restarted.get(3, b"send-late", T0) == b"late"
        assert restarted.get(3, b"hostile", T0) is None
        assert restarted.skipped.total == 3
        assert restarted.get(0, b"send-0", T0 + SEND_ID_RETENTION_MS) is None  # its write time came back
    finally:
        await restarted.stop()


async def test_a_partition_handed_to_another_replica_and_back_keeps_every_send_id(
    kafka: KafkaSettings, changelog: Topic, producer: AIOKafkaProducer, tmp_path: Path,
) -> None:
    a = rocks_table(kafka, changelog, tmp_path, "a")
    b = rocks_table(kafka, changelog, tmp_path, "b")
    await a.start()
    await b.start()
    try:
        publisher = Publisher(producer)
        await a.assign({0, 1, 2})
        await b.assign({3, 4, 5})
        a.put(2, b"send-a", b"", T0, publisher)
        await publisher.confirm()

        a.revoke({2})  # a rebalance moves partition 2 to b
        await b.assign({2})
        assert b.get(2, b"send-a", T0) == b""
        b.put(2, b"send-b", b"", T0 + 1, publisher)
        await publisher.confirm()

        b.revoke({2})  # and back to a, which catches up on what b wrote meanwhile
        await a.assign({2})
        assert a.get(2, b"send-b", T0 + 1) == b""
        assert a.get(2, b"send-a", T0 + 1) == b""
        assert a.assigned == {0, 1, 2} and b.assigned == {3, 4, 5}
    finally:
        await a.stop()
        await b.stop()
    assert os.listdir(tmp_path) == []
