"""How a sender logs in to a connection's server: XOAUTH2 for Gmail and Exchange Online,
SMTP AUTH with the stored password otherwise."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import datetime

from aiokafka import AIOKafkaProducer

from sendrail.clock import system_clock
from sendrail.errors import ConfigurationError
from sendrail.events import ChannelKind, ConnectionConfigured
from sendrail.mail.oauth import AccessTokenSource, Provider, TokenEndpoint
from sendrail.mail.smtp import PasswordAuth, SmtpAuth, XOAuth2Auth
from sendrail.registry.store import RegistryStore, publish_record
from sendrail.secrets import SecretBox

PROVIDERS: dict[ChannelKind, Provider] = {
    ChannelKind.GMAIL: "google",
    ChannelKind.EXCHANGE_ONLINE: "microsoft",
}

StoreRotatedToken = Callable[[ConnectionConfigured, str], Awaitable[None]]


def with_rotated_token(connection: ConnectionConfigured, sealed_refresh_token: str,
                       now: datetime) -> ConnectionConfigured:
    """The connection as stored after the provider handed out a new refresh token; its
    `connected_at` stays, so senders keep their sessions."""
    assert connection.oauth is not None
    oauth = connection.oauth.model_copy(update={"refresh_token": sealed_refresh_token})
    return connection.model_copy(update={"oauth": oauth, "updated_at": now})


def rotated_token_store(registry: RegistryStore, producer: AIOKafkaProducer,
                        secrets: SecretBox) -> StoreRotatedToken:
    """Microsoft hands out a new refresh token on each use: store it, sealed, on the
    connection's latest record (shared by every process that refreshes tokens)."""

    async def store(connection: ConnectionConfigured, refresh_token: str) -> None:
        current = registry.view.connection(connection.tenant_id, connection.connection_id)
        await publish_record(producer, with_rotated_token(
            current or connection, secrets.seal(refresh_token), system_clock()))

    return store


def access_tokens_for(connection: ConnectionConfigured, endpoint: TokenEndpoint,
                      secrets: SecretBox, store_rotated: StoreRotatedToken) -> AccessTokenSource:
    if connection.oauth is None or connection.kind not in PROVIDERS:
        raise ConfigurationError(f"connection {connection.connection_id} has no OAuth grant")

    async def on_rotated(new_refresh_token: str) -> None:
        await store_rotated(connection, new_refresh_token)

    return AccessTokenSource(
        endpoint, PROVIDERS[connection.kind], secrets.open(connection.oauth.refresh_token),
        microsoft_tenant=connection.oauth.microsoft_tenant, clock_s=time.time,
        on_rotated=on_rotated,
    )


def smtp_auth_for(connection: ConnectionConfigured, endpoint: TokenEndpoint, secrets: SecretBox,
                  store_rotated: StoreRotatedToken) -> SmtpAuth:
    if connection.kind in PROVIDERS:
        assert connection.address is not None  # the model requires it for OAuth channels
        return XOAuth2Auth(connection.address,
                           access_tokens_for(connection, endpoint, secrets, store_rotated))
    if connection.username is None or connection.password is None:
        raise ConfigurationError(f"connection {connection.connection_id} has no SMTP credentials")
    return PasswordAuth(connection.username, secrets.open(connection.password))
