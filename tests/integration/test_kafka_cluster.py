"""The sandbox's three-node cluster: writes go on while a node is killed or stalled, and a
node that comes back catches up. Nothing acknowledged is lost, nothing is doubled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from sendrail.bus.clients import ensure_topics, make_consumer, make_producer
from sendrail.sandbox.kafka_cluster import KafkaCluster
from sendrail.settings import KafkaSettings
from sendrail.topics import Topic

REPO = Path(__file__).resolve().parents[2]
TOPIC = Topic("test.cluster", BaseModel, "n", "Records numbered by the test.", partitions=1)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[KafkaCluster]:
    nodes = KafkaCluster(tmp_path / "cluster", jars_dir=REPO / ".cache/kafka/libs")
    await nodes.start()
    try:
        yield nodes
    finally:
        await nodes.stop()


async def _until_in_sync(cluster: KafkaCluster, nodes: int, timeout_s: float = 60.0) -> int:
    """The leader, once `nodes` replicas are in sync."""
    async with asyncio.timeout(timeout_s):
        while True:
            leader, in_sync = await cluster.replicas_of(TOPIC.name, 0)
            if len(in_sync) >= nodes and leader > 0:
                return leader
            await asyncio.sleep(0.2)


async def test_writes_survive_a_killed_leader_and_a_stalled_node(cluster: KafkaCluster) -> None:
    kafka = KafkaSettings(bootstrap_servers=cluster.bootstrap_servers, replication_factor=3)
    await ensure_topics(kafka, [TOPIC])
    producer = make_producer(kafka, client_id="test-cluster")
    await producer.start()
    sent = 0

    async def send(count: int) -> None:
        nonlocal sent
        pending = [await producer.send(TOPIC.name, str(n).encode(), key=str(n).encode())
                   for n in range(sent, sent + count)]
        await asyncio.gather(*pending)  # acks=all: on at least two replicas
        sent += count

    try:
        await send(100)
        killed = await _until_in_sync(cluster, 3)
        await cluster.broker(killed).kill()
        await send(100)  # a new leader takes them

        await cluster.broker(killed).start()
        stalled = next(b for b in cluster.brokers if b.node_id != killed and b.running)
        await _until_in_sync(cluster, 3)  # the restarted node caught up
        stalled.pause()
        try:
            await send(100)
        finally:
            stalled.resume()
    finally:
        await producer.stop()

    consumer = make_consumer(kafka, TOPIC.name, group_id=None, client_id="test-cluster-read")
    await consumer.start()
    values: list[bytes] = []
    try:
        async with asyncio.timeout(60):
            while len(values) < sent:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    values.extend(r.value or b"" for r in records)
    finally:
        await consumer.stop()
    assert sorted(int(v) for v in values) == list(range(300))
