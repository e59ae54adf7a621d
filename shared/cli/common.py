"""What the commands share: settings, a producer for one-off publishing."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaProducer

from sendrail.bus.clients import ensure_topics, make_producer
from sendrail.settings import Settings

if TYPE_CHECKING:
    Subcommands = argparse._SubParsersAction[argparse.ArgumentParser]
else:
    Subcommands = argparse._SubParsersAction


@contextlib.asynccontextmanager
async def producer_for(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    await ensure_topics(settings.kafka)
    producer = make_producer(settings.kafka, client_id="sendrail-cli")
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()
