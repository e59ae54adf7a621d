"""A topic follower on a real broker: a refused record is dead-lettered once and passed over."""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from aiokafka import AIOKafkaProducer

from sendrail.bus.clients import ensure_topics, make_consumer, make_producer
from sendrail.bus.codec import decode
from sendrail.bus.dead_letter import MAX_ORIGINAL_VALUE_BYTES
from sendrail.bus.table import TopicFollower
from sendrail.events import RequestDeadLettered
from sendrail.settings import KafkaSettings
from sendrail.topics import DEAD_LETTER, SUPPRESSION


@pytest.fixture
async def producer(kafka: KafkaSettings) -> AsyncIterator[AIOKafkaProducer]:
    producer = make_producer(kafka, client_id="test-follower-writer")
    await producer.start()
    yield producer
    await producer.stop()


async def _dead_letters_of(kafka: KafkaSettings, topic: str) -> list[RequestDeadLettered]:
    """Every dead-letter entry of `topic` so far (the whole dead-letter topic, read to its end)."""
    consumer = make_consumer(kafka, DEAD_LETTER.name, group_id=None, client_id="test-dead-letters")
    await consumer.start()
    try:
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)
        ends = await consumer.end_offsets(list(consumer.assignment()))
        entries: list[RequestDeadLettered] = []
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                entries += [decode(RequestDeadLettered, r.value or b"") for r in records]
        return [e for e in entries if e.source_topic == topic]
    finally:
        await consumer.stop()


async def test_a_refused_record_of_a_compacted_topic_is_dead_lettered_once_across_restarts(
    kafka: KafkaSettings, producer: AIOKafkaProducer,
) -> None:
    topic = replace(SUPPRESSION, name=f"test.compacted.{uuid.uuid4().hex[:8]}")
    await ensure_topics(kafka, [topic])
    applied: list[bytes] = []

    def apply(key: bytes | None, value: bytes | None) -> None:
        if value is None or not value.startswith(b"good"):
            raise ValueError(f"unusable record {value!r:.40}")
        assert key is not None
        key.decode()
        applied.append(value)

    await producer.send_and_wait(topic.name, b"good 1", key=b"a")
    await producer.send_and_wait(topic.name, b"\xff\xfe not json", key=b"b")
    await producer.send_and_wait(topic.name, b"good 2", key=b"\xff\xfe")  # key not UTF-8
    await producer.send_and_wait(topic.name, b"good 3", key=b"c")

    for start in range(2):
        follower = TopicFollower(kafka, topic.name, apply, client_id=f"test-follower-{topic.name}")
        await follower.start()  # returns once it has read to the end: nothing stopped it
        await follower.stop()
        assert applied == [b"good 1", b"good 3"] * (start + 1)

    entries = await _dead_letters_of(kafka, topic.name)
    assert sorted(e.offset for e in entries) == [1, 2]  # once each, not once per start
    refused_value = next(e for e in entries if e.offset == 1)
    assert base64.b64decode(refused_value.value_b64) == b"\xff\xfe not json"
    assert refused_value.kind == "handling_failed" and "unusable record" in refused_value.reason
    assert refused_value.consumer == f"test-follower-{topic.name}"


async def test_an_oversized_refused_record_is_kept_truncated_with_its_size_and_digest(
    kafka: KafkaSettings, producer: AIOKafkaProducer,
) -> None:
    topic = replace(SUPPRESSION, name=f"test.large.{uuid.uuid4().hex[:8]}")
    await ensure_topics(kafka, [topic])
    value = b"x" * 900_000  # its base64 alone would exceed the 1 MiB record limit

    def refuse(_: bytes | None, value: bytes | None) -> None:
        raise ValueError("never usable")

    await producer.send_and_wait(topic.name, value, key=b"k")
    follower = TopicFollower(kafka, topic.name, refuse, client_id=f"test-follower-{topic.name}")
    await follower.start()
    await follower.stop()

    [entry] = await _dead_letters_of(kafka, topic.name)
    assert entry.truncated and entry.original_bytes == len(value)
    assert entry.original_sha256 == hashlib.sha256(value).hexdigest()
    assert base64.b64decode(entry.value_b64) == value[:MAX_ORIGINAL_VALUE_BYTES]
