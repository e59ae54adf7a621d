"""The suppression list as a service sees it: followed from its compacted topic."""

from __future__ import annotations

import structlog
from pydantic import ValidationError

from sendrail.bus.codec import decode
from sendrail.bus.table import TopicFollower
from sendrail.events import AddressSuppressed
from sendrail.settings import KafkaSettings
from sendrail.topics import SUPPRESSION

log = structlog.get_logger(__name__)


class SuppressionList:
    def __init__(self, settings: KafkaSettings, *, client_id: str) -> None:
        self._entries: dict[tuple[str, str], AddressSuppressed] = {}
        self._follower = TopicFollower(settings, SUPPRESSION.name, self._apply,
                                       client_id=f"{client_id}-suppression")

    async def start(self) -> None:
        await self._follower.start()

    async def stop(self) -> None:
        await self._follower.stop()

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        tenant_id, _, address = key.decode().partition("/")
        if value is None:
            self._entries.pop((tenant_id, address), None)  # lifted
            return
        try:
            entry = decode(AddressSuppressed, value)
        except ValidationError:
            log.error("invalid suppression record ignored", key=key.decode(errors="replace"))
            return
        self._entries[(entry.tenant_id, entry.address)] = entry

    def suppressed(self, tenant_id: str, addresses: list[str]) -> list[AddressSuppressed]:
        """The entries among `addresses` that the tenant suppressed (never another tenant's)."""
        return [e for a in addresses if (e := self._entries.get((tenant_id, a))) is not None]

    def of_tenant(self, tenant_id: str) -> list[AddressSuppressed]:
        return sorted((e for (t, _), e in self._entries.items() if t == tenant_id),
                      key=lambda e: e.address)
