"""The SMTP transports of a sender: one per connection, logged in with its credentials.

New credentials (a reconnect changes `connected_at`) mean a new transport and new sessions.
"""

from __future__ import annotations

import ssl
from datetime import datetime

from sendrail.delivery.credentials import StoreRotatedToken, smtp_auth_for
from sendrail.delivery.outcome import Outcome
from sendrail.delivery.policy import ChannelPolicy
from sendrail.delivery.transport import Transport
from sendrail.errors import ConfigurationError
from sendrail.events import ConnectionConfigured
from sendrail.mail.oauth import TokenEndpoint
from sendrail.mail.smtp import SmtpTransport
from sendrail.secrets import SecretBox
from sendrail.settings import SenderSettings

ConnectionVersion = tuple[str, str, datetime]
"""(tenant_id, connection_id, connected_at)."""


class SmtpTransports:
    def __init__(self, policy: ChannelPolicy, secrets: SecretBox, tokens: TokenEndpoint,
                 tls_context: ssl.SSLContext, settings: SenderSettings,
                 store_rotated: StoreRotatedToken) -> None:
        self._policy = policy
        self._secrets = secrets
        self._tokens = tokens
        self._tls_context = tls_context
        self._settings = settings
        self._store_rotated = store_rotated
        self._transports: dict[ConnectionVersion, SmtpTransport] = {}

    def sessions_per_connection(self) -> int:
        return min(self._policy.max_sessions_per_connection, self._settings.connections_per_server)

    def for_connection(self, connection: ConnectionConfigured) -> Transport | Outcome:
        version = (connection.tenant_id, connection.connection_id, connection.connected_at)
        transport = self._transports.get(version)
        if transport is None:
            try:
                auth = smtp_auth_for(connection, self._tokens, self._secrets, self._store_rotated)
            except ConfigurationError as error:  # stored credentials that cannot be used
                return Outcome.broken(str(error))
            transport = SmtpTransport(
                connection.smtp, auth, self._tls_context,
                provider_rules=self._policy.provider_rules,
                max_sessions=self.sessions_per_connection(),
                timeout_s=self._settings.smtp_timeout_s,
                session_idle_s=self._settings.session_idle_s,
            )
            self._transports[version] = transport
        return transport

    async def close_idle(self) -> None:
        """Idle sessions closed, and the transports left without any forgotten (a new one is
        made at the connection's next turn)."""
        for version, transport in list(self._transports.items()):
            await transport.close_idle()
            if not transport.idle_sessions and not transport.busy:
                del self._transports[version]

    async def close(self) -> None:
        transports, self._transports = self._transports, {}
        for transport in transports.values():
            await transport.close()
