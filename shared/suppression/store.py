"""The suppression list as a service sees it: followed from its compacted topic.

Addresses are compared by their comparison key (`sendrail.mail.addresses`) on both
sides: an entry for `bob@x.com` suppresses `Bob@X.com`, whoever wrote either. Records
are written under the key's spelling (`suppression_key`); records written under another
spelling of the same mailbox (before keys were normalised) still count, each until its
own key is deleted.
"""

from __future__ import annotations

from sendrail.bus.codec import decode
from sendrail.bus.table import TopicFollower
from sendrail.events import AddressSuppressed
from sendrail.mail.addresses import comparison_key
from sendrail.settings import KafkaSettings
from sendrail.topics import SUPPRESSION


class SuppressionList:
    """The entries, kept up to date from the topic."""

    def __init__(self, settings: KafkaSettings, *, client_id: str) -> None:
        self.entries = SuppressionEntries()
        self._follower = TopicFollower(settings, SUPPRESSION.name, self.entries.apply,
                                       client_id=f"{client_id}-suppression")

    async def start(self) -> None:
        await self._follower.start()

    async def stop(self) -> None:
        await self._follower.stop()

    def suppressed(self, tenant_id: str, addresses: list[str]) -> list[AddressSuppressed]:
        return self.entries.suppressed(tenant_id, addresses)

    def record_keys(self, tenant_id: str, address: str) -> list[bytes]:
        return self.entries.record_keys(tenant_id, address)

    def of_tenant(self, tenant_id: str) -> list[AddressSuppressed]:
        return self.entries.of_tenant(tenant_id)


class SuppressionEntries:
    """The table itself, in memory: what the topic's records add up to."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], dict[bytes, AddressSuppressed]] = {}
        """(tenant, comparison key) -> the live records for that mailbox, by record key."""

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """One record of the topic, in order; a None value deletes that key's record. Raises
        on a record it cannot use (its follower dead-letters it)."""
        if key is None:
            raise ValueError("a suppression record needs a tenant/address key")
        tenant_id, _, address = key.decode().partition("/")
        slot = (tenant_id, comparison_key(address))
        if value is None:  # lifted
            records = self._entries.get(slot, {})
            records.pop(key, None)
            if not records:
                self._entries.pop(slot, None)
            return
        entry = decode(AddressSuppressed, value)
        if entry.tenant_id != tenant_id:
            raise ValueError(f"a record of tenant {entry.tenant_id!r} under tenant {tenant_id!r}'s key")
        self._entries.setdefault(slot, {})[key] = entry

    def suppressed(self, tenant_id: str, addresses: list[str]) -> list[AddressSuppressed]:
        """The entries among `addresses` that the tenant suppressed (never another tenant's),
        one per address that is suppressed."""
        found = []
        for address in addresses:
            records = self._entries.get((tenant_id, comparison_key(address)))
            if records:
                found.append(_latest(records))
        return found

    def record_keys(self, tenant_id: str, address: str) -> list[bytes]:
        """Every topic key that keeps this address suppressed: deleting them all lifts it."""
        return sorted(self._entries.get((tenant_id, comparison_key(address)), {}))

    def of_tenant(self, tenant_id: str) -> list[AddressSuppressed]:
        return sorted((_latest(records) for (t, _), records in self._entries.items() if t == tenant_id),
                      key=lambda e: e.address)


def _latest(records: dict[bytes, AddressSuppressed]) -> AddressSuppressed:
    return max(records.values(), key=lambda e: e.suppressed_at)
