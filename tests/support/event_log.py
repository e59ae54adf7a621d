"""Everything published on the topics a test looks at, decoded, as it arrives."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TypeVar

from pydantic import BaseModel

from sendrail.bus.clients import make_consumer
from sendrail.bus.codec import decode, decode_analytics, decode_registry
from sendrail.events import (
    AddressSuppressed,
    AutoReplyDetected,
    BounceDetected,
    ComplaintDetected,
    DeliveryEvent,
    RegistryRecord,
    RequestDeadLettered,
    WatcherCheckpoint,
)
from sendrail.settings import KafkaSettings
from sendrail.topics import BOUNCES, DEAD_LETTER, DELIVERY, REGISTRY, SUPPRESSION, WATCHER_CHECKPOINTS
from support.waiting import wait_until

E = TypeVar("E", bound=BaseModel)


class EventLog:
    def __init__(self, kafka: KafkaSettings) -> None:
        self._consumer = make_consumer(
            kafka, DELIVERY.name, BOUNCES.name, DEAD_LETTER.name, REGISTRY.name,
            WATCHER_CHECKPOINTS.name, SUPPRESSION.name, group_id=None, client_id="test-event-log",
        )
        self.delivery: list[DeliveryEvent] = []
        self.bounces: list[BounceDetected] = []
        self.findings: list[AutoReplyDetected | ComplaintDetected] = []
        self.suppressions: list[tuple[bytes, AddressSuppressed | None]] = []
        """(key, entry); None where the suppression was lifted."""
        self.dead_letters: list[RequestDeadLettered] = []
        self.registry: list[RegistryRecord] = []
        self.checkpoints: list[WatcherCheckpoint] = []
        self.unreadable: list[tuple[str, int]] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        self._task = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    async def _follow(self) -> None:
        async for record in self._consumer:
            try:
                self._take(record.topic, record.key, record.value or b"")
            except ValueError:  # the hostile records some tests publish: the services' concern
                self.unreadable.append((record.topic, record.offset))

    def _take(self, topic: str, key: bytes | None, value: bytes) -> None:
        if topic == DELIVERY.name:
            self.delivery.append(decode(DeliveryEvent, value))
        elif topic == BOUNCES.name:
            finding = decode_analytics(value)
            if isinstance(finding, BounceDetected):
                self.bounces.append(finding)
            else:
                self.findings.append(finding)
        elif topic == SUPPRESSION.name:
            self.suppressions.append((key or b"", decode(AddressSuppressed, value)
                                      if value else None))
        elif topic == DEAD_LETTER.name:
            self.dead_letters.append(decode(RequestDeadLettered, value))
        elif topic == REGISTRY.name and value:
            self.registry.append(decode_registry(value))
        elif topic == WATCHER_CHECKPOINTS.name:
            self.checkpoints.append(decode(WatcherCheckpoint, value))

    async def wait_for(self, events: list[E], match: Callable[[E], bool], *, what: str,
                       timeout_s: float = 20.0) -> E:
        await wait_until(lambda: any(match(e) for e in events), timeout_s=timeout_s, what=what)
        return next(e for e in events if match(e))
