"""Mail held for broken connections: released when the user reconnects, failed when it expires.

Held mail lives in Kafka, not in memory: a message whose connection is still broken
is appended to the held topic again after a recheck wait, so the topic itself is the
queue and a restart loses nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from enum import Enum

import structlog
from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from sendrail.bus.codec import decode
from sendrail.bus.dead_letter import stage_dead_letter, unusable_for
from sendrail.bus.publisher import Publisher
from sendrail.events import DeliveryEvent, DeliveryStatus, EmailRouted
from sendrail.registry.store import RegistryStore
from sendrail.topics import DELIVERY, HELD, OUTBOUND_BY_CHANNEL, connection_key

log = structlog.get_logger(__name__)


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


class HeldMailReleaser:
    def __init__(self, registry: RegistryStore, publisher: Publisher,
                 clock: Callable[[], datetime], *, expiry_s: float, recheck_s: float,
                 consumer: str = "sendrail-router-held") -> None:
        self._registry = registry
        self._consumer = consumer
        self._publisher = publisher
        self._clock = clock
        self._expiry = timedelta(seconds=expiry_s)
        self._recheck_s = recheck_s

    async def handle_batch(self, batch: list[ConsumerRecord[bytes, bytes]]) -> None:
        held: list[tuple[EmailRouted, ConsumerRecord[bytes, bytes]]] = []
        for record in batch:
            try:
                held.append((decode(EmailRouted, record.value or b""), record))
            except ValidationError as error:
                self._dead_letter(record, error)
        view = self._registry.view
        if any(not view.is_healthy(r.request.tenant_id, r.connection_id) for r, _ in held):
            # Give a reconnect a moment before deciding, so a broken connection's mail cycles
            # through the topic at most once per recheck interval instead of spinning.
            await asyncio.sleep(self._recheck_s)
            await self._registry.refresh()
        for routed, record in held:
            try:
                await self._release_or_keep(routed, record.key)
            except (TimeoutError, KafkaError):
                raise  # the bus, not the message: the router starts again from its offsets
            except Exception as error:  # confined to this message, kept with its reason
                log.exception("held message could not be handled", offset=record.offset)
                self._dead_letter(record, error)

    def _dead_letter(self, record: ConsumerRecord[bytes, bytes], error: Exception) -> None:
        stage_dead_letter(self._publisher, record, unusable_for(record.value, error),
                          consumer=self._consumer, now=self._clock())

    async def _release_or_keep(self, routed: EmailRouted, key: bytes | None) -> None:
        tenant_id, connection_id = routed.request.tenant_id, routed.connection_id
        now = self._clock()
        send_key = str(routed.send_id).encode()
        fate = held_fate(healthy=self._registry.view.is_healthy(tenant_id, connection_id),
                         held_since=routed.routed_at, now=now, expiry=self._expiry)
        if fate is HeldFate.RELEASE:
            await self._publisher.publish(OUTBOUND_BY_CHANNEL[routed.channel], routed,
                                          key=connection_key(tenant_id, connection_id))
            await self._publisher.publish(
                DELIVERY, DeliveryEvent.for_routed(routed, DeliveryStatus.QUEUED, now,
                                                   reason="released: the connection is back"),
                key=send_key,
            )
        elif fate is HeldFate.EXPIRE:
            reason = self._registry.view.broken_reason(tenant_id, connection_id)
            await self._publisher.publish(
                DELIVERY, DeliveryEvent.for_routed(
                    routed, DeliveryStatus.FAILED, now,
                    reason=f"expired while connection {connection_id} stayed broken ({reason}); "
                           "nothing was sent",
                ),
                key=send_key,
            )
        else:
            await self._publisher.publish(HELD, routed, key=key)
