"""Three Apache Kafka nodes on loopback, replicating: what production runs, on one machine.

Each node is broker and controller of one static KRaft quorum; topics are replicated three
times and an acks=all write needs two replicas (`min.insync.replicas=2`), so the cluster
keeps taking writes while any one node is down or stalled. Its nodes can be killed,
stalled and restarted (`KafkaBroker.kill`, `pause`, `resume`, `start`), as the cluster
test does.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from sendrail.sandbox.kafka_broker import DEFAULT_JARS_DIR, KafkaBroker, new_cluster_id
from sendrail.sandbox.ports import free_port

REPLICATION_FACTOR = 3


class KafkaCluster:
    def __init__(self, data_dir: Path, *, nodes: int = 3, jars_dir: Path = DEFAULT_JARS_DIR,
                 heap_mb: int = 384) -> None:
        controller_ports = [free_port() for _ in range(nodes)]
        voters = ",".join(f"{n + 1}@127.0.0.1:{port}" for n, port in enumerate(controller_ports))
        cluster_id = new_cluster_id()
        self.brokers = [
            KafkaBroker(data_dir / f"node-{n + 1}", port=free_port(), jars_dir=jars_dir,
                        heap_mb=heap_mb, node_id=n + 1, controller_port=controller_ports[n],
                        voters=voters, replication_factor=min(REPLICATION_FACTOR, nodes),
                        cluster_id=cluster_id)
            for n in range(nodes)]

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(broker.bootstrap_servers for broker in self.brokers)

    async def start(self, *, timeout_s: float = 90.0) -> None:
        """All nodes at once: a quorum forms only when a majority of them runs."""
        try:
            await asyncio.gather(*(broker.start(timeout_s=timeout_s) for broker in self.brokers))
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        await asyncio.gather(*(broker.stop() for broker in self.brokers))

    def broker(self, node_id: int) -> KafkaBroker:
        return next(broker for broker in self.brokers if broker.node_id == node_id)

    async def replicas_of(self, topic: str, partition: int) -> tuple[int, list[int]]:
        """(the node leading the partition, the nodes in sync with it), as the cluster's
        metadata says now."""
        admin = AIOKafkaAdminClient(
            bootstrap_servers=",".join(b.bootstrap_servers for b in self.brokers if b.running),
            client_id="sendrail-sandbox")
        await admin.start()
        try:
            described = await admin.describe_topics([topic])
        finally:
            await admin.close()
        for entry in described[0]["partitions"]:
            if entry["partition"] == partition:
                return int(entry["leader"]), sorted(int(n) for n in entry["isr"])
        raise LookupError(f"{topic} has no partition {partition}")
