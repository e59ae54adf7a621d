"""The registry view's index of each user's connections answers as a full scan would."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from sendrail.events import (
    ChannelKind,
    ConnectionConfigured,
    ConnectionHealthChanged,
    RegistryRecord,
    SmtpServer,
    registry_key,
)
from sendrail.registry.view import RegistryView

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
TENANTS, USERS, CONNECTIONS = ("acme", "globex"), ("ann", "bob", "cy"), ("c1", "c2", "c3", "c4")


def connection(tenant_id: str, connection_id: str, owner: str | None) -> ConnectionConfigured:
    return ConnectionConfigured(
        tenant_id=tenant_id, connection_id=connection_id,
        kind=ChannelKind.CUSTOM_SMTP if owner else ChannelKind.TEAM_SMTP, owner_user_id=owner,
        smtp=SmtpServer(host="smtp.example.org", port=587), username="u", password="sealed",
        connected_at=T0, updated_at=T0)


changes = st.lists(st.tuples(
    st.sampled_from(["connect", "delete", "health"]), st.sampled_from(TENANTS),
    st.sampled_from(CONNECTIONS), st.sampled_from([*USERS, None])), max_size=30)


def scan(view: RegistryView, tenant_id: str, user_id: str) -> list[ConnectionConfigured]:
    return [c for (t, _), c in view.connections.items() if t == tenant_id and c.owner_user_id == user_id]


@settings(max_examples=300, deadline=None)
@given(steps=changes, asked_between=st.lists(st.booleans(), min_size=30, max_size=30))
def test_user_connections_match_a_full_scan(
        steps: list[tuple[str, str, str, str | None]], asked_between: list[bool]) -> None:
    indexed = RegistryView()
    for (action, tenant_id, connection_id, owner), ask in zip(steps, asked_between, strict=False):
        record: RegistryRecord = connection(tenant_id, connection_id, owner)
        if action == "health":
            record = ConnectionHealthChanged(tenant_id=tenant_id, connection_id=connection_id,
                                             healthy=False, changed_at=T0)
        key, value = registry_key(record), None if action == "delete" else record
        indexed.apply(key, value)
        if ask:  # the index is built midway too, then has to follow later changes
            indexed.user_connections("acme", "ann")
    for tenant_id in TENANTS:
        for user_id in USERS:
            assert indexed.user_connections(tenant_id, user_id) == scan(indexed, tenant_id, user_id)


def test_the_index_returns_a_copy() -> None:
    view = RegistryView()
    record = connection("acme", "c1", "ann")
    view.apply(registry_key(record), record)
    view.user_connections("acme", "ann").clear()
    assert view.user_connections("acme", "ann") == [record]
