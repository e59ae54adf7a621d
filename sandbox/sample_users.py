"""The sample tenants and users of the local stack: one per channel kind.

`make run` connects them so that `sendrail send` works at once, and `make demo` sends
its campaign through them. Their credentials are issued by the sandbox's own
servers, so every channel runs its real authentication.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from aiokafka import AIOKafkaProducer

from sendrail.delivery.credentials import PROVIDERS
from sendrail.events import (
    ChannelAssigned,
    ChannelKind,
    ConnectionConfigured,
    ConnectionHealthChanged,
    IdentityRegistered,
    ImapServer,
    OAuthGrant,
    RegistryRecord,
    SmtpServer,
    TenantConfigured,
)
from sendrail.registry.store import publish_record
from sendrail.sandbox.admin_client import SandboxAdminClient
from sendrail.sandbox.mail_sandbox import SandboxInfo
from sendrail.secrets import SecretBox

TENANT = "acme"
LEGACY_TENANT = "oldco"


@dataclass(frozen=True)
class SampleUser:
    tenant_id: str
    user_id: str
    address: str
    kind: ChannelKind
    connection_id: str
    owns_connection: bool = True
    """False for users who send through their team's SMTP server."""


SAMPLE_USERS = (
    SampleUser(TENANT, "alice", "alice@acme.example.com", ChannelKind.GMAIL, "alice-gmail"),
    SampleUser(TENANT, "bob", "bob@acme.example.com", ChannelKind.EXCHANGE_ONLINE, "bob-m365"),
    SampleUser(TENANT, "carol", "carol@acme.example.com", ChannelKind.EXCHANGE_ONPREM, "carol-exchange"),
    SampleUser(TENANT, "dave", "dave@acme.example.com", ChannelKind.CUSTOM_SMTP, "dave-smtp"),
    SampleUser(TENANT, "erin", "erin@acme.example.com", ChannelKind.TEAM_SMTP, "acme-team-smtp",
               owns_connection=False),
    SampleUser(LEGACY_TENANT, "frank", "frank@oldco.example.com", ChannelKind.LEGACY, "legacy-pool",
               owns_connection=False),
)



async def connect_sample_users(producer: AIOKafkaProducer, admin: SandboxAdminClient,
                               info: SandboxInfo, box: SecretBox, now: datetime) -> None:
    """Register the sample users, their identities and connections (idempotent: records are
    keyed, so connecting again replaces them with fresh credentials)."""
    records: list[RegistryRecord] = []
    for user in SAMPLE_USERS:
        endpoint = info.smtp[user.kind.value]
        smtp = SmtpServer(host=endpoint.host, port=endpoint.port, tls="starttls")
        fields: dict[str, object] = {
            "tenant_id": user.tenant_id, "connection_id": user.connection_id, "kind": user.kind,
            "owner_user_id": user.user_id if user.owns_connection else None, "smtp": smtp,
            "connected_at": now, "updated_at": now,
        }
        if user.kind in PROVIDERS:
            refresh_token = await admin.add_oauth_user(PROVIDERS[user.kind], user.address)
            fields.update(address=user.address,
                          oauth=OAuthGrant(refresh_token=box.seal(refresh_token)),
                          imap=ImapServer(host=info.imap_host, port=info.imap_port))
        else:
            username = user.address if user.owns_connection else f"{user.connection_id}-relay"
            password = secrets.token_urlsafe(16)
            await admin.add_password_user(user.kind.value, username, password)
            fields.update(username=username, password=box.seal(password))
        records.append(ConnectionConfigured.model_validate(fields))
        records.append(ConnectionHealthChanged(tenant_id=user.tenant_id,
                                               connection_id=user.connection_id, healthy=True,
                                               reason="connected", changed_at=now))
        records.append(IdentityRegistered(tenant_id=user.tenant_id, user_id=user.user_id,
                                          address=user.address, verified=True, is_default=True,
                                          updated_at=now))
        if user.kind is ChannelKind.LEGACY:
            records.append(ChannelAssigned(tenant_id=user.tenant_id, user_id=user.user_id,
                                           identity=user.address,
                                           connection_id=user.connection_id, updated_at=now))
    records.append(TenantConfigured(tenant_id=TENANT, team_connection_id="acme-team-smtp",
                                    updated_at=now))
    records.append(TenantConfigured(tenant_id=LEGACY_TENANT, legacy=True, updated_at=now))
    for record in records:
        await publish_record(producer, record)
