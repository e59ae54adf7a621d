"""Creating sendrail's topics on a real broker."""

from __future__ import annotations

from dataclasses import replace

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from sendrail.bus.clients import ensure_topics
from sendrail.errors import ConfigurationError
from sendrail.settings import KafkaSettings
from sendrail.topics import ALL_TOPICS, REGISTRY


async def test_topics_exist_with_their_partitions_and_creating_again_is_harmless(
    kafka: KafkaSettings,
) -> None:
    await ensure_topics(kafka)  # the session fixture created them already

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await admin.start()
    try:
        described = {t["topic"]: t for t in await admin.describe_topics([t.name for t in ALL_TOPICS])}
        configs = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, REGISTRY.name)])
    finally:
        await admin.close()
    for topic in ALL_TOPICS:
        assert len(described[topic.name]["partitions"]) == topic.partitions, topic.name
    registry_config = {entry[0]: entry[1] for entry in configs[0].resources[0][4]}
    assert registry_config["cleanup.policy"] == "compact"


async def test_a_refusal_by_the_broker_is_an_error_not_silence(kafka: KafkaSettings) -> None:
    unreachable_replication = kafka.model_copy(update={"replication_factor": 3})
    renamed = [replace(ALL_TOPICS[0], name=f"{ALL_TOPICS[0].name}.r3")]

    with pytest.raises(ConfigurationError, match="replicat"):
        await ensure_topics(unreachable_replication, renamed)
