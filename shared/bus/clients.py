"""aiokafka clients built from settings, and the topics sendrail needs."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context

from sendrail.errors import ConfigurationError
from sendrail.settings import KafkaSettings
from sendrail.topics import ALL_TOPICS, Topic


def _common(settings: KafkaSettings) -> dict[str, object]:
    options: dict[str, object] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.security_protocol,
    }
    if settings.security_protocol in {"SSL", "SASL_SSL"}:
        context: ssl.SSLContext = create_ssl_context(
            cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None
        )
        options["ssl_context"] = context
    if settings.sasl_mechanism is not None:
        options["sasl_mechanism"] = settings.sasl_mechanism
        options["sasl_plain_username"] = settings.sasl_username
        if settings.sasl_password is not None:
            options["sasl_plain_password"] = settings.sasl_password.get_secret_value()
    return options


def make_producer(settings: KafkaSettings, *, client_id: str) -> AIOKafkaProducer:
    """Idempotent, acks=all: a published event survives a broker failure and is never doubled
    by the producer's own retries."""
    return AIOKafkaProducer(
        client_id=client_id,
        enable_idempotence=True,
        acks="all",
        linger_ms=2,
        # One request per broker is in flight at a time (idempotence): larger batches carry a
        # whole fetched batch's events in a few requests instead of many small ones.
        max_batch_size=256 * 1024,
        **_common(settings),
    )


def make_consumer(
    settings: KafkaSettings,
    *topics: str,
    group_id: str | None,
    client_id: str,
    from_beginning: bool = True,
    max_records: int = 500,
    fetch_max_wait_ms: int = 500,
    max_partition_fetch_bytes: int = 1024 * 1024,
) -> AIOKafkaConsumer:
    """Offsets are committed by the caller after the work is done (at-least-once).

    `fetch_max_wait_ms` is how long the broker holds a fetch that found nothing new: a
    consumer that jumps between partitions wants it short, as its next fetch waits for it.
    `max_partition_fetch_bytes` bounds what one fetch brings of a partition (a record batch
    larger than it still comes whole).
    """
    return AIOKafkaConsumer(
        *topics,
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
        isolation_level="read_committed",
        max_poll_records=max_records,
        fetch_max_wait_ms=fetch_max_wait_ms,
        max_partition_fetch_bytes=max_partition_fetch_bytes,
        **_common(settings),
    )


def make_admin(settings: KafkaSettings, *, client_id: str) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(client_id=client_id, **_common(settings))


async def ensure_topics(settings: KafkaSettings, topics: Iterable[Topic] = ALL_TOPICS) -> None:
    """Create the topics that do not exist yet; existing ones are left as they are."""
    admin = AIOKafkaAdminClient(client_id="sendrail-admin", **_common(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                topic.name,
                num_partitions=topic.partitions,
                replication_factor=settings.replication_factor,
                topic_configs={**({"cleanup.policy": "compact"} if topic.compacted else {}),
                               **topic.configs},
            )
            for topic in topics
            if topic.name not in existing
        ]
        if missing:
            response = await admin.create_topics(missing)
            # The broker answers per topic, and aiokafka returns the codes instead of raising.
            failures = [
                (error[0], error[1], error[2] if len(error) > 2 else None)
                for error in response.topic_errors
                if error[1] not in (0, TopicAlreadyExistsError.errno)  # 36: created meanwhile
            ]
            if failures:
                details = "; ".join(f"{name}: error {code} {message or ''}".strip()
                                    for name, code, message in failures)
                raise ConfigurationError(f"Kafka refused to create sendrail's topics: {details}")
    finally:
        await admin.close()


async def wait_for_broker(settings: KafkaSettings, *, timeout_s: float) -> None:
    """Return once the cluster answers metadata requests; raise TimeoutError otherwise."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        admin = AIOKafkaAdminClient(client_id="sendrail-probe", **_common(settings))
        try:
            await admin.start()
            await admin.list_topics()
            return
        except KafkaConnectionError:
            if loop.time() >= deadline:
                raise TimeoutError(f"no Kafka broker at {settings.bootstrap_servers}") from None
        finally:
            await admin.close()
        await asyncio.sleep(0.2)
