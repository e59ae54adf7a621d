"""Which connection a send request goes through: PRODUCT.md section 1 as a pure function."""

from __future__ import annotations

from dataclasses import dataclass

from sendrail.events import ChannelKind, ConnectionConfigured, EmailRequested, Source
from sendrail.registry.view import RegistryView


@dataclass(frozen=True)
class Route:
    connection: ConnectionConfigured
    held_reason: str | None = None
    """Set when the connection is broken: the mail waits for the user to reconnect and is
    never sent through another channel behind the user's back."""


@dataclass(frozen=True)
class Refusal:
    reason: str
    """A sentence the user or their admin can act on."""


_ADDON_CHANNELS = {
    Source.GMAIL_ADDON: (ChannelKind.GMAIL,),
    Source.OUTLOOK_ADDIN: (ChannelKind.EXCHANGE_ONLINE, ChannelKind.EXCHANGE_ONPREM),
}


def choose_route(request: EmailRequested, registry: RegistryView) -> Route | Refusal:
    """Decide in this order: verified identity, add-on source, explicit assignment,
    the user's only connection, the team SMTP for the default identity."""
    tenant_id, user_id = request.tenant_id, request.user_id
    identity = registry.identity(tenant_id, request.identity)
    if identity is None or identity.user_id != user_id:
        return Refusal(f"{request.identity} is not an identity of user {user_id}: add it with "
                       "`sendrail identities add` and verify it")
    if not identity.verified:
        return Refusal(f"identity {request.identity} is not verified yet: nothing is sent "
                       "from an address before its owner has verified it")

    connection: ConnectionConfigured | None
    if request.source in _ADDON_CHANNELS:
        kinds = _ADDON_CHANNELS[request.source]
        own = registry.user_connections(tenant_id, user_id)
        connection = next((c for kind in kinds for c in own if c.kind == kind), None)
        if connection is None:
            names = " or ".join(kind.value for kind in kinds)
            return Refusal(f"mail from the {request.source.value} goes through the user's own "
                           f"{names} connection, and user {user_id} has none: connect it")
    else:
        found = _assigned_or_default(request, registry, identity.is_default)
        if isinstance(found, Refusal):
            return found
        connection = found

    refusal = _check_connection_use(request, registry, connection)
    if refusal is not None:
        return refusal
    return Route(connection, registry.broken_reason(tenant_id, connection.connection_id))


def _assigned_or_default(
    request: EmailRequested, registry: RegistryView, is_default_identity: bool
) -> ConnectionConfigured | Refusal:
    tenant_id, user_id = request.tenant_id, request.user_id
    assignment = registry.assignment(tenant_id, request.identity)
    if assignment is not None:
        connection = registry.connection(tenant_id, assignment.connection_id)
        if connection is None:
            return Refusal(f"identity {request.identity} is assigned to connection "
                           f"{assignment.connection_id}, which no longer exists: assign another")
        return connection
    own = registry.user_connections(tenant_id, user_id)
    if len(own) == 1:
        return own[0]
    tenant = registry.tenant(tenant_id)
    if is_default_identity and tenant is not None and tenant.team_connection_id is not None:
        team = registry.connection(tenant_id, tenant.team_connection_id)
        if team is not None:
            return team
    if not own:
        return Refusal(f"user {user_id} has no delivery channel for {request.identity}: "
                       "connect Gmail, Exchange or an SMTP server, or ask an admin for a team SMTP")
    return Refusal(f"user {user_id} has {len(own)} connections and {request.identity} is "
                   "assigned to none: choose one with `sendrail assign`")


def _check_connection_use(
    request: EmailRequested, registry: RegistryView, connection: ConnectionConfigured
) -> Refusal | None:
    if connection.tenant_id != request.tenant_id:  # lookups are per tenant; this is a guard
        return Refusal("the connection belongs to another tenant")
    if connection.kind is ChannelKind.LEGACY:
        tenant = registry.tenant(request.tenant_id)
        if tenant is None or not tenant.legacy:
            return Refusal("legacy shared servers are kept for legacy tenants only: "
                           "connect Gmail, Exchange or an SMTP server instead")
    elif connection.kind is not ChannelKind.TEAM_SMTP and connection.owner_user_id != request.user_id:
        return Refusal(f"connection {connection.connection_id} belongs to another user; "
                       "a mailbox's credentials are never shared")
    return None
