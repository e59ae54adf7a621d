"""The registry view: compacted records in, per-tenant lookups out; tombstones delete."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sendrail.events import (
    ChannelAssigned,
    ChannelKind,
    ConnectionConfigured,
    ConnectionHealthChanged,
    IdentityRegistered,
    OAuthGrant,
    RegistryRecord,
    SmtpServer,
    TenantConfigured,
    registry_key,
)
from sendrail.registry.view import RegistryView

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def gmail(connection_id: str = "c1", owner: str = "ann", tenant_id: str = "acme") -> ConnectionConfigured:
    return ConnectionConfigured(
        tenant_id=tenant_id, connection_id=connection_id, kind=ChannelKind.GMAIL,
        owner_user_id=owner, address=f"{owner}@acme.example",
        smtp=SmtpServer(host="smtp.gmail.com", port=587),
        oauth=OAuthGrant(refresh_token="sealed"), connected_at=T0, updated_at=T0,
    )


def smtp(connection_id: str, kind: ChannelKind, owner: str | None,
         tenant_id: str = "acme") -> ConnectionConfigured:
    return ConnectionConfigured(
        tenant_id=tenant_id, connection_id=connection_id, kind=kind, owner_user_id=owner,
        smtp=SmtpServer(host="smtp.relay.example", port=465, tls="implicit"),
        username="u", password="sealed", connected_at=T0, updated_at=T0,
    )


def health(connection_id: str = "c1", healthy: bool = False, reason: str | None = "revoked",
           tenant_id: str = "acme") -> ConnectionHealthChanged:
    return ConnectionHealthChanged(tenant_id=tenant_id, connection_id=connection_id,
                                   healthy=healthy, reason=reason, changed_at=T0)


def ident(address: str = "ann@acme.example", user_id: str = "ann",
          tenant_id: str = "acme") -> IdentityRegistered:
    return IdentityRegistered(tenant_id=tenant_id, user_id=user_id, address=address,
                              verified=True, updated_at=T0)


def assignment(address: str = "ann@acme.example", connection_id: str = "c1",
               tenant_id: str = "acme") -> ChannelAssigned:
    return ChannelAssigned(tenant_id=tenant_id, user_id="ann", identity=address,
                           connection_id=connection_id, updated_at=T0)


def tenant(tenant_id: str = "acme", team: str | None = "team") -> TenantConfigured:
    return TenantConfigured(tenant_id=tenant_id, team_connection_id=team, updated_at=T0)


def view_of(*records: RegistryRecord) -> RegistryView:
    view = RegistryView()
    for record in records:
        view.apply(registry_key(record), record)
    return view


def lookup(view: RegistryView, record: RegistryRecord) -> object:
    """The view's lookup that answers for `record`, by its own tenant and id."""
    match record:
        case ConnectionConfigured():
            return view.connection(record.tenant_id, record.connection_id)
        case ConnectionHealthChanged():
            return view.health.get((record.tenant_id, record.connection_id))
        case IdentityRegistered():
            return view.identity(record.tenant_id, record.address)
        case ChannelAssigned():
            return view.assignment(record.tenant_id, record.identity)
        case TenantConfigured():
            return view.tenant(record.tenant_id)


RECORDS: list[RegistryRecord] = [gmail(), health(), ident(), assignment(), tenant()]
IDS = [type(r).__name__ for r in RECORDS]


@pytest.mark.parametrize("record", RECORDS, ids=IDS)
def test_an_applied_record_is_found_by_its_tenant_and_id(record: RegistryRecord) -> None:
    view = view_of(record)
    assert lookup(view, record) == record
    other = record.model_copy(update={"tenant_id": "globex"})
    assert lookup(view, other) is None


@pytest.mark.parametrize("record", RECORDS, ids=IDS)
def test_the_latest_record_per_key_is_the_state(record: RegistryRecord) -> None:
    newer = record.model_copy(update={"updated_at": T0 + timedelta(hours=1)}
                              if hasattr(record, "updated_at") else {"reason": "expired"})
    assert registry_key(newer) == registry_key(record)
    view = view_of(record, newer)
    assert lookup(view, record) == newer


@pytest.mark.parametrize("record", RECORDS, ids=IDS)
def test_a_tombstone_deletes_only_what_its_key_names(record: RegistryRecord) -> None:
    same_ids_elsewhere = record.model_copy(update={"tenant_id": "globex"})
    others = [r for r in RECORDS if r is not record]
    view = view_of(*RECORDS, same_ids_elsewhere)
    view.apply(registry_key(record), None)
    assert lookup(view, record) is None
    assert lookup(view, same_ids_elsewhere) == same_ids_elsewhere
    for other in others:
        assert lookup(view, other) == other


def test_a_tombstone_for_an_address_with_a_slash_deletes_it() -> None:
    record = ident("sales/emea@acme.example")
    view = view_of(record)
    view.apply(registry_key(record), None)
    assert view.identity("acme", "sales/emea@acme.example") is None


@pytest.mark.parametrize("key", ["", "unknown/acme/c1", "connection", "connection/acme",
                                 "connection/acme/other", "tenant/globex"])
def test_a_tombstone_naming_nothing_changes_nothing(key: str) -> None:
    view = view_of(*RECORDS)
    view.apply(key, None)
    for record in RECORDS:
        assert lookup(view, record) == record


def test_keys_of_different_record_kinds_never_collide() -> None:
    keys = [registry_key(r) for r in RECORDS]
    assert len(set(keys)) == len(keys)
    assert registry_key(gmail()) == "connection/acme/c1"
    assert registry_key(health()) == "connection_health/acme/c1"
    assert registry_key(ident()) == "identity/acme/ann@acme.example"
    assert registry_key(assignment()) == "assignment/acme/ann@acme.example"
    assert registry_key(tenant()) == "tenant/acme"


def test_identity_addresses_are_keyed_normalised() -> None:
    record = ident("Ann@ACME.Example")
    assert registry_key(record) == "identity/acme/Ann@acme.example"
    assert view_of(record).identity("acme", "Ann@acme.example") == record


@pytest.mark.parametrize(
    ("records", "healthy", "reason"),
    [
        ((), True, None),
        ((health(healthy=False, reason="token revoked"),), False, "token revoked"),
        ((health(healthy=False, reason=None),), False, "connection broken"),
        ((health(healthy=False), health(healthy=True, reason="connected")), True, None),
        ((health(healthy=False, tenant_id="globex"),), True, None),
        ((health(connection_id="c2", healthy=False),), True, None),
    ],
    ids=["no record", "broken", "broken without reason", "reconnected", "other tenant",
         "other connection"],
)
def test_health(records: tuple[ConnectionHealthChanged, ...], healthy: bool,
                reason: str | None) -> None:
    view = view_of(gmail(), *records)
    assert view.is_healthy("acme", "c1") is healthy
    assert view.broken_reason("acme", "c1") == reason


def test_a_health_tombstone_makes_the_connection_healthy_again() -> None:
    record = health()
    view = view_of(gmail(), record)
    view.apply(registry_key(record), None)
    assert view.is_healthy("acme", "c1")


def test_user_connections_are_the_users_own_in_the_tenant() -> None:
    ann_gmail = gmail("c1", "ann")
    ann_smtp = smtp("c2", ChannelKind.CUSTOM_SMTP, "ann")
    view = view_of(
        ann_gmail, ann_smtp, gmail("c3", "bob"), smtp("team", ChannelKind.TEAM_SMTP, None),
        smtp("legacy", ChannelKind.LEGACY, None), gmail("c1", "ann", tenant_id="globex"),
    )
    assert sorted(c.connection_id for c in view.user_connections("acme", "ann")) == ["c1", "c2"]
    assert all(c.tenant_id == "acme" for c in view.user_connections("acme", "ann"))
    assert [c.connection_id for c in view.user_connections("acme", "bob")] == ["c3"]
    assert view.user_connections("acme", "nobody") == []


def test_user_identities_are_the_users_own_in_the_tenant() -> None:
    view = view_of(ident("ann@acme.example"), ident("ann2@acme.example"),
                   ident("bob@acme.example", "bob"), ident("ann@acme.example", tenant_id="globex"))
    found = view.user_identities("acme", "ann")
    assert sorted(i.address for i in found) == ["ann2@acme.example", "ann@acme.example"]
    assert all(i.tenant_id == "acme" for i in found)


def test_watched_connections_are_the_oauth_mailboxes_only() -> None:
    exo = ConnectionConfigured(
        tenant_id="acme", connection_id="exo", kind=ChannelKind.EXCHANGE_ONLINE,
        owner_user_id="ann", address="ann@acme.example",
        smtp=SmtpServer(host="smtp.office365.com", port=587),
        oauth=OAuthGrant(refresh_token="sealed"), connected_at=T0, updated_at=T0,
    )
    view = view_of(gmail(), exo, smtp("onprem", ChannelKind.EXCHANGE_ONPREM, "ann"),
                   smtp("c2", ChannelKind.CUSTOM_SMTP, "ann"), smtp("team", ChannelKind.TEAM_SMTP, None),
                   smtp("legacy", ChannelKind.LEGACY, None))
    assert sorted(c.connection_id for c in view.watched_connections()) == ["c1", "exo"]


def test_a_view_holds_only_the_kinds_its_service_looks_up() -> None:
    view = RegistryView(kept=(ConnectionConfigured,))
    identity = IdentityRegistered(tenant_id="acme", user_id="ann", address="ann@acme.example",
                                  verified=True, updated_at=T0)
    for record in (gmail(), identity):
        view.apply(registry_key(record), record)

    assert view.connection("acme", "c1") == gmail()
    assert view.identity("acme", "ann@acme.example") is None


def test_a_healthy_record_clears_the_broken_one_and_is_not_kept() -> None:
    broken = health()
    view = view_of(broken)
    assert not broken.healthy and view.broken_reason("acme", "c1") == broken.reason

    view.apply(registry_key(broken), broken.model_copy(update={"healthy": True, "reason": None}))

    assert view.is_healthy("acme", "c1") and view.broken_reason("acme", "c1") is None
    assert view.health == {}
