"""The registry's current state, rebuilt from its compacted topic; pure, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field

from sendrail.events import (
    OAUTH_CHANNELS,
    TEAM_WIDE,
    AnalyticsTokenIssued,
    ChannelAssigned,
    ConnectionConfigured,
    ConnectionHealthChanged,
    IdentityRegistered,
    RegistryRecord,
    TenantConfigured,
    ThrottleConfigured,
)

TenantKey = tuple[str, str]
"""(tenant_id, id): every lookup names the tenant, so no tenant can reach another's data."""


@dataclass
class RegistryView:
    connections: dict[TenantKey, ConnectionConfigured] = field(default_factory=dict)
    health: dict[TenantKey, ConnectionHealthChanged] = field(default_factory=dict)
    """Of the broken connections only: a healthy record says what no record says."""
    identities: dict[TenantKey, IdentityRegistered] = field(default_factory=dict)
    assignments: dict[TenantKey, ChannelAssigned] = field(default_factory=dict)
    tenants: dict[str, TenantConfigured] = field(default_factory=dict)
    throttles: dict[TenantKey, ThrottleConfigured] = field(default_factory=dict)
    """(tenant_id, connection_id or TEAM_WIDE)."""
    analytics_tokens: dict[TenantKey, AnalyticsTokenIssued] = field(default_factory=dict)
    """(tenant_id, token_id): hashes of the tokens that read a tenant's analytics."""
    kept: tuple[type[RegistryRecord], ...] | None = None
    """The kinds of record held (None: all): a sender holding 10,000 users' identities it
    never reads spent megabytes on them."""
    _by_owner: dict[tuple[str, str | None], list[ConnectionConfigured]] | None = field(
        default=None, init=False, repr=False)
    """Each user's connections: the router asks on nearly every request, and connections
    change rarely, so the index is rebuilt at the first question after a change."""

    def apply(self, key: str, record: RegistryRecord | None) -> None:
        """Apply one record; `None` (a tombstone) deletes what `key` names."""
        if record is None:
            self._delete(key)
            return
        if self.kept is not None and not isinstance(record, self.kept):
            return
        match record:
            case ConnectionConfigured():
                self.connections[(record.tenant_id, record.connection_id)] = record
                self._by_owner = None
            case ConnectionHealthChanged():
                if record.healthy:
                    self.health.pop((record.tenant_id, record.connection_id), None)
                else:
                    self.health[(record.tenant_id, record.connection_id)] = record
            case IdentityRegistered():
                self.identities[(record.tenant_id, record.address)] = record
            case ChannelAssigned():
                self.assignments[(record.tenant_id, record.identity)] = record
            case TenantConfigured():
                self.tenants[record.tenant_id] = record
            case ThrottleConfigured():
                self.throttles[(record.tenant_id, record.connection_id or TEAM_WIDE)] = record
            case AnalyticsTokenIssued():
                self.analytics_tokens[(record.tenant_id, record.token_id)] = record

    def _delete(self, key: str) -> None:
        kind, _, rest = key.partition("/")
        tenant_id, _, item = rest.partition("/")
        tables: dict[str, dict[TenantKey, object]] = {
            "connection": self.connections,  # type: ignore[dict-item]
            "connection_health": self.health,  # type: ignore[dict-item]
            "identity": self.identities,  # type: ignore[dict-item]
            "assignment": self.assignments,  # type: ignore[dict-item]
            "throttle": self.throttles,  # type: ignore[dict-item]
            "analytics_token": self.analytics_tokens,  # type: ignore[dict-item]
        }
        if kind == "connection":
            self._by_owner = None
        if kind == "tenant":
            self.tenants.pop(tenant_id, None)
        elif kind in tables:
            tables[kind].pop((tenant_id, item), None)

    def connection(self, tenant_id: str, connection_id: str) -> ConnectionConfigured | None:
        return self.connections.get((tenant_id, connection_id))

    def is_healthy(self, tenant_id: str, connection_id: str) -> bool:
        health = self.health.get((tenant_id, connection_id))
        return health is None or health.healthy

    def broken_reason(self, tenant_id: str, connection_id: str) -> str | None:
        health = self.health.get((tenant_id, connection_id))
        return None if health is None or health.healthy else (health.reason or "connection broken")

    def identity(self, tenant_id: str, address: str) -> IdentityRegistered | None:
        return self.identities.get((tenant_id, address))

    def assignment(self, tenant_id: str, address: str) -> ChannelAssigned | None:
        return self.assignments.get((tenant_id, address))

    def tenant(self, tenant_id: str) -> TenantConfigured | None:
        return self.tenants.get(tenant_id)

    def throttle_settings(self, tenant_id: str, connection_id: str
                          ) -> tuple[ThrottleConfigured | None, ThrottleConfigured | None]:
        """The team's throttle record and the connection's own, either possibly absent."""
        return (self.throttles.get((tenant_id, TEAM_WIDE)),
                self.throttles.get((tenant_id, connection_id)))

    def user_connections(self, tenant_id: str, user_id: str) -> list[ConnectionConfigured]:
        """In the order the connections were first configured (the rules take the first fit)."""
        if self._by_owner is None:
            index: dict[tuple[str, str | None], list[ConnectionConfigured]] = {}
            for (connection_tenant, _), connection in self.connections.items():
                index.setdefault((connection_tenant, connection.owner_user_id), []).append(connection)
            self._by_owner = index
        return list(self._by_owner.get((tenant_id, user_id), ()))

    def user_identities(self, tenant_id: str, user_id: str) -> list[IdentityRegistered]:
        return [i for (t, _), i in self.identities.items() if t == tenant_id and i.user_id == user_id]

    def watched_connections(self) -> list[ConnectionConfigured]:
        """Gmail and Exchange Online connections: the only inboxes the bounce watcher reads."""
        return [c for c in self.connections.values() if c.kind in OAUTH_CHANNELS]
