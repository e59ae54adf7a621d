"""Connecting test users to the sandbox's servers, through the registry topic as `sendrail connect` does."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

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
from sendrail.sandbox.mail_sandbox import MailSandbox
from sendrail.secrets import SecretBox


@dataclass(frozen=True)
class Account:
    tenant_id: str
    user_id: str
    address: str
    connection_id: str
    kind: ChannelKind


class Accounts:
    def __init__(self, producer: AIOKafkaProducer, mail: MailSandbox, box: SecretBox) -> None:
        self._producer = producer
        self._mail = mail
        self._box = box

    async def publish(self, *records: RegistryRecord) -> None:
        for record in records:
            await publish_record(self._producer, record)

    async def connect(self, tenant_id: str, user_id: str | None, kind: ChannelKind, *,
                      connection_id: str | None = None, address: str | None = None) -> Account:
        """A connection to the sandbox server of `kind`, with fresh credentials."""
        now = datetime.now(UTC)
        connection_id = connection_id or f"{user_id or 'team'}-{kind.value}-{secrets.token_hex(3)}"
        address = address or f"{user_id or 'team'}@{tenant_id}.example.com"
        endpoint = self._mail.info.smtp[kind.value]
        fields: dict[str, object] = {
            "tenant_id": tenant_id, "connection_id": connection_id, "kind": kind,
            "owner_user_id": user_id, "connected_at": now, "updated_at": now,
            "smtp": SmtpServer(host=endpoint.host, port=endpoint.port),
        }
        if kind in PROVIDERS:
            token = self._mail.add_oauth_user(PROVIDERS[kind], address)
            fields.update(address=address, oauth=OAuthGrant(refresh_token=self._box.seal(token)),
                          imap=ImapServer(host=self._mail.info.imap_host, port=self._mail.info.imap_port))
        else:
            password = secrets.token_urlsafe(12)
            self._mail.add_password_user(kind.value, address, password)
            fields.update(username=address, password=self._box.seal(password))
        await self.publish(
            ConnectionConfigured.model_validate(fields),
            ConnectionHealthChanged(tenant_id=tenant_id, connection_id=connection_id, healthy=True,
                                    changed_at=now),
        )
        return Account(tenant_id, user_id or "", address, connection_id, kind)

    async def identity(self, tenant_id: str, user_id: str, address: str, *, verified: bool = True,
                       default: bool = True) -> None:
        await self.publish(IdentityRegistered(tenant_id=tenant_id, user_id=user_id, address=address,
                                              verified=verified, is_default=default,
                                              updated_at=datetime.now(UTC)))

    async def assign(self, tenant_id: str, user_id: str, identity: str, connection_id: str) -> None:
        await self.publish(ChannelAssigned(tenant_id=tenant_id, user_id=user_id, identity=identity,
                                           connection_id=connection_id, updated_at=datetime.now(UTC)))

    async def tenant(self, tenant_id: str, *, legacy: bool = False, team_connection_id: str | None = None) -> None:
        await self.publish(TenantConfigured(tenant_id=tenant_id, legacy=legacy,
                                            team_connection_id=team_connection_id,
                                            updated_at=datetime.now(UTC)))

    async def user(self, tenant_id: str, user_id: str, kind: ChannelKind) -> Account:
        """A user with one connection of `kind` and its verified default identity."""
        account = await self.connect(tenant_id, user_id, kind)
        await self.identity(tenant_id, user_id, account.address)
        return account
