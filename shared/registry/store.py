"""The registry as a service sees it: its view, kept current from Kafka, and a writer."""

from __future__ import annotations

from collections.abc import Callable

from aiokafka import AIOKafkaProducer

from sendrail.bus.codec import decode_registry, encode
from sendrail.bus.table import TopicFollower
from sendrail.events import RegistryRecord, registry_key
from sendrail.registry.view import RegistryView
from sendrail.settings import KafkaSettings
from sendrail.topics import REGISTRY


class RegistryStore:
    """Follows the registry topic into a `RegistryView`."""

    def __init__(self, settings: KafkaSettings, *, client_id: str,
                 kept: tuple[type[RegistryRecord], ...] | None = None) -> None:
        """`kept`: the kinds of record this service looks up (None: all); the others are
        still checked and passed to listeners, but the view does not hold them."""
        self.view = RegistryView(kept=kept)
        self._listeners: list[Callable[[RegistryRecord], None]] = []
        self._follower = TopicFollower(
            settings, REGISTRY.name, self._apply, client_id=f"{client_id}-registry"
        )

    async def start(self) -> None:
        await self._follower.start()

    async def stop(self) -> None:
        await self._follower.stop()

    async def refresh(self) -> None:
        """Catch up with everything written so far, e.g. before refusing a request for a
        registry entry that may have been written a moment ago."""
        await self._follower.caught_up()

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        """Raises on a record it cannot use: the follower dead-letters it."""
        if key is None:
            raise ValueError("a registry record needs a key (see registry_key)")
        name = key.decode()
        if value is None:
            self.view.apply(name, None)
            return
        record = decode_registry(value)
        if registry_key(record) != name:
            raise ValueError(f"key {name!r} does not match the record, whose key is "
                             f"{registry_key(record)!r}")
        self.view.apply(name, record)
        for listener in self._listeners:
            listener(record)

    def on_change(self, listener: Callable[[RegistryRecord], None]) -> None:
        """Call `listener` with every record applied from now on (e.g. to act on new settings
        at once rather than at the next scheduled check)."""
        self._listeners.append(listener)


async def publish_record(producer: AIOKafkaProducer, record: RegistryRecord) -> None:
    """Write one registry record and wait until the broker has it."""
    await producer.send_and_wait(REGISTRY.name, encode(record), key=registry_key(record).encode())
